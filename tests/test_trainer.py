"""Parameter groups (layer decay, no-decay set), the LR rule, and gradient accumulation in BalancedTrainer."""

import re

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import HfArgumentParser

from livt_hf import BalancedTrainer, LiVTConfig, LiVTForImageClassification
from livt_hf.arguments import FinetuningArguments, PretrainingArguments
from livt_hf.losses import build_loss
from livt_hf.optim import layer_id, param_groups
from livt_hf.trainer import long_tail_compute_metrics

COUNTS = [40, 20, 10, 5]


def tiny_model(**kwargs):
    config = LiVTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                        image_size=28, patch_size=7, num_channels=1, num_labels=4, class_counts=COUNTS, **kwargs)
    return LiVTForImageClassification(config)


def test_layer_ids_follow_both_checkpoint_layouts():
    assert layer_id("vit.embeddings.cls_token", 3) == 0
    assert layer_id("vit.layers.0.mlp.fc1.weight", 3) == 1
    assert layer_id("vit.encoder.layer.2.output.dense.weight", 3) == 3  # transformers 4.x names
    assert layer_id("head.weight", 3) == layer_id("fc_norm.bias", 3) == 4


def test_param_groups_decay_lr_by_depth_and_skip_weight_decay_where_mae_does():
    model = tiny_model()
    groups = param_groups(model, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.5)
    lr_of, wd_of = {}, {}
    for group in groups:
        for p in group["params"]:
            lr_of[id(p)], wd_of[id(p)] = group["lr"], group["weight_decay"]
    named = dict(model.named_parameters())
    assert lr_of[id(named["head.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["vit.layers.2.attention.q_proj.weight"])] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(named["vit.layers.0.attention.q_proj.weight"])] == pytest.approx(1e-3 * 0.5**3)
    assert lr_of[id(named["vit.embeddings.cls_token"])] == pytest.approx(1e-3 * 0.5**4)
    for name in ("vit.embeddings.cls_token", "vit.embeddings.position_embeddings", "fc_norm.weight",
                 "vit.layers.1.layernorm_before.weight", "head.bias"):
        assert wd_of[id(named[name])] == 0.0, name
    for name in ("head.weight", "vit.layers.1.mlp.fc1.weight", "vit.embeddings.patch_embeddings.projection.weight"):
        assert wd_of[id(named[name])] == 0.05, name
    assert sum(len(g["params"]) for g in groups) == len(named)


def parse(cls, *flags):
    return HfArgumentParser(cls).parse_args_into_dataclasses(["--output_dir", "unused", "--use_cpu", "1", *flags])[0]


def test_learning_rate_rule():
    assert parse(PretrainingArguments).learning_rate == pytest.approx(1.5e-3)  # default blr × 256 / 256
    assert parse(FinetuningArguments).learning_rate == pytest.approx(4e-3 * 64 / 256)
    scaled = parse(FinetuningArguments, "--base_learning_rate", "2e-3", "--per_device_train_batch_size", "64",
                   "--gradient_accumulation_steps", "2")
    assert scaled.learning_rate == pytest.approx(2e-3 * 128 / 256) and "base_learning_rate" in scaled.lr_rule
    explicit = parse(FinetuningArguments, "--learning_rate", "3e-4")
    assert explicit.learning_rate == 3e-4 and "as given" in explicit.lr_rule
    with pytest.raises(ValueError, match="Pass one"):
        parse(FinetuningArguments, "--learning_rate", "3e-4", "--base_learning_rate", "1e-3")


def test_fsdp_on_cpu_processes_is_refused_not_ignored():
    # accelerate only shards across accelerators: on CPU it would quietly run DDP instead
    with pytest.raises(ValueError, match="--fsdp shards the model across GPUs"):
        parse(FinetuningArguments, "--fsdp")
    assert parse(FinetuningArguments).fsdp is None


def test_trainer_optimizer_has_layer_decayed_groups(tmp_path):
    args = parse(FinetuningArguments, "--learning_rate", "1e-3", "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--load_best_model_at_end", "0")
    trainer = BalancedTrainer(model=tiny_model(), args=args, layer_decay=0.75)
    optimizer = trainer.create_optimizer()
    assert sorted({round(g["lr"], 12) for g in optimizer.param_groups}) == pytest.approx(
        sorted({1e-3 * 0.75**k for k in range(5)})
    )
    assert optimizer.defaults["betas"] == (0.9, 0.99)


def _train_one_step(tmp_path, batch_size, accumulation):
    torch.manual_seed(0)
    model = tiny_model(drop_path_rate=0.0)
    data = Dataset.from_dict({"pixel_values": torch.randn(8, 1, 28, 28).tolist(), "labels": [0, 1, 2, 3, 0, 0, 1, 2]})
    args = parse(
        FinetuningArguments, "--learning_rate", "1e-2", "--output_dir", str(tmp_path),
        "--per_device_train_batch_size", str(batch_size), "--gradient_accumulation_steps", str(accumulation),
        "--max_steps", "1", "--warmup_steps", "0", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "0", "--lr_scheduler_type", "constant", "--lr_scheduler_kwargs", "{}",
    )
    trainer = BalancedTrainer(model=model, args=args, train_dataset=data.with_format("torch"))
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loss = trainer.train().training_loss
    return loss, start, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    loss_a, start, big = _train_one_step(tmp_path / "a", batch_size=8, accumulation=1)
    loss_b, _, accumulated = _train_one_step(tmp_path / "b", batch_size=4, accumulation=2)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for name in big:
        assert torch.allclose(big[name], accumulated[name], atol=1e-6), name
    # the step trained: both runs moved the weights from where they started, alike
    assert (big["head.weight"] - start["head.weight"]).abs().max() > 1e-4
    assert (big["vit.layers.0.mlp.fc1.weight"] - start["vit.layers.0.mlp.fc1.weight"]).abs().max() > 1e-4


def test_deferred_reweighting_follows_the_trainer_epoch(tmp_path):
    model = tiny_model(loss="ce", drw_epoch=1)
    data = Dataset.from_dict({"pixel_values": torch.randn(8, 1, 28, 28).tolist(), "labels": [0, 1, 2, 3, 0, 0, 1, 2]})
    args = parse(FinetuningArguments, "--learning_rate", "1e-3", "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--save_strategy", "no", "--load_best_model_at_end", "0", "--per_device_train_batch_size", "4",
                 "--num_train_epochs", "1")  # fmt: skip
    trainer = BalancedTrainer(model=model, args=args, train_dataset=data.with_format("torch"))
    trainer.train()
    assert not trainer.loss_fn.reweighting  # epoch 0: not yet
    trainer.args.num_train_epochs = 2
    trainer.train()
    assert trainer.loss_fn.reweighting


def test_evaluation_in_training_uses_the_logits_the_loss_was_trained_for(tmp_path):
    """--inference_test_prior is for the saved model's users: the eval loss, the metrics that choose the best epoch
    and the logits temperature scaling is fitted on stay those of the prior the loss trained for."""
    torch.manual_seed(0)
    model = tiny_model(inference_test_prior=[0.7, 0.1, 0.1, 0.1]).eval()
    torch.nn.init.normal_(model.head.weight, std=0.3)  # logits of a few nats, as large as the shift
    x, y = torch.randn(16, 1, 28, 28), torch.tensor([0, 1, 2, 3] * 4)
    with torch.no_grad():
        shifted = model(x).logits
        model.config.inference_test_prior = None
        raw = model(x).logits
        model.config.inference_test_prior = [0.7, 0.1, 0.1, 0.1]
    assert (shifted.argmax(-1) != raw.argmax(-1)).any()  # the shift matters here
    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--load_best_model_at_end", "0", "--per_device_eval_batch_size", "4")  # fmt: skip
    trainer = BalancedTrainer(model=model, args=args, compute_metrics=long_tail_compute_metrics(COUNTS, 30, 10))
    data = Dataset.from_dict({"pixel_values": x.tolist(), "labels": y.tolist()}).with_format("torch")
    prediction = trainer.predict(data, metric_key_prefix="eval")
    torch.testing.assert_close(torch.as_tensor(prediction.predictions), raw, atol=1e-5, rtol=0)
    assert prediction.metrics["eval_loss"] == pytest.approx(build_loss("bal_bce", COUNTS)(raw, y).item(), rel=1e-5)
    assert prediction.metrics["eval_accuracy"] == pytest.approx((raw.argmax(-1) == y).float().mean().item())


class ShardedLikeFSDP1(torch.nn.Module):
    """`named_parameters` of `model` as FSDP version 1 (use_orig_params, wrapping `_no_split_modules`) shows them on
    one of two processes, where the optimizer is built: wrapper prefixes in the names, each parameter a flat 1-D
    shard of half its elements."""

    def __init__(self, model):
        super().__init__()
        self.config, self.shards = model.config, {}
        for name, param in model.named_parameters():
            wrapped = re.sub(r"^(vit\.(?:embeddings|layers\.\d+))\.", r"\1._fsdp_wrapped_module.", name)
            shard = param.detach().flatten()[: (param.numel() + 1) // 2].clone()
            self.shards["_fsdp_wrapped_module." + wrapped] = torch.nn.Parameter(shard)

    def named_parameters(self, *args, **kwargs):
        return iter(self.shards.items())


def settings_by_name(groups, names):
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_fsdp_v1_shards_get_the_groups_of_the_parameters_they_come_from(tmp_path):
    args = parse(FinetuningArguments, "--learning_rate", "1e-3", "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--load_best_model_at_end", "0")  # fmt: skip
    model = tiny_model()
    expected = settings_by_name(param_groups(model, 1e-3, 0.05, 0.75), {id(p): n for n, p in model.named_parameters()})
    trainer = BalancedTrainer(model=model, args=args, layer_decay=0.75)
    sharded = ShardedLikeFSDP1(model)  # Trainer builds the optimizer on the wrapped model under FSDP v1
    optimizer = trainer.create_optimizer(sharded)
    clean = {id(p): n.replace("_fsdp_wrapped_module.", "") for n, p in sharded.named_parameters()}
    assert settings_by_name(optimizer.param_groups, clean) == expected
    assert expected["head.weight"] == (1e-3, 0.05) and expected["vit.layers.0.mlp.fc1.bias"][1] == 0.0
    # without use_orig_params, FSDP v1 shows one flat tensor per wrapped module: no group can be told, so it stops
    sharded.shards = {"_fsdp_wrapped_module._flat_param": torch.nn.Parameter(torch.zeros(8))}
    trainer.optimizer = None
    with pytest.raises(ValueError, match=r"_flat_param is not one of the model's own.*'\{\"version\": 2\}'"):
        trainer.create_optimizer(sharded)


def test_bf16_trains_and_evaluates_on_the_cpu(tmp_path):
    """--bf16 without a GPU: the forward runs in bf16 autocast, the loss and the weights stay float32 and finite."""
    torch.manual_seed(0)
    model = tiny_model()
    head_outputs, losses = [], []
    model.head.register_forward_hook(lambda module, args, output: head_outputs.append(output.dtype))

    def loss_fn(logits, labels):
        losses.append(loss := model.loss_fn(logits, labels))
        return loss

    data = Dataset.from_dict({"pixel_values": torch.randn(16, 1, 28, 28).tolist(), "labels": [0, 1, 2, 3] * 4})
    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--bf16", "--per_device_train_batch_size", "4",
                 "--max_steps", "4", "--learning_rate", "1e-2", "--save_strategy", "no", "--eval_strategy", "no",
                 "--load_best_model_at_end", "0")  # fmt: skip
    trainer = BalancedTrainer(model=model, args=args, train_dataset=data.with_format("torch"), loss_fn=loss_fn,
                              compute_metrics=long_tail_compute_metrics(COUNTS, 30, 10))  # fmt: skip
    start = model.head.weight.detach().clone()
    trainer.train()
    assert head_outputs == [torch.bfloat16] * 4  # the option acts: the head's matmul runs in bf16
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(model.head.weight, start)
    metrics = trainer.evaluate(data.with_format("torch"))
    assert np.isfinite(metrics["eval_loss"]) and 0 <= metrics["eval_accuracy"] <= 1
