"""Long-tail accuracy: overall, per class, many / medium / few shot, and head / middle / tail thirds.

Group accuracies are means of the per-class accuracies in the group (as the decoupling / LiVT code does); on a
balanced test set that equals the image-level accuracy. A group with no class is absent from the results, never 0
or NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHOT_GROUPS = ("many", "medium", "few")
THIRDS = ("head", "middle", "tail")


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy of each class on the evaluated images; NaN for a class with no image there."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    seen = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[predictions == labels], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, correct / np.maximum(seen, 1), np.nan)


def shot_groups(train_counts: Sequence[int], many_threshold: int = 100, few_threshold: int = 20) -> dict[str, list[int]]:
    """Class ids by training count: many (> many_threshold), medium, few (< few_threshold)."""
    if not few_threshold <= many_threshold:
        raise ValueError(f"few_threshold ({few_threshold}) must not exceed many_threshold ({many_threshold}).")
    counts = np.asarray(train_counts)
    return {
        "many": np.flatnonzero(counts > many_threshold).tolist(),
        "medium": np.flatnonzero((counts >= few_threshold) & (counts <= many_threshold)).tolist(),
        "few": np.flatnonzero(counts < few_threshold).tolist(),
    }


def count_thirds(train_counts: Sequence[int]) -> dict[str, list[int]]:
    """Classes ranked by training count (ties by id) and cut into head / middle / tail thirds (UniMix's grouping).

    With C not divisible by 3 the head gets the extra class(es): 10 classes → 4 / 3 / 3.
    """
    order = sorted(range(len(train_counts)), key=lambda c: (-train_counts[c], c))
    return {name: sorted(part.tolist()) for name, part in zip(THIRDS, np.array_split(order, 3))}


def long_tail_metrics(
    predictions: np.ndarray,
    labels: np.ndarray,
    train_counts: Sequence[int],
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, float]:
    """Scalar metrics for Trainer logs: `accuracy` (image level) and `<group>_accuracy` for each non-empty group."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    per_class = per_class_accuracy(predictions, labels, len(train_counts))
    metrics = {"accuracy": float((predictions == labels).mean())}
    groups = shot_groups(train_counts, many_threshold, few_threshold) | count_thirds(train_counts)
    for name, classes in groups.items():
        evaluated = [c for c in classes if not np.isnan(per_class[c])]
        if evaluated:
            metrics[f"{name}_accuracy"] = float(np.mean(per_class[evaluated]))
    return metrics


def long_tail_report(
    predictions: np.ndarray,
    labels: np.ndarray,
    train_counts: Sequence[int],
    class_names: Sequence[str],
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
    """Everything the results table shows: the scalar metrics, each group's classes, per-class accuracy and counts."""
    per_class = per_class_accuracy(predictions, labels, len(train_counts))
    return {
        "metrics": long_tail_metrics(predictions, labels, train_counts, many_threshold, few_threshold),
        "groups": shot_groups(train_counts, many_threshold, few_threshold) | count_thirds(train_counts),
        "thresholds": {"many": many_threshold, "few": few_threshold},
        "classes": [
            {
                "id": c,
                "name": class_names[c],
                "train_count": int(train_counts[c]),
                "eval_count": int((np.asarray(labels) == c).sum()),
                "accuracy": None if np.isnan(acc) else float(acc),
            }
            for c, acc in enumerate(per_class)
        ],
    }


def format_report(report: dict, title: str = "Results") -> str:
    """The report as Markdown: the group table, the calibration table (if the report has one), the per-class table."""
    metrics, groups, th = report["metrics"], report["groups"], report["thresholds"]
    described = {
        "many": f"train count > {th['many']}",
        "medium": f"{th['few']} ≤ train count ≤ {th['many']}",
        "few": f"train count < {th['few']}",
        "head": "top third by count",
        "middle": "middle third by count",
        "tail": "bottom third by count",
    }
    lines = [f"## {title}", ""]
    if "prior" in report:  # {"predictions_for": words, "inference_test_prior": list or None}
        prior = report["prior"]
        note = f"Predictions: the raw logits, which answer for {prior['predictions_for']} (what the loss trained for)."
        if prior["inference_test_prior"] is not None:
            note += f" The saved model shifts them to its inference_test_prior {prior['inference_test_prior']}."
        lines += [note, ""]
    lines += ["| group | classes | top-1 (%) |", "|---|---|---|"]
    lines.append(f"| overall | all {len(report['classes'])} | {100 * metrics['accuracy']:.2f} |")
    for name in (*SHOT_GROUPS, *THIRDS):
        key = f"{name}_accuracy"
        value = f"{100 * metrics[key]:.2f}" if key in metrics else "— (no class in this group)"
        lines.append(f"| {name} ({described[name]}) | {len(groups[name])} | {value} |")
    if "calibration" in report:  # {row label: {metric: value}}
        rows = report["calibration"]
        names = list(next(iter(rows.values())))
        lines += ["", "| probabilities | " + " | ".join(n.upper() for n in names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(f"{m[n]:.4f}" for n in names) + " |" for label, m in rows.items()]
    lines += ["", "| id | class | train count | eval images | top-1 (%) |", "|---|---|---|---|---|"]
    for row in report["classes"]:
        acc = "— (no eval image)" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}"
        lines.append(f"| {row['id']} | {row['name']} | {row['train_count']} | {row['eval_count']} | {acc} |")
    return "\n".join(lines) + "\n"
