"""Every user-facing option is checked when the arguments are parsed, before any data is loaded: a bad value stops the
run with a message that names the option and what is allowed."""

import subprocess
import sys

import pytest
from transformers import HfArgumentParser

from conftest import REPO

from livt_hf.arguments import (
    FinetuneDataArguments,
    FinetuneModelArguments,
    FinetuningArguments,
    MixingArguments,
    PretrainDataArguments,
    PretrainModelArguments,
    PretrainingArguments,
)
from livt_hf.runs import fit_epochs_to_min_steps

TRAINING = ["--output_dir", "unused", "--use_cpu", "1"]
CASES = [
    (FinetuneDataArguments, ["--imbalance_ratio", "0.5"], r"--imbalance_ratio must be ≥ 1 .*test sets only"),
    (FinetuneDataArguments, ["--max_per_class", "0"], r"--max_per_class .* must be ≥ 1, got 0"),
    (FinetuneDataArguments, ["--validation_split", "1.5"], r"--validation_split is a fraction in \(0, 1\)"),
    (FinetuneDataArguments, ["--max_test_samples", "0"], r"--max_test_samples must be ≥ 1"),
    (FinetuneDataArguments, ["--many_threshold", "10", "--few_threshold", "20"], r"0 < --few_threshold ≤ --many_threshold"),
    (FinetuneDataArguments, ["--train_sampler", "balanced"], r"Unknown --train_sampler 'balanced'; choose one of \('instance', 'class_balanced', 'sqrt', 'progressive'\)"),
    (FinetuneDataArguments, ["--long_tail_profile", "zipf"], r"Unknown --long_tail_profile 'zipf'; choose one of"),
    (PretrainDataArguments, ["--crop_min_scale", "0"], r"--crop_min_scale must be in \(0, 1\], got 0.0"),
    (FinetuneDataArguments, ["--random_erasing", "2"], r"--random_erasing is a probability in \[0, 1\]"),
    (FinetuneDataArguments, ["--random_translate", "-2"], r"--random_translate is a shift in pixels"),
    (FinetuneDataArguments, ["--auto_augment", "rand-x"], r"Unknown --auto_augment 'rand-x'"),
    (FinetuneModelArguments, ["--loss", "balbce"], r"Unknown --loss 'balbce'; choose one of \('ce', 'bal_ce', .*'bal_bce'"),
    (FinetuneModelArguments, ["--tau", "-1"], r"tau must be ≥ 0, got -1.0"),
    (FinetuneModelArguments, ["--drop_path_rate", "1.5"], r"drop_path_rate must be in \[0, 1\)"),
    (FinetuneModelArguments, ["--layer_decay", "0"], r"--layer_decay must be in \(0, 1\]"),
    (FinetuneModelArguments, ["--test_prior", "0.5", "0.6"], r"--test_prior: test_prior must hold 2 positive probabilities summing to 1"),
    (FinetuneModelArguments, ["--inference_test_prior", "1", "0"], r"--inference_test_prior: .*positive probabilities"),
    (FinetuneModelArguments, ["--focal_gamma", "3"], r"--focal_gamma = 3.0 has no effect on loss 'bal_bce'; it applies to \('focal',\)"),
    (FinetuneModelArguments, ["--loss", "ldam"], r"set cosine_head=True \(--cosine_head\) with loss 'ldam'"),
    (FinetuneModelArguments, ["--loss", "la", "--test_prior", "0.3", "0.7"], r"Loss 'la' assumes a balanced test set; for a known test prior use 'bal_ce'"),
    (FinetuneModelArguments, ["--loss", "ce", "--test_prior", "0.3", "0.7"], r"--test_prior has no effect on loss 'ce'; it applies to \('bal_ce', 'bal_bce', 'nt_bce_bal'\)"),
    (MixingArguments, ["--mixing", "cutmix"], r"Unknown --mixing 'cutmix'; choose one of"),
    (MixingArguments, ["--remix_kappa", "2"], r"remix_kappa .*no effect"),
    (PretrainModelArguments, ["--mask_ratio", "1"], r"--mask_ratio must be in \(0, 1\), got 1.0"),
    (PretrainModelArguments, ["--patch_size", "5"], r"--image_size 28 is not a multiple of the patch_size 5: change --image_size or --patch_size"),
    (PretrainModelArguments, ["--num_channels", "2"], r"--num_channels must be 1 \(grayscale\) or 3 \(RGB\), got 2"),
    (FinetuningArguments, [*TRAINING, "--per_device_train_batch_size", "0"], r"--per_device_train_batch_size must be ≥ 1"),
    (FinetuningArguments, [*TRAINING, "--learning_rate", "1e-3", "--base_learning_rate", "1e-3"], r"Both --learning_rate .* Pass one"),
    (PretrainingArguments, [*TRAINING, "--fsdp"], r"--fsdp shards the model across GPUs"),
    (FinetuningArguments, [*TRAINING, "--remove_unused_columns", "True"], r"--remove_unused_columns True would drop the `image`"),
    (FinetuneDataArguments, ["--augment_on_device", "--auto_augment", "autoaugment"], r"--augment_on_device cannot run --auto_augment .autoaugment."),
    (FinetuningArguments, [*TRAINING, "--min_train_steps", "-1"], r"--min_train_steps must be ≥ 0"),
    (PretrainingArguments, [*TRAINING, "--max_steps", "50", "--min_train_steps", "100"], r"--max_steps 50 fixes the number of steps; --min_train_steps 100 would not act"),
    (FinetuneModelArguments, ["--from_scratch", "--mae_checkpoint", "outputs/mae"], r"--from_scratch starts from a new, randomly initialised ViTMAE; --mae_checkpoint outputs/mae names one to start from"),
    (FinetuneModelArguments, ["--head_bias_init", "mean"], r"Unknown head_bias_init 'mean'; choose one of \('prior', 'zero'\)"),
]  # fmt: skip


