#!/usr/bin/env python
"""Simple baselines on a run's own split: every accuracy we publish stands beside what a linear classifier and a
small CNN reach on the same train split, test split and machine.

    python benchmarks/baselines.py                                   # Fashion-MNIST-LT, ρ = 100 (the scripts' default)
    python benchmarks/baselines.py --max_per_class 400 --imbalance_ratio 50 --epochs 30 --seeds 0 1
    python benchmarks/baselines.py --from_run outputs/livt-fmnist-lt   # the exact split of a fine-tune run

Each model (softmax regression on the normalised pixels; 3 conv blocks 32/64/128 + BatchNorm + global pool) trains
with each loss (default: CE and logit-adjusted CE, τ = 1) and seed: Adam, batch 64, no augmentation, a fixed number of
epochs. The epoch is chosen on the validation split (the project's rule); the test split is evaluated once, with the
chosen weights. The images of each split are decoded once with the eval transform the runs use.
"""

from __future__ import annotations

import copy
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from datasets import Dataset
from torch import nn
from transformers import HfArgumentParser, ViTImageProcessor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from livt_hf.arguments import DataArguments, FinetuneDataArguments  # noqa: E402
from livt_hf.data import LongTailSplit, batch_transform, eval_transform, image_processor, prepare_splits  # noqa: E402
from livt_hf.losses import LOSSES, PRIOR_AWARE_LOSSES, SoftmaxLoss, SigmoidLoss, build_loss  # noqa: E402
from livt_hf.metrics import long_tail_metrics, per_class_accuracy  # noqa: E402
from livt_hf.runs import infer_num_channels, machine, read_run_config  # noqa: E402

METRICS = ("accuracy", "many_accuracy", "medium_accuracy", "few_accuracy", "head_accuracy", "middle_accuracy",
           "tail_accuracy")  # fmt: skip
MODELS = {"linear": "linear (softmax regression, pixels)", "cnn": "CNN (3 blocks 32/64/128, BN, GAP)"}
BASELINE_LOSSES = tuple(name for name in LOSSES if name != "ldam")  # LDAM needs a cosine head
COLUMNS = ("model", "loss", "overall", "many", "medium", "few", "head", "middle", "tail", "train wall s")
AUGMENTATION_FLAGS = ("crop_min_scale", "augment_on_device")  # data flags of the scripts' training transforms
DEFAULT_IMAGE_SIZE = 28  # the demo's (Fashion-MNIST's own) resolution


