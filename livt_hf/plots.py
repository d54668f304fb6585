"""PNG figures for the model card of a long-tail run: per-class accuracy against training count, reliability diagram,
confusion matrix, MAE reconstructions and training curves.

Each `*_figure` function builds a `matplotlib.figure.Figure` (no pyplot, so no global figure registry to leak or
close, and no GUI backend), and each `plot_*` function saves that figure as one PNG and returns its path. What a
figure draws comes from small pure functions (`reliability_bins`, `confusion_matrix`, `mae_reconstruction_panels`,
`training_curves`) that can be checked without reading pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from transformers import BaseImageProcessor, ViTMAEForPreTraining

from .metrics.calibration import expected_calibration_error, probabilities_from_logits, reliability_bins
from .metrics.long_tail import SHOT_GROUPS, shot_groups

__all__ = [
    "compare_runs_figure",
    "confusion_matrix",
    "confusion_matrix_figure",
    "mae_reconstruction_figure",
    "mae_reconstruction_panels",
    "per_class_accuracy_figure",
    "plot_confusion_matrix",
    "plot_finetune_results",
    "plot_mae_reconstructions",
    "plot_per_class_accuracy",
    "plot_pretrain_results",
    "plot_reliability",
    "plot_training_curves",
    "reliability_figure",
    "sample_reconstructions",
    "training_curves",
    "training_curves_figure",
    "unnormalize_patch_predictions",
]

DPI = 150
MAE_COLUMNS = ("masked", "reconstruction", "reconstruction + visible", "original")
CURVE_KEYS = ("loss", "eval_loss", "eval_accuracy", "learning_rate")
_SHOT_COLOURS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# --- per-class accuracy --------------------------------------------------------------------------------------------


def per_class_accuracy_figure(
    per_class_acc: Sequence[float],
    train_counts: Sequence[int],
    class_names: Sequence[str],
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> Figure:
    """Test accuracy (%) of each class against its training count on a log axis, coloured by shot group, so the
    tail's drop (or its absence) is visible class by class. A class with no test image (NaN) is left out."""
    acc, counts = np.asarray(per_class_acc, dtype=float), np.asarray(train_counts)
    if not len(acc) == len(counts) == len(class_names):
        raise ValueError(f"Got {len(acc)} accuracies, {len(counts)} counts and {len(class_names)} class names.")
    if (counts < 1).any():
        raise ValueError("A log axis cannot place a class with no training image.")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    groups = shot_groups(counts, many_threshold, few_threshold)
    for name in SHOT_GROUPS:
        shown = [c for c in groups[name] if not np.isnan(acc[c])]
        if shown:
            ax.scatter(counts[shown], 100 * acc[shown], color=_SHOT_COLOURS[name], label=name, zorder=3)
        for c in shown:
            ax.annotate(class_names[c], (counts[c], 100 * acc[c]), (4, 3), textcoords="offset points", fontsize=7)
    ax.axvline(many_threshold, color="grey", linestyle="--", label=f"many: > {many_threshold}")
    ax.axvline(few_threshold, color="grey", linestyle=":", label=f"few: < {few_threshold}")
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("Per-class accuracy against training count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_per_class_accuracy(
    per_class_acc: Sequence[float],
    train_counts: Sequence[int],
    class_names: Sequence[str],
    path: str | Path,
    many_threshold: int = 100,
    few_threshold: int = 20,
    dpi: int = DPI,
) -> Path:
    """`per_class_accuracy_figure` as a PNG."""
    fig = per_class_accuracy_figure(per_class_acc, train_counts, class_names, many_threshold, few_threshold)
    return _save(fig, path, dpi)


# --- reliability diagram -------------------------------------------------------------------------------------------


