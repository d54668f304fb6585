"""Hub model cards for both stages: the long-tailed split, the recipe, the results with a `model-index`, the plots.

Trainer's own card (written by `push_to_hub`) knows none of this; `LiVTTrainer.create_model_card` writes ours instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data.long_tail import LongTailSplit
from .metrics import SHOT_GROUPS, format_report

FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
GROUP_NAMES = {"accuracy": "all classes"} | {f"{g}_accuracy": f"{g}-shot classes" for g in SHOT_GROUPS}
# the recipe settings a reader needs, per stage (every argument is in run_config.json beside the model)
RECIPE_KEYS = {
    "pretraining": ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "mask_ratio", "norm_pix_loss", "num_train_epochs", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "learning_rate", "weight_decay", "crop_min_scale", "seed"),
    "fine-tuning": ("mae_checkpoint", "from_scratch", "loss", "tau", "test_prior", "num_train_epochs",
                    "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "layer_decay",
                    "drop_path_rate", "weight_decay", "label_smoothing_factor", "auto_augment", "random_erasing",
                    "random_translate", "mixing", "mixup_alpha", "cutmix_alpha", "unimix_alpha", "unimix_tau",
                    "mix_until_epoch", "train_sampler", "seed"),
}  # fmt: skip


def dataset_of(data_args: Mapping) -> tuple[str, str]:
    """(Hub-style id, human description) of the source a run's `DataArguments` name."""
    if data_args.get("dataset_name") and Path(data_args["dataset_name"]).is_dir():
        folder = Path(data_args["dataset_name"])
        return folder.name, f"the local Hugging Face dataset `{folder}`"
    if data_args.get("dataset_name"):
        return data_args["dataset_name"], f"`{data_args['dataset_name']}` (Hugging Face Hub)"
    if data_args.get("train_dir"):
        return "imagefolder", f"image folders `{data_args['train_dir']}` / `{data_args['test_dir']}`"
    if data_args.get("train_list"):
        return "imagefolder", f"split lists `{data_args['train_list']}` / `{data_args['test_list']}`"
    return FASHION_MNIST_HUB_ID, "Fashion-MNIST (the Debian `dataset-fashion-mnist` idx files)"


def split_section(split: LongTailSplit, description: str, test_use: str) -> str:
    if split.profile == "none":
        shape = "used as it is (no subsampling)"
    else:
        shape = f"{split.profile} profile, imbalance ratio ρ = {split.imbalance_ratio:g}, n_max = {split.max_per_class}"
        shape += ", balanced to the same size (LiVT's BAL)" if split.balanced else ""
    rows = "\n".join(
        f"| {i} | {name} | {n} | {v} | {t} |"
        for i, (name, n, v, t) in enumerate(
            zip(split.class_names, split.train_counts, split.validation_counts, split.test_counts)
        )
    )
    skipped = sum(len(paths) for paths in split.skipped_images.values())
    skipped_note = (
        f" {skipped} images could not be decoded and were left out "
        f"({', '.join(f'{name}: {len(paths)}' for name, paths in split.skipped_images.items())}; listed in lt_split.json)."
        if skipped
        else ""
    )
    return (
        f"Source: {description}; train split {shape}, split seed {split.seed}. Validation: "
        f"{split.validation_source} (model selection); {test_use}.{skipped_note}\n\n"
        f"| id | class | train | validation | test |\n|---|---|---|---|---|\n{rows}\n"
        f"| | **total** | {sum(split.train_counts)} | {sum(split.validation_counts)} | {sum(split.test_counts)} |\n"
    )


def recipe_section(stage: str, run_config: Mapping) -> str:
    """The stage's main settings from its `run_config.json` record (all argument groups merged)."""
    merged = {k: v for group, values in run_config.items() if group != "versions" for k, v in values.items()}
    rows = "\n".join(f"| `{key}` | {merged[key]} |" for key in RECIPE_KEYS[stage] if key in merged)
    versions = ", ".join(f"{k} {v}" for k, v in run_config.get("versions", {}).items())
    return f"| setting | value |\n|---|---|\n{rows}\n\n({versions}; every argument: `run_config.json`.)\n"