@dataclass
class BaselineArguments:
    """What the baselines train and where the results go; the data flags are the scripts' own `DataArguments`."""

    from_run: str | None = field(
        default=None,
        metadata={
            "help": "A run's output folder: its recorded data arguments rebuild its split, which must equal its "
            "lt_split.json, and its shot-group thresholds apply. Data flags are then refused."
        },
    )
    models: list[str] = field(default_factory=lambda: list(MODELS), metadata={"help": f"Some of {list(MODELS)}."})
    losses: list[str] = field(default_factory=lambda: ["ce", "la"], metadata={"help": f"Some of {BASELINE_LOSSES}."})
    tau: float = field(default=1.0, metadata={"help": f"τ of the prior-aware losses {PRIOR_AWARE_LOSSES}."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "One row per model × loss × seed."})
    epochs: int = field(default=12, metadata={"help": "Training epochs; the best on validation is evaluated."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam's learning rate."})
    batch_size: int = field(default=64)
    image_size: int | None = field(
        default=None,
        metadata={"help": f"Input size (default: the run's with --from_run, else {DEFAULT_IMAGE_SIZE})."},
    )
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)."})
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    output: str | None = field(default=None, metadata={"help": "JSON file for the rows."})
    markdown: str | None = field(default=None, metadata={"help": "Also write the Markdown tables to this file."})

    def __post_init__(self):
        unknown = [m for m in self.models if m not in MODELS] + [lo for lo in self.losses if lo not in BASELINE_LOSSES]
        if unknown:
            raise ValueError(f"Unknown {unknown}: --models takes {list(MODELS)}, --losses {BASELINE_LOSSES}.")
        if self.epochs < 1 or self.batch_size < 1 or not self.seeds:
            raise ValueError("--epochs and --batch_size must be ≥ 1, and --seeds must name at least one seed.")


class Images(NamedTuple):
    """A split decoded once: normalised pixels (N, C, H, W) and labels (N,)."""

    pixels: torch.Tensor
    labels: torch.Tensor


def decode_split(split: Dataset, processor: ViTImageProcessor, chunk: int = 1024) -> Images:
    """Every image of `split` through the runs' eval transform (resize, centre crop, normalise) in the processor's
    mode, in chunks so that only one chunk of PIL images is alive at a time."""
    size, mean, std = processor.size["height"], processor.image_mean, processor.image_std
    transform = batch_transform(eval_transform(size, mean, std), len(mean))
    batches = [transform(split[i : i + chunk]) for i in range(0, len(split), chunk)]
    pixels = torch.stack([p.as_subclass(torch.Tensor) for b in batches for p in b["pixel_values"]])
    return Images(pixels, torch.tensor([y for b in batches for y in b["labels"]]))


def build_model(name: str, num_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """`linear`: one affine map of the pixels; `cnn`: conv 3×3 + BN + ReLU blocks of 32, 64, 128 channels (2×2
    max-pool after the first two), global average pool, linear."""
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(num_channels * image_size**2, num_classes))

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        return layers + [nn.MaxPool2d(2)] if pool else layers

    return nn.Sequential(*block(num_channels, 32, True), *block(32, 64, True), *block(64, 128, False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))  # fmt: skip


def baseline_loss(name: str, class_counts: Sequence[int], tau: float) -> SoftmaxLoss | SigmoidLoss:
    """The project's loss; τ goes only to the losses it applies to (build_loss refuses it elsewhere)."""
    return build_loss(name, class_counts, **({"tau": tau} if name in PRIOR_AWARE_LOSSES else {}))


@torch.no_grad()
def predict(model: nn.Module, images: Images, chunk: int = 1024) -> torch.Tensor:
    """Class ids by argmax of the raw logits: the biases of the prior-aware losses act in training only."""
    model.eval()
    return torch.cat([model(x).argmax(-1) for x in images.pixels.split(chunk)]).cpu()


def evaluate(model: nn.Module, images: Images, class_counts: Sequence[int], thresholds: dict) -> dict:
    """The project's long-tail metrics, plus per-class accuracy (None for a class with no image here)."""
    predictions, labels = predict(model, images).numpy(), images.labels.cpu().numpy()
    per_class = per_class_accuracy(predictions, labels, len(class_counts))
    return long_tail_metrics(predictions, labels, class_counts, **thresholds) | {
        "per_class_accuracy": [None if math.isnan(a) else float(a) for a in per_class]  # NaN is not JSON
    }


def train_baseline(
    model_name: str,
    loss_name: str,
    seed: int,
    data: dict[str, Images],
    class_counts: Sequence[int],
    options: BaselineArguments,
    thresholds: dict | None = None,
) -> tuple[dict, nn.Module]:
    """Train one row; returns it and the model with the weights of the epoch best on validation accuracy (the
    first of equals), the only weights the test split sees. The wall time covers the epochs and their validation
    passes, as Trainer's training time does."""
    thresholds = thresholds or {}
    train = data["train"]
    torch.manual_seed(seed)
    model = build_model(model_name, train.pixels.shape[1], train.pixels.shape[-1], len(class_counts))
    model.to(train.pixels.device)
    loss_fn = baseline_loss(loss_name, class_counts, options.tau)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    order = torch.Generator().manual_seed(seed)
    validation_accuracy, train_loss, best_state = [], [], None
    start = time.perf_counter()
    for _ in range(options.epochs):
        model.train()
        total = torch.zeros((), device=train.pixels.device)
        for batch in torch.randperm(len(train.labels), generator=order).split(options.batch_size):
            batch = batch.to(train.pixels.device)
            loss = loss_fn(model(train.pixels[batch]), train.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        train_loss.append(total.item() / len(train.labels))
        validation_accuracy.append(evaluate(model, data["validation"], class_counts, thresholds)["accuracy"])
        if validation_accuracy[-1] > max(validation_accuracy[:-1], default=-1.0):
            best_state = copy.deepcopy(model.state_dict())
    wall = time.perf_counter() - start
    model.load_state_dict(best_state)
    row = {
        "model": model_name,
        "loss": loss_name,
        "tau": options.tau if loss_name in PRIOR_AWARE_LOSSES else None,
        "seed": seed,
        "epochs": options.epochs,
        "chosen_epoch": 1 + validation_accuracy.index(max(validation_accuracy)),
        "validation_accuracy": validation_accuracy,
        "train_loss": train_loss,
        "train_wall_s": wall,
        "test": evaluate(model, data["test"], class_counts, thresholds),
    }
    return row, model


def run_data_arguments(run: Path) -> FinetuneDataArguments:
    """The data arguments a finished run recorded in run_config.json (either stage), parsed as the fine-tune's so
    that its shot-group thresholds come along (their defaults for a pretraining run)."""
    record = read_run_config(str(run))
    if record is None:
        raise FileNotFoundError(f"--from_run {run}: no run_config.json there, so no finished run to rebuild.")
    recorded = next((v for k, v in record.items() if k.endswith("DataArguments")), None)
    if recorded is None:
        raise ValueError(f"--from_run {run}: its run_config.json records no data arguments.")
    (data_args,) = HfArgumentParser(FinetuneDataArguments).parse_dict(recorded, allow_extra_keys=True)
    return data_args


def check_same_split(rebuilt: LongTailSplit, saved: LongTailSplit, run: Path) -> None:
    """Refuse a rebuilt split that is not the run's to the index: a baseline on other images is no comparison."""
    new, old = asdict(rebuilt), asdict(saved)
    differ = [name for name in old if new[name] != old[name]]
    if differ:
        raise ValueError(
            f"--from_run {run}: the split rebuilt from its recorded data arguments differs from its lt_split.json in "
            f"{differ} (counts recorded {saved.train_counts}, rebuilt {rebuilt.train_counts}). The data has changed "
            "since the run (another dataset version, files added, removed or renamed), or lt_split.json was edited."
        )


def run_baselines(options: BaselineArguments, data_args: DataArguments, command: str = "") -> dict:
    """Every model × loss × seed on one split: the split's counts, the machine, the command and the rows."""
    unused = [f"--{name}" for name in AUGMENTATION_FLAGS if getattr(data_args, name) != getattr(DataArguments(), name)]
    if unused:
        raise ValueError(f"{unused}: the baselines train without augmentation, so these would not act. Drop them.")
    image_size, run = options.image_size, options.from_run and Path(options.from_run)
    if run:
        if data_args != DataArguments():
            raise ValueError("--from_run takes the data arguments from the run; drop the data flags.")
        data_args = run_data_arguments(run)
        image_size = image_size or ViTImageProcessor.from_pretrained(run).size["height"]
    splits, info = prepare_splits(data_args)
    if run:
        check_same_split(info, LongTailSplit.load(run / "lt_split.json"), run)
    processor = image_processor(image_size or DEFAULT_IMAGE_SIZE, infer_num_channels(splits["train"]))
    data = {
        name: Images(*(t.to(options.device) for t in decode_split(splits[name], processor)))
        for name in ("train", "validation", "test")
    }
    thresholds = {k: getattr(data_args, k) for k in ("many_threshold", "few_threshold") if hasattr(data_args, k)}
    # a run's shot-group thresholds; DataArguments has none, and then the metrics' defaults (the fine-tune's) apply
    where = machine(options.device)
    rows = []
    for model_name in options.models:
        for loss_name in options.losses:
            for seed in options.seeds:
                row, _ = train_baseline(model_name, loss_name, seed, data, info.train_counts, options, thresholds)
                rows.append(row | {"machine": where, "command": command})
                print(f"{model_name} {loss_name} seed {seed}: test {100 * row['test']['accuracy']:.2f} % (epoch "
                      f"{row['chosen_epoch']} of {row['epochs']}), {row['train_wall_s']:.1f} s", flush=True)
    return {
        "split": {"class_names": info.class_names, "train_counts": info.train_counts,
                  "validation_counts": info.validation_counts, "test_counts": info.test_counts,
                  "image_size": processor.size["height"], "num_channels": len(processor.image_mean)},  # fmt: skip
        "machine": where,
        "command": command,
        "rows": rows,
    }


def mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


def loss_label(row: dict) -> str:
    return row["loss"] if row["tau"] is None else f"{row['loss']} (τ = {row['tau']:g})"


def markdown_table(rows: list[dict], by_seed: bool = False) -> str:
    """One line per model × loss: mean ± std over its seeds (percent; wall in seconds), or one per seed."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["model"], loss_label(row)) + ((row["seed"],) if by_seed else ()), []).append(row)
    lines = [f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)]
    for key, same in cells.items():
        model = MODELS[key[0]] + (f", seed {key[2]}" if by_seed else "")
        numbers = [mean_std([100 * r["test"][m] for r in same if m in r["test"]], 2) for m in METRICS]
        numbers.append(mean_std([r["train_wall_s"] for r in same], 2))
        lines.append(f"| {model} | {key[1]} | {' | '.join(numbers)} |")
    return "\n".join(lines) + "\n"


def report(results: dict) -> str:
    """The Markdown: what was measured on what, the mean ± std table, and the per-seed rows when there are several."""
    split, where, rows = results["split"], results["machine"], results["rows"]
    seeds = sorted({r["seed"] for r in rows})
    text = (
        f"Baselines: train counts {split['train_counts']} ({sum(split['train_counts'])} images), validation "
        f"{sum(split['validation_counts'])}, test {sum(split['test_counts'])}; {split['image_size']} px, "
        f"{split['num_channels']} channel(s). Test top-1 (%), epoch chosen on validation; seeds {seeds}"
        f"{' (mean ± std)' if len(seeds) > 1 else ''}; {rows[0]['epochs']} epochs. Machine: {where['cpu']} "
        f"({where['cpu_cores']} cores, {where['torch_threads']} torch thread(s)), device {where['device']}. "
        f"Command: `{results['command']}`\n\n{markdown_table(rows)}"
    )
    return text + (f"\nPer seed:\n\n{markdown_table(rows, by_seed=True)}" if len(seeds) > 1 else "")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    options, data_args = HfArgumentParser((BaselineArguments, DataArguments)).parse_args_into_dataclasses(args=argv)
    if options.num_threads is not None:
        torch.set_num_threads(options.num_threads)
    results = run_baselines(options, data_args, shlex.join(["python", "benchmarks/baselines.py", *argv]))
    text = report(results)
    print(text)
    if options.output:
        Path(options.output).write_text(json.dumps(results, indent=1))
    if options.markdown:
        Path(options.markdown).write_text(text)
    return results


if __name__ == "__main__":
    main()
