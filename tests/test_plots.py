"""Model-card plots: what each figure draws, against hand computations; the PNGs are real images."""

import math
import sys

import numpy as np
import pytest
import torch
from matplotlib.colors import LogNorm
from PIL import Image
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from conftest import REPO, TINY_MAE
from livt_hf.mae import new_vitmae
from livt_hf.metrics import per_class_accuracy
from livt_hf.metrics.calibration import reliability_bins
from livt_hf.plots import (
    confusion_matrix,
    confusion_matrix_figure,
    mae_reconstruction_figure,
    mae_reconstruction_panels,
    per_class_accuracy_figure,
    plot_confusion_matrix,
    plot_mae_reconstructions,
    plot_per_class_accuracy,
    plot_reliability,
    plot_training_curves,
    reliability_figure,
    training_curves,
    training_curves_figure,
    unnormalize_patch_predictions,
)

# --- reliability ---------------------------------------------------------------------------------------------------


def test_reliability_bins_by_hand():
    # 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]; 0 joins the first bin; .25 and .75 sit on edges (lo, hi]
    confidence = np.array([0.0, 0.25, 0.75, 0.7, 0.6, 1.0, 1.0])
    correct = np.array([1, 0, 1, 1, 0, 1, 0])
    cfd, acc, counts = reliability_bins(confidence, correct, num_bins=4)
    assert counts.tolist() == [2, 0, 3, 2]
    np.testing.assert_allclose(cfd, [0.125, np.nan, 2.05 / 3, 1.0])
    np.testing.assert_allclose(acc, [0.5, np.nan, 2 / 3, 0.5])


def test_reliability_figure_draws_the_bins_and_the_ece():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.3, 0.7], [0.6, 0.4], [0.75, 0.25]])
    labels = np.array([0, 0, 0, 1, 1, 0])
    # top-1: 1.0 ✓, 1.0 ✗ → bin 3; 0.5 ✓ (tie → class 0) → bin 1; 0.7 ✓, 0.6 ✗, 0.75 ✓ → bin 2; bin 0: none
    fig = reliability_figure(probs, labels, num_bins=4)
    ax = fig.axes[0]
    accuracy, gap = ax.containers
    assert [bar.get_x() for bar in accuracy] == [0.25, 0.5, 0.75]
    np.testing.assert_allclose([bar.get_height() for bar in accuracy], [1.0, 2 / 3, 0.5])
    np.testing.assert_allclose([bar.get_y() for bar in gap], [1.0, 2 / 3, 0.5])
    np.testing.assert_allclose([bar.get_height() for bar in gap], [0.5 - 1.0, 2.05 / 3 - 2 / 3, 1.0 - 0.5])
    ece = (1 * 0.5 + 3 * 0.05 / 3 + 2 * 0.5) / 6
    assert f"ECE = {100 * ece:.2f}%" in ax.get_title()


# --- confusion matrix ----------------------------------------------------------------------------------------------

LABELS = np.array([0, 0, 0, 1, 1, 2])
PREDICTIONS = np.array([0, 0, 1, 1, 2, 2])  # class 3 has no image