def eval_results(metrics: Mapping[str, float], ece: float, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """`model-index` entries: top-1 overall and per shot group (empty groups left out), and ECE, on the test split."""
    common = dict(task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_name,
                  dataset_split="test")  # fmt: skip
    results = [
        EvalResult(**common, metric_type="accuracy", metric_value=round(100 * metrics[key], 2),
                   metric_name=f"top-1 accuracy (%), {name}")  # fmt: skip
        for key, name in GROUP_NAMES.items()
        if key in metrics
    ]
    return results + [EvalResult(**common, metric_type="ece", metric_value=round(ece, 4), metric_name="ECE (15 bins)")]


def plots_section(plots: Mapping[str, Path], root: Path) -> str:
    return "\n".join(f"### {title}\n\n![{title}]({Path(path).relative_to(root).as_posix()})\n" for title, path in plots.items())


def finetune_model_card(
    output_dir: str | Path,
    report: Mapping,
    split: LongTailSplit,
    run_config: Mapping,
    inputs: str,
    pretrain_run_config: Mapping | None = None,
    plots: Mapping[str, Path] | None = None,
) -> ModelCard:
    """The card of a BFT run: split, results (groups, calibration, per class), plots, both stages' recipes, usage.
    `inputs` says what the image processor does and where its mean and std come from (`checkpoint_processor`)."""
    output_dir = Path(output_dir)
    dataset_id, description = dataset_of(run_config["FinetuneDataArguments"])
    name = f"{dataset_id.split('/')[-1]}-LT" if split.profile != "none" else dataset_id.split("/")[-1]
    loss = run_config["FinetuneModelArguments"]["loss"]
    data = ModelCardData(
        library_name="transformers", pipeline_tag="image-classification", datasets=[dataset_id],
        metrics=["accuracy", "ece"], tags=["livt", "long-tailed", "vision-transformer", "livt-hf", loss],
        model_name=output_dir.name, eval_results=eval_results(
            report["metrics"], next(iter(report["calibration"].values()))["ece"], dataset_id, name),
    )  # fmt: skip
    pretraining = (
        f"## Stage 1: masked generative pretraining (ViTMAE)\n\n{recipe_section('pretraining', pretrain_run_config)}\n"
        if pretrain_run_config
        else ""
    )
    model_args = run_config["FinetuneModelArguments"]
    if model_args.get("from_scratch"):
        start = f"balanced fine-tuning with the `{loss}` loss from a randomly initialised ViT (`--from_scratch`)."
    elif pretrain_run_config:
        start = f"LiVT's masked generative pretraining on the long-tailed data itself, then balanced fine-tuning with " \
                f"the `{loss}` loss."
    else:
        start = f"balanced fine-tuning with the `{loss}` loss from the ViTMAE checkpoint `{model_args['mae_checkpoint']}`."
    body = f"""# {output_dir.name}

A Vision Transformer for long-tailed image classification, trained with livt-hf:
{start}
Its config carries the train class counts (the train prior) and the test prior it predicts for.
Inputs: {inputs} (`preprocessor_config.json`).

## Long-tailed split ({name})

{split_section(split, description, 'the test split is used once, after training')}
## Results

{format_report(report, title="Test split").removeprefix("## Test split").strip()}

{plots_section(plots or {}, output_dir)}
{pretraining}## Stage 2: balanced fine-tuning

{recipe_section('fine-tuning', run_config)}
## Use

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{output_dir.name}", trust_remote_code=True)
```

The model's code is saved with it (`trust_remote_code=True`); with `livt_hf` installed,
`livt_hf.LiVTForImageClassification.from_pretrained(...)` loads it without remote code.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def pretrain_model_card(
    output_dir: str | Path,
    split: LongTailSplit,
    run_config: Mapping,
    eval_loss: float,
    plots: Mapping[str, Path],
    inputs: str,
) -> ModelCard:
    """The card of an MGP checkpoint: where its weights started, its inputs (`checkpoint_processor`'s sentence),
    split, recipe, validation reconstruction loss, reconstructions, curves."""
    output_dir = Path(output_dir)
    dataset_id, description = dataset_of(run_config["PretrainDataArguments"])
    start = run_config["PretrainModelArguments"]["model_name_or_path"]
    start = f"MGP continued from the weights of `{start}`" if start else "MGP from randomly initialised weights"
    data = ModelCardData(library_name="transformers", datasets=[dataset_id],
                         tags=["livt", "long-tailed", "vit-mae", "livt-hf"], model_name=output_dir.name)  # fmt: skip
    body = f"""# {output_dir.name}

A ViTMAE checkpoint from LiVT's masked generative pretraining on a long-tailed split, trained with livt-hf: the
starting point of balanced fine-tuning (`run_finetune_balanced.py --mae_checkpoint {output_dir.name}`).
{start}. Inputs: {inputs} (`preprocessor_config.json`).
Validation reconstruction loss (masked patches, normalised pixels): {eval_loss:.4f}.

## Long-tailed split

{split_section(split, description, 'pretraining never sees the test split')}
## Recipe

{recipe_section('pretraining', run_config)}
{plots_section(plots, output_dir)}"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


__all__ = ["dataset_of", "eval_results", "finetune_model_card", "pretrain_model_card"]
