"""Prior-aware classification losses. Each formula lives here once; the config names which one a model trains with.

All losses take logits z (N, C) and targets that are class ids (N,) or soft targets (N, C) whose rows sum to 1
(mixup/cutmix). Reduction: sum over classes, mean over the batch (as LiVT's Bal-BCE).

- ``ce``:      softmax cross-entropy.
- ``bal_ce``:  Bayias / balanced softmax: CE on z + τ·(log π_train − log π_test)  (UniMix Eq. 10; with a uniform
               test prior, z + τ·(log π + log C)).
- ``bce``:     sigmoid binary cross-entropy, one binary problem per class.
- ``bal_bce``: LiVT Thm. 2/3: BCE on z + τ·B, B = (log π_s − log π_t) − (log(1 − π_s) − log(1 − π_t));
               uniform test prior gives B = log π − log(1 − π) + log(C − 1).

The biases are added only during training: at test time argmax z is the prediction for the test prior the
loss was built with (logit adjustment, Menon et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "bal_ce", "bce", "bal_bce")
PRIOR_AWARE_LOSSES = ("bal_ce", "bal_bce")


def train_prior(class_counts: Sequence[int]) -> torch.Tensor:
    """π_s from per-class image counts (float64, so log(1 − π) stays exact for a dominant head class)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64, device="cpu")
    if counts.ndim != 1 or len(counts) < 2:
        raise ValueError(f"class_counts must list one count per class for at least 2 classes, got {class_counts}.")
    if (counts <= 0).any():
        empty = torch.nonzero(counts <= 0).flatten().tolist()
        raise ValueError(
            f"Classes {empty} have no training images: their prior π = 0 makes log π infinite. "
            "Remove those classes or add images for them."
        )
    return counts / counts.sum()


def resolve_test_prior(num_classes: int, prior: Sequence[float] | None = None) -> torch.Tensor:
    """π_t: uniform (a balanced test set) unless given; a given prior must be positive and sum to 1."""
    if prior is None:
        return torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64, device="cpu")
    prior_t = torch.as_tensor(prior, dtype=torch.float64, device="cpu")
    if prior_t.shape != (num_classes,) or (prior_t <= 0).any() or abs(prior_t.sum().item() - 1) > 1e-6:
        raise ValueError(
            f"test_prior must hold {num_classes} positive probabilities summing to 1, got {list(prior)}."
        )
    return prior_t


def bal_ce_bias(pi_s: torch.Tensor, pi_t: torch.Tensor) -> torch.Tensor:
    """Bayias: log π_s − log π_t."""
    return pi_s.log() - pi_t.log()


def bal_bce_bias(pi_s: torch.Tensor, pi_t: torch.Tensor) -> torch.Tensor:
    """LiVT Thm. 3: (log π_s − log π_t) − (log(1 − π_s) − log(1 − π_t))."""
    return (pi_s.log() - pi_t.log()) - ((-pi_s).log1p() - (-pi_t).log1p())


_BIASES = {"bal_ce": bal_ce_bias, "bal_bce": bal_bce_bias}


def logit_bias(
    loss: str, class_counts: Sequence[int] | None, test_prior_values: Sequence[float] | None = None
) -> torch.Tensor | None:
    """The per-class bias B a loss adds to the logits during training (None for the plain losses)."""
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; choose one of {LOSSES}.")
    if loss not in _BIASES:
        return None
    if class_counts is None:
        raise ValueError(f"Loss {loss!r} needs the train class counts (config.class_counts).")
    pi_s = train_prior(class_counts)
    return _BIASES[loss](pi_s, resolve_test_prior(len(pi_s), test_prior_values))


def as_probabilities(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids (N,) → one-hot (N, C); soft targets (N, C) pass through. Either way float.

    Class ids are range-checked here only on the CPU: on an accelerator the check would stall every step on a
    host-device sync. Every split's labels are checked when the splits are built (`class_counts`).
    """
    if targets.ndim == 1:
        if targets.dtype.is_floating_point:
            raise ValueError("Class-id targets must be integers; soft targets must have shape (N, C).")
        if targets.device.type == "cpu" and targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
            raise ValueError(f"Target class ids must lie in 0 … {num_classes - 1}.")
        return torch.zeros(len(targets), num_classes, device=targets.device).scatter_(1, targets[:, None], 1.0)
    if targets.shape[-1] != num_classes:
        raise ValueError(f"Soft targets have {targets.shape[-1]} classes, the logits {num_classes}.")
    return targets.float()


class LogitAdjustedLoss(nn.Module):
    """CE (softmax) or BCE (sigmoid) on logits + τ·bias; `bias=None` gives the plain loss."""

    def __init__(self, activation: str, bias: torch.Tensor | None = None, tau: float = 1.0):
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}.")
        self.activation = activation
        self.tau = tau
        # A plain attribute, not a buffer: the config rebuilds it, and HF's meta-device loading would wipe a
        # non-persistent buffer. It follows the logits' device on first use.
        self.bias = None if bias is None else bias.float()

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.bias is None:
            return logits
        if self.bias.device != logits.device:
            self.bias = self.bias.to(logits.device)
        return logits + self.tau * self.bias

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = self.adjust(logits)
        y = as_probabilities(targets, z.shape[-1])
        if self.activation == "sigmoid":
            return F.binary_cross_entropy_with_logits(z, y, reduction="sum") / z.shape[0]
        return -(y * F.log_softmax(z, dim=-1)).sum(-1).mean()

    def extra_repr(self) -> str:
        return f"activation={self.activation}, tau={self.tau}, adjusted={self.bias is not None}"


def build_loss(
    loss: str, class_counts: Sequence[int] | None = None, tau: float = 1.0, test_prior: Sequence[float] | None = None
) -> LogitAdjustedLoss:
    """The loss named `loss` (one of `LOSSES`) for a train set with `class_counts` and a test prior."""
    bias = logit_bias(loss, class_counts, test_prior)
    if bias is None and tau != 1.0:
        raise ValueError(f"τ = {tau} has no effect on loss {loss!r}; τ applies to {PRIOR_AWARE_LOSSES}.")
    return LogitAdjustedLoss("sigmoid" if loss.endswith("bce") else "softmax", bias, tau)
