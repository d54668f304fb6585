"""Long-tailed train splits, a validation split carved from train, and the class counts that define the prior.

Class order: label id 0 is the head (most images), the last id the tail, as in CIFAR-LT.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict

PROFILES = ("exponential", "pareto", "none")
DEFAULT_VALIDATION_SPLIT = 0.02
# The default validation split holds at least this many images when the data allows: 8 images per class (0.02 of a
# 400-image head class) cannot choose one epoch of a hundred (docs/DEMO_RECIPE.md, small data).
MIN_DEFAULT_VALIDATION_IMAGES = 500
MAX_DEFAULT_CARVE = 0.1  # a carve (profile "none") takes at most this fraction of train to reach that size


def exponential_counts(max_per_class: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """CIFAR-LT rule: n_i = ⌊n_max · ρ^(−i/(C−1))⌋, so n_0 = n_max and n_{C−1} = ⌊n_max / ρ⌋."""
    check_imbalance_ratio(imbalance_ratio)
    if num_classes == 1:
        return [max_per_class]
    return [int(max_per_class * imbalance_ratio ** (-i / (num_classes - 1))) for i in range(num_classes)]


def pareto_counts(max_per_class: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Power-law (Zipf/Pareto) profile n_i = ⌊n_max · (i+1)^(−a)⌋, with a = log ρ / log C so n_{C−1} = n_max / ρ.

    Most classes sit near the tail and a few in the head, the shape of ImageNet-LT's Pareto-sampled split.
    """
    check_imbalance_ratio(imbalance_ratio)
    if num_classes == 1:
        return [max_per_class]
    a = math.log(imbalance_ratio) / math.log(num_classes)
    # the small epsilon keeps ⌊·⌋ from dropping a whole image to rounding error at the exact endpoints
    return [int(max_per_class * (i + 1) ** (-a) + 1e-9) for i in range(num_classes)]


def balanced_counts(total: int, num_classes: int) -> list[int]:
    """`total` images spread evenly (the first `total mod C` classes get one more): LiVT's ImageNet-BAL."""
    base, extra = divmod(total, num_classes)
    return [base + (i < extra) for i in range(num_classes)]


def profile_counts(
    profile: str, max_per_class: int, num_classes: int, imbalance_ratio: float, balanced: bool = False
) -> list[int]:
    """Per-class counts of a profile; `balanced=True` keeps the total and spreads it evenly."""
    if profile == "exponential":
        counts = exponential_counts(max_per_class, num_classes, imbalance_ratio)
    elif profile == "pareto":
        counts = pareto_counts(max_per_class, num_classes, imbalance_ratio)
    else:
        raise ValueError(f"Unknown long-tail profile {profile!r}; choose one of {PROFILES}.")
    if min(counts) < 1:
        raise ValueError(
            f"The {profile} profile with n_max={max_per_class} and ρ={imbalance_ratio} gives a class with zero "
            f"images (counts {counts}). Lower --imbalance_ratio or raise --max_per_class."
        )
    return balanced_counts(sum(counts), num_classes) if balanced else counts


def resampled_test_counts(max_per_class: int, num_classes: int, test_imbalance_ratio: float) -> list[int]:
    """Counts of a resampled test set (UniMix Table D2): long-tailed for ρ' > 1 (class 0 largest, like train),
    balanced for ρ' = 1, reversed for ρ' < 1 (the train tail becomes the head)."""
    if not test_imbalance_ratio > 0:
        raise ValueError(f"A test imbalance ratio must be > 0, got {test_imbalance_ratio}.")
    ratio = max(test_imbalance_ratio, 1 / test_imbalance_ratio)
    counts = exponential_counts(max_per_class, num_classes, ratio)
    if min(counts) < 1:
        raise ValueError(
            f"A test set with ρ' = {test_imbalance_ratio:g} from {max_per_class} images per class leaves a class "
            f"empty (counts {counts}); use a ρ' of at most {max_per_class:g} or a larger test split."
        )
    return counts if test_imbalance_ratio >= 1 else counts[::-1]