@pytest.mark.parametrize("cls, flags, message", CASES, ids=[" ".join(c[1][-2:]) for c in CASES])
def test_a_bad_option_is_refused_with_a_message_that_names_it(cls, flags, message):
    with pytest.raises(ValueError, match=message):
        HfArgumentParser(cls).parse_args_into_dataclasses(flags)


def test_the_defaults_pass_their_own_checks_and_are_livts():
    data, model, mixing, mae = (HfArgumentParser(cls).parse_args_into_dataclasses([])[0] for cls in (
        FinetuneDataArguments, FinetuneModelArguments, MixingArguments, PretrainModelArguments))  # fmt: skip
    assert (data.imbalance_ratio, data.max_per_class, data.bad_images) == (100.0, 5000, "error")
    # the CPU demo's fine-tuning (chosen on validation, docs/DEMO_RECIPE.md); LiVT's 0.75 / 0.1 / 0.08 are in recipes/
    assert (model.loss, model.tau, model.layer_decay, model.drop_path_rate) == ("bal_bce", 1.0, 1.0, 0.0)
    assert (model.head_init_std, model.head_bias_init, data.crop_min_scale) == (0.02, "prior", 1.0)
    assert mixing.mixing == "mixup_cutmix" and (mae.mask_ratio, mae.norm_pix_loss) == (0.75, True)
    assert (model.mae_checkpoint, model.from_scratch) == ("outputs/mae-fmnist-lt", False)  # run_pretrain_mae.py's output