def test_confusion_matrix_by_hand():
    counts = [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert confusion_matrix(PREDICTIONS, LABELS, 4).tolist() == counts
    rows = confusion_matrix(PREDICTIONS, LABELS, 4, normalize=True)
    np.testing.assert_allclose(rows, [[2 / 3, 1 / 3, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(np.diag(rows)[:3], per_class_accuracy(PREDICTIONS, LABELS, 4)[:3])


@pytest.mark.parametrize("normalize, vmin, vmax, word", [(True, 1 / 3, 1.0, "row-normalised"), (False, 1, 2, "counts")])
def test_confusion_matrix_figure_masks_zeros_on_a_log_scale(normalize, vmin, vmax, word):
    ax = confusion_matrix_figure(PREDICTIONS, LABELS, ["a", "b", "c", "d"], normalize).axes[0]
    image = ax.get_images()[0]
    drawn = image.get_array()
    assert drawn.mask.tolist() == (confusion_matrix(PREDICTIONS, LABELS, 4) == 0).tolist()
    assert isinstance(image.norm, LogNorm)
    assert (image.norm.vmin, image.norm.vmax) == pytest.approx((vmin, vmax))
    assert word in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c", "d"]  # rows in the given order


# --- per-class accuracy --------------------------------------------------------------------------------------------


def test_per_class_accuracy_figure_groups_points_and_marks_thresholds():
    counts = [500, 120, 100, 30, 20, 19, 5]  # many: > 100; medium: 20 … 100; few: < 20
    acc = [0.9, 0.8, 0.7, 0.6, np.nan, 0.3, 0.1]  # class 4 had no test image
    names = [f"c{i}" for i in range(7)]
    ax = per_class_accuracy_figure(acc, counts, names).axes[0]
    assert ax.get_xscale() == "log"
    points = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert points == {
        "many": [[500, 90], [120, 80]],
        "medium": [[100, 70], [30, 60]],
        "few": [[19, 30], [5, 10]],
    }
    assert [(t.get_text(), t.xy) for t in ax.texts] == [
        ("c0", (500, 90)), ("c1", (120, 80)), ("c2", (100, 70)), ("c3", (30, 60)), ("c5", (19, 30)), ("c6", (5, 10))
    ]
    assert sorted(line.get_xdata()[0] for line in ax.get_lines()) == [20, 100]
    with pytest.raises(ValueError, match="no training image"):
        per_class_accuracy_figure([0.5, 0.5], [10, 0], ["a", "b"])


# --- MAE reconstructions -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mae(tiny_mae_dir):
    return ViTMAEForPreTraining.from_pretrained(tiny_mae_dir)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # no pixel is exactly 0


def test_unnormalize_patch_predictions_restores_each_patch():
    target = torch.randn(2, 16, 49, dtype=torch.float64) * torch.rand(2, 16, 1) * 3 + torch.randn(2, 16, 1)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    torch.testing.assert_close(unnormalize_patch_predictions((target - mean) / (var + 1e-6).sqrt(), target), target)
    standard = torch.randn(2, 16, 49, dtype=torch.float64)
    standard = (standard - standard.mean(-1, keepdim=True)) / standard.std(-1, keepdim=True)  # mean 0, var 1
    restored = unnormalize_patch_predictions(standard, target)
    torch.testing.assert_close(restored.mean(-1, keepdim=True), mean)
    torch.testing.assert_close(restored.var(-1, keepdim=True), var + 1e-6)


def test_mae_panels_mask_and_paste_exactly(tiny_mae, images):
    panels = mae_reconstruction_panels(tiny_mae, images, seed=0)
    masked_patch = tiny_mae.patchify(panels["mask"])[..., 0]  # (N, 16), 1 = hidden
    assert (masked_patch.sum(-1) == 0.75 * 16).all()  # exactly mask_ratio of each image's patches
    hidden = panels["mask"].bool()
    assert torch.equal(panels["masked"] == 0, hidden)  # zeroed exactly on the hidden patches …
    assert torch.equal(panels["masked"][~hidden], images[~hidden])  # … and untouched elsewhere
    assert torch.equal(panels["pasted"][~hidden], images[~hidden])
    assert torch.equal(panels["pasted"][hidden], panels["reconstruction"][hidden])
    assert torch.equal(panels["original"], images)


def test_mae_panels_undo_norm_pix_loss(tiny_mae, tiny_mae_dir, images):
    raw_model = ViTMAEForPreTraining.from_pretrained(tiny_mae_dir, norm_pix_loss=False)  # same weights
    raw = tiny_mae.patchify(mae_reconstruction_panels(raw_model, images)["reconstruction"])
    shown = tiny_mae.patchify(mae_reconstruction_panels(tiny_mae, images)["reconstruction"])
    target = tiny_mae.patchify(images)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    torch.testing.assert_close(shown, raw * (var + 1e-6).sqrt() + mean)


def test_mae_panels_are_seeded_and_keep_the_training_mode(tiny_mae, images):
    tiny_mae.train()
    first = mae_reconstruction_panels(tiny_mae, images, seed=0)
    again = mae_reconstruction_panels(tiny_mae, images, seed=0)
    assert tiny_mae.training
    assert all(torch.equal(first[key], again[key]) for key in first)
    tiny_mae.eval()
    other = mae_reconstruction_panels(tiny_mae, images, seed=1)
    assert not tiny_mae.training
    assert not torch.equal(first["mask"], other["mask"])


@pytest.mark.parametrize("channels", [1, 3])
def test_mae_figure_shows_unnormalised_images(channels):
    model = new_vitmae(ViTMAEConfig(**TINY_MAE | {"num_channels": channels}))
    images = torch.randn(2, channels, 28, 28, generator=torch.Generator().manual_seed(1))
    mean, std = [0.2, 0.4, 0.6][:channels], [0.3, 0.2, 0.1][:channels]
    panels = mae_reconstruction_panels(model, images)
    fig = mae_reconstruction_figure(panels, mean, std)
    assert len(fig.axes) == 2 * 4
    original = fig.axes[3].get_images()[0].get_array()  # row 0, column "original"
    expected = (images[0] * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)).clamp(0, 1)
    expected = expected[0] if channels == 1 else expected.permute(1, 2, 0)
    np.testing.assert_allclose(np.asarray(original), expected.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="one mean and std per channel"):
        mae_reconstruction_figure(panels, [0.5] * (channels + 1), [0.5] * (channels + 1))


# --- training curves -----------------------------------------------------------------------------------------------

HISTORY = [
    {"loss": 2.0, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 10},
    {"eval_loss": 1.5, "eval_accuracy": 0.4, "epoch": 0.5, "step": 10},
    {"loss": 1.0, "grad_norm": 0.5, "learning_rate": 5e-4, "epoch": 1.0, "step": 20},
    {"eval_loss": 1.2, "eval_accuracy": 0.6, "epoch": 1.0, "step": 20},
    {"train_runtime": 3.0, "train_loss": 1.5, "epoch": 1.0, "step": 20},  # end-of-training summary
]


def test_training_curves_by_hand():
    assert training_curves(HISTORY) == {
        "loss": ([10, 20], [2.0, 1.0]),
        "eval_loss": ([10, 20], [1.5, 1.2]),
        "eval_accuracy": ([10, 20], [0.4, 0.6]),
        "learning_rate": ([10, 20], [1e-3, 5e-4]),
    }
    fig = training_curves_figure(HISTORY)
    loss_ax, lr_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["training loss", "eval loss"]
    assert acc_ax.get_lines()[0].get_ydata().tolist() == [0.4, 0.6]
    assert lr_ax.get_lines()[0].get_ydata().tolist() == [1e-3, 5e-4]


def test_training_curves_without_evaluation():
    train_only = [entry for entry in HISTORY if "eval_loss" not in entry]
    assert set(training_curves(train_only)) == {"loss", "learning_rate"}
    fig = training_curves_figure(train_only)
    assert len(fig.axes) == 2  # no accuracy axis
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["training loss"]


# --- the PNG files -------------------------------------------------------------------------------------------------


def test_every_plot_writes_a_png(tmp_path, tiny_mae, images):
    import matplotlib.pyplot as plt

    figures_before = plt.get_fignums()
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, 50)
    paths = [
        plot_per_class_accuracy([0.9, 0.5, 0.2], [300, 40, 6], ["a", "b", "c"], tmp_path / "acc.png", dpi=40),
        plot_reliability(probs, labels, tmp_path / "reliability.png", dpi=40),
        plot_confusion_matrix(probs.argmax(-1), labels, list("abcd"), tmp_path / "confusion.png", dpi=40),
        plot_mae_reconstructions(mae_reconstruction_panels(tiny_mae, images), tmp_path / "mae" / "recon.png", [0.5],
                                 [0.5], dpi=40),
        plot_training_curves(HISTORY, tmp_path / "curves.png", dpi=40),
    ]
    for path in paths:
        assert path.is_file()
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 0
            assert len(image.convert("L").getcolors(maxcolors=math.prod(image.size))) > 2  # something was drawn
    assert plt.get_fignums() == figures_before  # nothing registered with pyplot


def test_every_process_runs_the_reconstruction_forward(tmp_path, monkeypatch):
    """Under FSDP a forward gathers the weights from every process: the pretraining script's reconstructions must
    run on every process, not only on process 0 (which would then wait for processes that have exited)."""
    monkeypatch.syspath_prepend(str(REPO))
    import run_pretrain_mae
    from livt_hf.trainer import MAEPretrainingTrainer

    reconstruction_forwards = []
    forward = ViTMAEForPreTraining.forward

    def spy(self, *args, noise=None, **kwargs):
        reconstruction_forwards.extend([noise] if noise is not None else [])  # training and eval draw their own
        return forward(self, *args, noise=noise, **kwargs)

    monkeypatch.setattr(ViTMAEForPreTraining, "forward", spy)
    monkeypatch.setattr(MAEPretrainingTrainer, "is_world_process_zero", lambda self: False)  # process 1 of 2
    monkeypatch.setattr(sys, "argv", [
        "run_pretrain_mae.py", "--max_per_class", "10", "--imbalance_ratio", "2", "--validation_split", "0.2",
        "--num_train_epochs", "1", "--min_train_steps", "0", "--use_cpu", "1", "--report_to", "none",
        "--output_dir", str(tmp_path / "mae"),
        "--hidden_size", "16", "--num_hidden_layers", "1", "--num_attention_heads", "1", "--intermediate_size", "32",
        "--decoder_hidden_size", "16", "--decoder_num_hidden_layers", "1", "--decoder_num_attention_heads", "1",
        "--decoder_intermediate_size", "32",
    ])  # fmt: skip
    run_pretrain_mae.main()
    assert len(reconstruction_forwards) == 1 and reconstruction_forwards[0].shape[0] == 4  # four validation images
    assert not (tmp_path / "mae" / "plots").exists()  # drawn by process 0 only