def resample_indices(labels: Sequence[int], counts: Sequence[int], seed: int = 0) -> list[int]:
    """A seeded random `counts[c]` indices of each class c (sorted)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, n in enumerate(counts):
        pool = np.flatnonzero(labels == c)
        if n > len(pool):
            raise ValueError(f"Class {c} has {len(pool)} images, {n} were asked for.")
        chosen.append(rng.choice(pool, size=n, replace=False))
    return sorted(np.concatenate(chosen).tolist())


def check_imbalance_ratio(imbalance_ratio: float) -> None:
    if not imbalance_ratio >= 1:
        raise ValueError(
            f"--imbalance_ratio must be ≥ 1 (n_max / n_min of the train split), got {imbalance_ratio}. "
            "Reversed (ρ < 1) distributions are for test sets only."
        )


@dataclass
class LongTailSplit:
    """What a run trained on: enough to rebuild the split exactly, saved beside the outputs as JSON."""

    profile: str
    imbalance_ratio: float | None
    max_per_class: int | None
    balanced: bool
    seed: int
    class_names: list[str]
    train_counts: list[int]
    validation_counts: list[int]
    test_counts: list[int]
    validation_source: str  # "left-out train images", "stratified carve" or "given"
    train_indices: list[int] = field(repr=False)
    validation_indices: list[int] | None = field(repr=False)
    test_indices: list[int] | None = field(repr=False)
    # "path (error)" of the images --bad_images skip left out, per source split: the indices above count without them
    skipped_images: dict[str, list[str]] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> LongTailSplit:
        return cls(**json.loads(Path(path).read_text()))


def class_counts(labels: list[int] | np.ndarray, num_classes: int) -> list[int]:
    """Images per class, checking every label is a valid class id."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"Label id {int(bad)} is outside 0 … {num_classes - 1} (the dataset has {num_classes} classes).")
    return np.bincount(labels, minlength=num_classes).tolist()


def build_long_tail_splits(
    dataset: DatasetDict,
    profile: str = "exponential",
    imbalance_ratio: float = 100.0,
    max_per_class: int = 5000,
    balanced: bool = False,
    validation_split: float | None = None,
    max_test_samples: int | None = None,
    seed: int = 0,
) -> tuple[DatasetDict, LongTailSplit]:
    """Train / validation / test splits for long-tailed training from a source with `train` and `test`.

    - `profile` "exponential" or "pareto" subsample the source's train split (`balanced=True`: same total, even
      counts); "none" uses it as it is (naturally long-tailed data).
    - Validation (model selection) never comes from `test`. When subsampling it is a balanced set of
      `round(validation_split · n_max)` per class taken from the images the train split left out (as ImageNet-LT
      does), and for the same seed it is the same whatever ρ is. With "none" it is a stratified carve of
      `validation_split` of each class that leaves every class at least one train image. A source that has its
      own `validation` split keeps it, and then `validation_split` must not be given.
    - `validation_split=None` is 0.02, raised towards `MIN_DEFAULT_VALIDATION_IMAGES` in all where the data allows:
      up to the left-out images every class has when subsampling, up to `MAX_DEFAULT_CARVE` of train with "none".
    - `max_test_samples` keeps a seeded random subset of the test split (for quick runs).
    """
    for required in ("train", "test"):
        if required not in dataset:
            raise ValueError(f"The dataset has no {required!r} split (it has {list(dataset)}); one is required.")
    names = dataset["train"].features["label"].names
    num_classes = len(names)
    source_labels = {split: _checked_labels(ds, split, num_classes) for split, ds in dataset.items()}
    labels = source_labels["train"]
    available = class_counts(labels, num_classes)
    _check_no_empty_class(available, names, source_labels)
    has_validation = "validation" in dataset
    if has_validation and validation_split is not None:
        raise ValueError("The dataset has its own validation split; do not also pass --validation_split.")
    default_split = validation_split is None and not has_validation
    if validation_split is None:
        validation_split = 0.0 if has_validation else DEFAULT_VALIDATION_SPLIT
    if not (has_validation or 0 < validation_split < 1):
        raise ValueError(f"--validation_split must be in (0, 1), got {validation_split}.")

    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    if profile == "none":
        if default_split:
            reach = min(MAX_DEFAULT_CARVE, MIN_DEFAULT_VALIDATION_IMAGES / len(labels))
            validation_split = max(validation_split, reach)
        n_val = [0 if has_validation else min(round(validation_split * n), n - 1) for n in available]
        if not (has_validation or any(n_val)):
            raise ValueError(_empty_carve_message(validation_split, max(available)))
        val_idx = [p[:v] for p, v in zip(perms, n_val)]
        train_idx = [p[v:] for p, v in zip(perms, n_val)]
        validation_source = "given" if has_validation else "stratified carve"
    else:
        counts = profile_counts(profile, max_per_class, num_classes, imbalance_ratio, balanced)
        n_val = 0 if has_validation else max(1, round(validation_split * max_per_class))
        if default_split:
            spare = min(a - n for a, n in zip(available, counts))
            n_val = max(n_val, min(math.ceil(MIN_DEFAULT_VALIDATION_IMAGES / num_classes), spare))
        short = [(names[c], available[c]) for c in range(num_classes) if counts[c] + n_val > available[c]]
        if short:
            raise ValueError(
                f"Classes {short} have too few images for {counts[0] if balanced else max_per_class} train + "
                f"{n_val} validation images per class. Lower --max_per_class or --validation_split."
            )
        train_idx = [p[:n] for p, n in zip(perms, counts)]
        val_idx = [p[len(p) - n_val :] for p in perms]
        validation_source = "given" if has_validation else "left-out train images"

    train_indices = np.concatenate(train_idx).tolist()
    splits = {"train": dataset["train"].select(train_indices)}
    validation_indices = None
    if has_validation:
        splits["validation"] = dataset["validation"]
    else:
        validation_indices = np.concatenate(val_idx).tolist()
        splits["validation"] = dataset["train"].select(validation_indices)
    test_indices = None
    splits["test"] = dataset["test"]
    if max_test_samples is not None and max_test_samples < len(dataset["test"]):
        test_indices = sorted(rng.permutation(len(dataset["test"]))[:max_test_samples].tolist())
        splits["test"] = dataset["test"].select(test_indices)

    result = DatasetDict(splits)
    info = LongTailSplit(
        profile=profile,
        imbalance_ratio=None if profile == "none" else imbalance_ratio,
        max_per_class=None if profile == "none" else max_per_class,
        balanced=balanced,
        seed=seed,
        class_names=list(names),
        train_counts=class_counts(result["train"]["label"], num_classes),
        validation_counts=class_counts(result["validation"]["label"], num_classes),
        test_counts=class_counts(result["test"]["label"], num_classes),
        validation_source=validation_source,
        train_indices=train_indices,
        validation_indices=validation_indices,
        test_indices=test_indices,
    )
    return result, info