def test_the_script_refuses_before_touching_the_data(tmp_path):
    # the data folder does not exist: the option error must come first, and nothing is written
    result = subprocess.run([sys.executable, str(REPO / "run_finetune_balanced.py"), "--tau", "-0.5",
                             "--fashion_mnist_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert result.returncode != 0 and "tau must be ≥ 0, got -0.5" in result.stderr
    assert "missing" not in result.stderr and not (tmp_path / "o").exists()


# epochs beyond 50 are evaluated and saved every k = ⌈epochs / 50⌉ epochs, the epochs rounded up to a multiple of k
@pytest.mark.parametrize("flags, images, epochs, every_steps", [
    ([], 1116, 114, 54),  # ⌈1116 / 64⌉ = 18 steps an epoch; ⌈2000 / 18⌉ = 112 epochs; k = 3 → 114, every 54 steps
    (["--gradient_accumulation_steps", "2"], 1116, 225, 45),  # ⌊18 / 2⌋ = 9 steps an epoch → 223; k = 5 → 225
    (["--dataloader_drop_last", "1"], 1116, 120, 51),  # ⌊1116 / 64⌋ = 17 → 118; k = 3 → 120
    (["--eval_strategy", "steps", "--save_strategy", "steps"], 1116, 112, None),  # the user's own strategy is kept
    ([], 12406, 12, None),  # 194 steps × 12 epochs ≥ 2000: unchanged
    ([], 3200, 40, None),  # 50 steps an epoch → 40 epochs: at most 50, evaluated after each
    (["--min_train_steps", "0"], 1116, 12, None),  # no floor
])  # fmt: skip
def test_min_train_steps_raises_the_epochs_of_a_small_split(flags, images, epochs, every_steps):
    args = HfArgumentParser(FinetuningArguments).parse_args_into_dataclasses(
        [*TRAINING, "--num_train_epochs", "12", "--per_device_train_batch_size", "64", "--min_train_steps", "2000",
         *flags])[0]  # fmt: skip
    fit_epochs_to_min_steps(args, images)
    assert args.num_train_epochs == epochs
    if every_steps is None:  # per epoch as asked, or the user's own steps at Trainer's intervals (logging_steps 20)
        own = "--eval_strategy" in flags
        assert (args.eval_strategy, args.save_strategy) == (("steps", "steps") if own else ("epoch", "epoch"))
        assert (args.eval_steps, args.save_steps) == ((20, 500) if own else (None, 500))
    else:
        assert (args.eval_strategy, args.save_strategy) == ("steps", "steps")
        assert args.eval_steps == args.save_steps == every_steps


# the BFT defaults (18 epochs, batch 64, floor 3400 steps) on the splits of docs/DEMO_RECIPE.md
@pytest.mark.parametrize("flags, images, image_size, shift", [
    ([], 1116, 28, 3),  # 18 steps an epoch: ⌈3400 / 18⌉ = 189 epochs (192 at k = 4) ≥ 100: a ninth of 28 px
    ([], 1116, 224, 25),  # the same split at 224 px: round(224 / 9)
    ([], 490, 28, 3),  # the digits folder: 8 steps an epoch, 425 epochs
    ([], 12406, 28, 0),  # the demo: 194 × 18 = 3492 steps ≥ 3400, not raised
    ([], 10011, 28, 0),  # ρ = 500: 157 steps an epoch, raised to 22 epochs only
    (["--num_train_epochs", "200"], 1116, 28, 0),  # 200 epochs asked for, not raised: the user's schedule
    (["--random_translate", "0"], 1116, 28, 0),  # given: kept
    (["--random_translate", "2"], 12406, 28, 2),
    (["--min_train_steps", "0"], 1116, 28, 0),  # no floor
])  # fmt: skip
def test_the_default_translation_is_on_only_where_the_step_floor_gives_a_small_split_hundreds_of_epochs(
    flags, images, image_size, shift
):
    data_args, args = HfArgumentParser((FinetuneDataArguments, FinetuningArguments)).parse_args_into_dataclasses(
        [*TRAINING, *flags])  # fmt: skip
    raised = fit_epochs_to_min_steps(args, images)
    data_args.resolve_random_translate(image_size, args.num_train_epochs, raised)
    assert data_args.random_translate == shift
