"""Calibration metrics as defined in the UniMix supplement (Eq. D.2–D.6), on class-probability matrices (N, C).

Bin convention: equal-width bins are (lo, hi] as in LiVT's code, with a confidence of exactly 0 in the first bin;
a confidence of exactly 1.0 falls in the last bin (0.9333…, 1]. torchmetrics uses [lo, hi) instead, which moves
only confidences that sit exactly on an inner edge.

Which probabilities to pass (`probabilities_from_logits`):
- softmax-family models (ce, bal_ce, la, focal, cb, ldam): softmax(z).
- sigmoid-family models (bce, bal_bce, nt_bce, nt_bce_bal): σ(z_c) is a one-vs-rest posterior for class c; they do not sum to 1,
  so we renormalise: p_c = σ(z_c) / Σ_k σ(z_k). The ranking (and so the prediction) is that of z, and for a
  well-fitted model the mass concentrates where σ(z_c) ≈ 1, so the top-1 confidence stays close to σ(z_top).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..losses import SIGMOID_LOSSES


def class_probabilities(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Differentiable class probabilities (N, C) for the model's loss family (see the module docstring)."""
    if loss in SIGMOID_LOSSES:
        p = torch.sigmoid(logits)
        return p / p.sum(-1, keepdim=True)
    return torch.softmax(logits, -1)


def probabilities_from_logits(
    logits: np.ndarray | torch.Tensor, loss: str, temperature: float = 1.0
) -> np.ndarray:
    """Class probabilities (N, C) of logits / temperature, as a float64 array."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    return class_probabilities(z, loss).numpy()


def fit_logit_scaling(
    logits: np.ndarray | torch.Tensor, labels: np.ndarray, loss: str, class_biases: bool = False
) -> tuple[float, torch.Tensor | None]:
    """The T > 0 (and, with `class_biases`, one bias per class: Alexandari et al. 2020's bias-corrected temperature
    scaling) minimising the NLL of the loss family's probabilities of z / T + b. Fit on validation, never on test.

    When every image is predicted right the NLL falls without bound as T → 0 (a small validation split of an easy
    set): nothing can be fitted, so T = 1 and b = 0 are returned, with a warning."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels))
    if bool((z.argmax(-1) == y).all()):
        warnings.warn(
            f"All {len(y)} validation images are predicted right, so the NLL has no minimum (it falls as T → 0) and "
            "no temperature can be fitted: T = 1 (no scaling). A larger validation split (--validation_split) lets "
            "it be fitted.",
            stacklevel=2,
        )
        return 1.0, torch.zeros(z.shape[1], dtype=torch.float64) if class_biases else None
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    biases = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=class_biases)
    params = [log_t, biases] if class_biases else [log_t]
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=500, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        p = class_probabilities(z / log_t.exp() + biases, loss)
        value = -p[torch.arange(len(y)), y].clamp_min(1e-12).log().mean()
        value.backward()
        return value

    optimizer.step(nll)
    return float(log_t.detach().exp()), biases.detach() if class_biases else None


def fit_temperature(logits: np.ndarray | torch.Tensor, labels: np.ndarray, loss: str) -> float:
    """Post-hoc temperature scaling (Guo et al. 2017)."""
    return fit_logit_scaling(logits, labels, loss)[0]


def _equal_width_bins(confidence: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin index of each confidence for (lo, hi] bins on [0, 1]; 0 goes to bin 0."""
    return np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, num_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean confidence, accuracy (mean of `correct`) and count of each equal-width (lo, hi] bin, the quantities a
    reliability diagram draws and ECE / MCE / SCE weigh; the means are NaN for an empty bin."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    bins = _equal_width_bins(confidence, num_bins)
    counts = np.bincount(bins, minlength=num_bins)
    filled = counts > 0

    def bin_mean(values: np.ndarray) -> np.ndarray:
        sums = np.bincount(bins, weights=values, minlength=num_bins)
        return np.divide(sums, counts, out=np.full(num_bins, np.nan), where=filled)

    return bin_mean(confidence), bin_mean(correct), counts


def _binned_gaps(confidence: np.ndarray, correct: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """|acc − cfd| and the count of each non-empty equal-width bin."""
    cfd, acc, counts = reliability_bins(confidence, correct, num_bins)
    filled = counts > 0
    return np.abs(acc[filled] - cfd[filled]), counts[filled]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """ECE (Eq. D.2): Σ_m |B_m|/N · |acc(B_m) − cfd(B_m)| over top-1 confidences."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    gaps, counts = _binned_gaps(probs.max(-1), (probs.argmax(-1) == labels).astype(float), num_bins)
    return float((gaps * counts).sum() / len(labels))


def maximum_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """MCE (Eq. D.3): the largest |acc − cfd| over non-empty bins."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    gaps, _ = _binned_gaps(probs.max(-1), (probs.argmax(-1) == labels).astype(float), num_bins)
    return float(gaps.max())


def static_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """SCE (Eq. D.5): per class, equal-width bins of p_c against 1(y = c); Σ_b n_bc/N · gap, averaged over classes."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    n, num_classes = probs.shape
    total = 0.0
    for c in range(num_classes):
        gaps, counts = _binned_gaps(probs[:, c], (labels == c).astype(float), num_bins)
        total += (gaps * counts).sum() / n
    return float(total / num_classes)


def thresholded_adaptive_calibration_error(
    probs: np.ndarray, labels: np.ndarray, num_ranges: int = 15, threshold: float = 1e-3
) -> float:
    """TACE (Eq. D.4): per class, the probabilities above `threshold` sorted and cut into `num_ranges` ranges of
    equal count (⌊n/R⌋ or ⌈n/R⌉ each); 1/(C·R) Σ_c Σ_r |acc − cfd|. `threshold=0` gives ACE.

    A class with fewer kept probabilities than ranges uses one range per probability.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    num_classes = probs.shape[1]
    total = 0.0
    for c in range(num_classes):
        keep = probs[:, c] > threshold if threshold > 0 else np.ones(len(labels), bool)
        p, hit = probs[keep, c], (labels[keep] == c).astype(float)
        order = np.argsort(p, kind="stable")
        ranges = np.array_split(order, min(num_ranges, len(order))) if len(order) else []
        total += sum(abs(hit[r].mean() - p[r].mean()) for r in ranges)
    return float(total / (num_classes * num_ranges))


def adaptive_calibration_error(probs: np.ndarray, labels: np.ndarray, num_ranges: int = 15) -> float:
    """ACE: TACE with no threshold."""
    return thresholded_adaptive_calibration_error(probs, labels, num_ranges, threshold=0.0)


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score as Eq. D.6 writes it: 1/(N·C) Σ_i Σ_c (1(y_i = c) − p_ic)² (note the 1/C the usual form lacks)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    onehot = np.eye(probs.shape[1])[labels]
    return float(((onehot - probs) ** 2).mean())


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    """Mean −log p_y (probabilities floored at eps)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], eps)).mean())


def calibration_metrics(
    probs: np.ndarray, labels: np.ndarray, num_bins: int = 15, tace_threshold: float = 1e-3
) -> dict[str, float]:
    """Every calibration metric of the UniMix supplement, plus NLL."""
    return {
        "ece": expected_calibration_error(probs, labels, num_bins),
        "mce": maximum_calibration_error(probs, labels, num_bins),
        "ace": adaptive_calibration_error(probs, labels, num_bins),
        "tace": thresholded_adaptive_calibration_error(probs, labels, num_bins, tace_threshold),
        "sce": static_calibration_error(probs, labels, num_bins),
        "brier": brier_score(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
    }