def _checked_labels(split: Dataset, name: str, num_classes: int) -> np.ndarray:
    """The split's label ids, after checking it has images and every one is a class id of the label feature."""
    if len(split) == 0:
        raise ValueError(
            f"The {name} split has no images. Check its source (--{name}_dir / --{name}_list, or the Hub dataset's "
            f"{name!r} split)."
        )
    labels = np.asarray(split["label"])
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if (outside == -1).any():
        raise ValueError(
            f"{int((outside == -1).sum())} images of the {name} split have no label (-1; Hub test splits often are "
            f"unlabelled): they can be neither trained nor scored on. Use a labelled {name} split (image folders or "
            "split lists let you choose which images form it)."
        )
    if outside.size:
        raise ValueError(
            f"The {name} split has label id {int(outside[0])}, outside the label feature's 0 … {num_classes - 1}. "
            "Fix the labels or the label feature's class names."
        )
    return labels


def _check_no_empty_class(train_counts: list[int], names: list[str], labels: dict[str, np.ndarray]) -> None:
    """Every class needs train images: a class the model never sees is not learnt, and its prior π = 0 makes
    log π infinite in every prior-aware loss. The message says where each empty class comes from."""
    empty = [c for c, n in enumerate(train_counts) if n == 0]
    if not empty:
        return
    where = [
        f"{names[c]!r} (in {', '.join(s for s, y in labels.items() if (y == c).any()) or 'no split: a gap in the ids'})"
        for c in empty
    ]
    raise ValueError(
        f"Classes {', '.join(where)} have no train images: a model cannot learn them, and their prior π = 0 makes "
        "log π infinite in every prior-aware loss. Add train images for them, or remove them from every split "
        "(image folders: their folders; split lists: their lines, then renumber the labels 0 … C-1 without gaps)."
    )


def _empty_carve_message(validation_split: float, largest: int) -> str:
    fix = (
        f"raise --validation_split above {0.5 / largest:.3g} (0.5 / the largest class's {largest} images), or give"
        if largest > 1
        else "every class has one train image, which it keeps: give"
    )
    return (
        f"--validation_split {validation_split:g} carves no validation images: round({validation_split:g} · n) is 0 "
        f"for every class. To select models on a validation split, {fix} a validation split (--validation_dir, "
        "--validation_list, or a Hub 'validation' split)."
    )