def reliability_figure(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> Figure:
    """Accuracy of each top-1 confidence bin against the diagonal, the gap to the bin's mean confidence shaded: the
    same bins, and so the same gaps, that the ECE in the title sums."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    cfd, acc, counts = reliability_bins(probs.max(-1), probs.argmax(-1) == labels, num_bins)
    ece = expected_calibration_error(probs, labels, num_bins)
    filled = counts > 0
    left = np.arange(num_bins)[filled] / num_bins
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(left, acc[filled], width=1 / num_bins, align="edge", color="tab:blue", edgecolor="black", label="accuracy")
    ax.bar(
        left,
        cfd[filled] - acc[filled],
        bottom=acc[filled],
        width=1 / num_bins,
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({num_bins} bins): ECE = {100 * ece:.2f}%")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def plot_reliability(
    probs: np.ndarray, labels: np.ndarray, path: str | Path, num_bins: int = 15, dpi: int = DPI
) -> Path:
    """`reliability_figure` as a PNG."""
    return _save(reliability_figure(probs, labels, num_bins), path, dpi)


# --- confusion matrix ----------------------------------------------------------------------------------------------


def confusion_matrix(
    predictions: np.ndarray, labels: np.ndarray, num_classes: int, normalize: bool = False
) -> np.ndarray:
    """(C, C) matrix, rows = true class, columns = predicted class: image counts, or each row divided by the
    class's image count (`normalize`; a class with no image keeps a row of zeros)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)
    if not normalize:
        return counts
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def confusion_matrix_figure(
    predictions: np.ndarray, labels: np.ndarray, class_names: Sequence[str], normalize: bool = True
) -> Figure:
    """Confusion matrix on a log colour scale (UniMix Fig. 5), classes in the given order (decreasing training count,
    so the tail is bottom right and head-ward mistakes sit left of the diagonal). Zero cells are masked (left white)
    since a log scale has no place for them. Names label the ticks up to 30 classes."""
    num_classes = len(class_names)
    matrix = confusion_matrix(predictions, labels, num_classes, normalize)
    shown = np.ma.masked_equal(matrix, 0)
    size = min(4 + 0.35 * num_classes, 14)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        shown, norm=LogNorm(vmin=shown.min(), vmax=shown.max()), cmap=colormaps["viridis"].with_extremes(bad="white")
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class" if normalize else "images")
    if num_classes <= 30:
        ax.set_xticks(range(num_classes), class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(num_classes), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({'row-normalised' if normalize else 'counts'}, log colour; white = 0)")
    return fig


def plot_confusion_matrix(
    predictions: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    dpi: int = DPI,
) -> Path:
    """`confusion_matrix_figure` as a PNG."""
    return _save(confusion_matrix_figure(predictions, labels, class_names, normalize), path, dpi)


# --- MAE reconstructions -------------------------------------------------------------------------------------------


def unnormalize_patch_predictions(predictions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Predicted patches of a `norm_pix_loss` model back in pixel space: the model predicts each patch normalised by
    its own mean and variance, which only the target (the patchified original) knows. Same statistics as the loss."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return predictions * (var + 1.0e-6) ** 0.5 + mean


def mae_reconstruction_panels(
    model: ViTMAEForPreTraining, pixel_values: torch.Tensor, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The (N, C, H, W) images of LiVT Fig. 8 in the model's normalised pixel space: `masked` (hidden patches zeroed),
    `reconstruction`, `pasted` (the visible patches of the original over the reconstruction), `original`, and `mask`
    (1 on hidden pixels). The mask comes from noise drawn with `seed`, so a figure is reproducible across runs. The
    model runs in eval mode without gradients and goes back to its previous mode."""
    num_patches = model.vit.embeddings.patch_embeddings.num_patches
    noise = torch.rand(len(pixel_values), num_patches, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(pixel_values=pixel_values, noise=noise.to(pixel_values.device))
    finally:
        model.train(was_training)
    target = model.patchify(pixel_values)
    predictions = outputs.logits
    if model.config.norm_pix_loss:
        predictions = unnormalize_patch_predictions(predictions, target)
    mask = outputs.mask.unsqueeze(-1).expand_as(target)
    return {
        "masked": model.unpatchify(target * (1 - mask)),
        "reconstruction": model.unpatchify(predictions),
        "pasted": model.unpatchify(torch.where(mask.bool(), predictions, target)),
        "original": pixel_values,
        "mask": model.unpatchify(mask),
    }


def _to_display(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, C, H, W) normalised images → (N, H, W) or (N, H, W, 3) in [0, 1] for `imshow`."""
    mean_t = torch.tensor(mean, dtype=images.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(-1, 1, 1)
    pixels = (images.detach().cpu() * std_t + mean_t).clamp(0, 1)
    return pixels[:, 0].numpy() if pixels.shape[1] == 1 else pixels.permute(0, 2, 3, 1).numpy()


def mae_reconstruction_figure(
    panels: dict[str, torch.Tensor], mean: Sequence[float], std: Sequence[float], seed: int = 0
) -> Figure:
    """One row per image of `mae_reconstruction_panels` (drawn with `seed`), columns masked / reconstruction /
    reconstruction + visible / original (LiVT Fig. 8), the normalisation undone with the processor's `mean` and
    `std` (grayscale or RGB)."""
    channels = panels["original"].shape[1]
    if not len(mean) == len(std) == channels:
        raise ValueError(f"Need one mean and std per channel ({channels}); got {len(mean)} and {len(std)}.")
    columns = [_to_display(panels[key], mean, std) for key in ("masked", "reconstruction", "pasted", "original")]
    rows = len(panels["original"])
    fig = Figure(figsize=(2 * len(columns), 2 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for col, (title, images) in enumerate(zip(MAE_COLUMNS, columns)):
        axes[0, col].set_title(title, fontsize=9)
        for row in range(rows):
            axes[row, col].imshow(images[row], cmap="gray", vmin=0, vmax=1)  # cmap is ignored for RGB
            axes[row, col].set_axis_off()
    masked = 100 * panels["mask"].float().mean().item()  # patches tile the image: the share of hidden pixels
    fig.suptitle(f"MAE reconstructions, {masked:.0f}% of patches masked (seed {seed})")
    return fig


def plot_mae_reconstructions(
    panels: dict[str, torch.Tensor],
    path: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
    dpi: int = DPI,
) -> Path:
    """`mae_reconstruction_figure` as a PNG."""
    return _save(mae_reconstruction_figure(panels, mean, std, seed), path, dpi)


# --- training curves -----------------------------------------------------------------------------------------------


def training_curves(
    log_history: Sequence[dict], keys: Sequence[str] = CURVE_KEYS, x: str = "step"
) -> dict[str, tuple[list[float], list[float]]]:
    """(x, values) of each of `keys` logged at least once in `Trainer.state.log_history`, x the step or the epoch.
    The end-of-training summary logs `train_loss`, not `loss`, so it is not mistaken for a point of the training
    curve."""
    curves = {}
    for key in keys:
        points = [(entry[x], entry[key]) for entry in log_history if key in entry]
        if points:
            steps, values = zip(*points)
            curves[key] = (list(steps), list(values))
    return curves


def training_curves_figure(log_history: Sequence[dict]) -> Figure:
    """Training and eval loss (eval accuracy on a right axis) against step, and the learning rate below it; panels
    or lines whose keys were never logged (no evaluation, say) are left out."""
    curves = training_curves(log_history)
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    for key, label, style in (("loss", "training loss", "-"), ("eval_loss", "eval loss", "o-")):
        if key in curves:
            loss_ax.plot(*curves[key], style, label=label, markersize=3)
    lines = list(loss_ax.get_lines())
    if "eval_accuracy" in curves:
        acc_ax = loss_ax.twinx()
        lines += acc_ax.plot(*curves["eval_accuracy"], "s-", color="tab:green", markersize=3, label="eval accuracy")
        acc_ax.set_ylabel("eval accuracy")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Training curves")
    loss_ax.grid(alpha=0.3)
    if lines:
        loss_ax.legend(lines, [line.get_label() for line in lines], fontsize=8)
    if "learning_rate" in curves:
        lr_ax.plot(*curves["learning_rate"], color="tab:purple")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    lr_ax.grid(alpha=0.3)
    return fig


def plot_training_curves(log_history: Sequence[dict], path: str | Path, dpi: int = DPI) -> Path:
    """`training_curves_figure` as a PNG."""
    return _save(training_curves_figure(log_history), path, dpi)


def compare_runs_figure(panels: Sequence[tuple[str, str, dict[str, Sequence[dict]]]]) -> Figure:
    """One panel per (title, log key, {run label: log_history}): that key against the epoch for each run, so runs
    of different recipes can be compared (the ablation's MGP losses and BFT validation accuracies)."""
    fig = Figure(figsize=(6.5 * len(panels), 6), layout="constrained")
    for ax, (title, key, histories) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        for label, history in histories.items():
            ax.plot(*training_curves(history, (key,), "epoch").get(key, ([], [])), "o-", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return fig


# --- the plots of a run's model card --------------------------------------------------------------------------------


def plot_finetune_results(
    folder: str | Path, report: dict, logits: np.ndarray, labels: np.ndarray, loss: str, log_history: Sequence[dict]
) -> dict[str, Path]:
    """The BFT card's plots of the test split (`report` from `long_tail_report`, `logits` as the model returns them),
    by the title the card gives them."""
    folder, classes = Path(folder), report["classes"]
    names = [c["name"] for c in classes]
    accuracy = [np.nan if c["accuracy"] is None else c["accuracy"] for c in classes]
    counts = [c["train_count"] for c in classes]
    thresholds = report["thresholds"]
    return {
        "Per-class accuracy against training count": plot_per_class_accuracy(
            accuracy, counts, names, folder / "per_class_accuracy.png", thresholds["many"], thresholds["few"]
        ),
        "Reliability diagram (as trained)": plot_reliability(
            probabilities_from_logits(logits, loss), labels, folder / "reliability.png"
        ),
        "Confusion matrix": plot_confusion_matrix(
            np.asarray(logits).argmax(-1), labels, names, folder / "confusion_matrix.png"
        ),
        "Training curves": plot_training_curves(log_history, folder / "training_curves.png"),
    }


def sample_reconstructions(
    model: ViTMAEForPreTraining, images: Sequence[dict], seed: int = 0, num_images: int = 4
) -> dict[str, torch.Tensor]:
    """`mae_reconstruction_panels` of `num_images` evenly spaced rows of `images` (rows with `pixel_values`, e.g. the
    class-ordered validation split with its eval transform: several classes), on the CPU.

    It runs the model: in a distributed run every process must call it, since an FSDP model's forward gathers its
    weights from all of them (process 0 alone would wait for processes that have finished)."""
    rows = np.linspace(0, len(images) - 1, min(num_images, len(images))).round().astype(int)
    pixel_values = torch.stack([images[int(i)]["pixel_values"] for i in rows])
    panels = mae_reconstruction_panels(model, pixel_values.to(model.device), seed)
    return {key: value.detach().cpu() for key, value in panels.items()}


def plot_pretrain_results(
    folder: str | Path,
    reconstructions: dict[str, torch.Tensor],
    processor: BaseImageProcessor,
    log_history: Sequence[dict],
    seed: int = 0,
) -> dict[str, Path]:
    """The MGP card's plots: the reconstructions (`sample_reconstructions`, drawn with `seed`) and the training
    curves."""
    folder = Path(folder)
    path = folder / "reconstructions.png"
    return {
        "Reconstructions of validation images": plot_mae_reconstructions(
            reconstructions, path, processor.image_mean, processor.image_std, seed
        ),
        "Training curves": plot_training_curves(log_history, folder / "training_curves.png"),
    }
