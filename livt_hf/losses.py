"""Prior-aware classification losses. Each formula lives here once; the config names which one a model trains with.

All losses take logits z (N, C) and targets that are class ids (N,) or soft targets (N, C) whose rows sum to 1
(mixup/cutmix); every loss accepts both. Reduction: sum over classes, mean over the batch (as LiVT's Bal-BCE).

Softmax family (predict with softmax(z)):
- ``ce``:      cross-entropy.
- ``bal_ce``:  Bayias / balanced softmax: CE on z + τ·(log π_train − log π_test)  (UniMix Eq. 10; with a uniform
               test prior, z + τ·(log π + log C)). UniMix §3.2 writes the test-prior margin as log π + log π',
               a sign slip: Bayes' rule divides by the train prior and multiplies by the test prior.
- ``la``:      logit adjustment (Menon et al. 2021): CE on z + τ·log π_train; it assumes a balanced test set and
               equals ``bal_ce`` then (softmax ignores the constant log C).
- ``focal``:   focal loss (Lin et al. 2017): −Σ_c y_c (1 − p_c)^γ log p_c.
- ``cb``:      class-balanced CE (Cui et al. 2019): class weights (1 − β) / (1 − β^n_c), scaled to sum to C.
- ``ldam``:    LDAM (Cao et al. 2019): CE on s·(cos − y ⊙ Δ), Δ_c ∝ n_c^(−1/4) with max Δ = max_margin; needs the
               cosine head. With ``drw_epoch`` (any softmax loss but ``cb``), deferred re-weighting switches the
               class-balanced weights on from that epoch.
Sigmoid family (one binary problem per class):
- ``bce``:     binary cross-entropy.
- ``bal_bce``: LiVT Thm. 2/3: BCE on z + τ·B, B = (log π_s − log π_t) − (log(1 − π_s) − log(1 − π_t));
               uniform test prior gives B = log π − log(1 − π) + log(C − 1).
- ``nt_bce``:  negative-tolerant BCE (LiVT Supp. E.3): −Σ_c [y_c log σ(z_c) + (1 − y_c)/λ · log(1 − σ(λ z_c))].
- ``nt_bce_bal``: NT-BCE on z + τ·B with Bal-BCE's full bias (test-prior terms included).

The biases are added only during training: at test time argmax z is the prediction for the test prior the
loss was built with (logit adjustment, Menon et al. 2021). `model_prior` and `shift_logits` move the logits to
another test prior (`livt_hf.prior_shift`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .options import resolve_options

LOSSES = ("ce", "bal_ce", "la", "focal", "cb", "ldam", "bce", "bal_bce", "nt_bce", "nt_bce_bal")
SIGMOID_LOSSES = ("bce", "bal_bce", "nt_bce", "nt_bce_bal")
PRIOR_AWARE_LOSSES = ("bal_ce", "la", "bal_bce", "nt_bce_bal")  # the losses τ applies to
TEST_PRIOR_LOSSES = ("bal_ce", "bal_bce", "nt_bce_bal")  # the losses a given test prior applies to

# Loss hyper-parameters, their defaults, and the losses that use each (a changed value elsewhere is an error).
LOSS_DEFAULTS = {
    "focal_gamma": 2.0,
    "cb_beta": 0.9999,
    "ldam_max_margin": 0.5,
    "ldam_scale": 30.0,
    "drw_epoch": None,
    "negative_tolerance": 1.0,
}
_USED_BY = {
    "focal_gamma": ("focal",),
    "cb_beta": ("cb", "drw"),
    "ldam_max_margin": ("ldam",),
    "ldam_scale": ("ldam",),
    "drw_epoch": ("ce", "bal_ce", "la", "focal", "ldam"),
    "negative_tolerance": ("nt_bce", "nt_bce_bal"),
}


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


def la_bias(pi_s: torch.Tensor, pi_t: torch.Tensor) -> torch.Tensor:
    """Logit adjustment: log π_s (a balanced test set is assumed, so π_t is not used)."""
    return pi_s.log()


_BIASES = {"bal_ce": bal_ce_bias, "la": la_bias, "bal_bce": bal_bce_bias, "nt_bce_bal": bal_bce_bias}


def logit_bias(
    loss: str, class_counts: Sequence[int] | None, test_prior_values: Sequence[float] | None = None
) -> torch.Tensor | None:
    """The per-class bias B a loss adds to the logits during training (None for the losses without one)."""
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; choose one of {LOSSES}.")
    if loss not in _BIASES:
        return None
    if class_counts is None:
        raise ValueError(f"Loss {loss!r} needs the train class counts (config.class_counts).")
    if loss == "la" and test_prior_values is not None:
        raise ValueError("Loss 'la' assumes a balanced test set; for a known test prior use 'bal_ce'.")
    pi_s = train_prior(class_counts)
    return _BIASES[loss](pi_s, resolve_test_prior(len(pi_s), test_prior_values))


def prior_head_bias(
    loss: str, class_counts: Sequence[int], tau: float = 1.0, test_prior_values: Sequence[float] | None = None
) -> torch.Tensor:
    """The head bias b with which a model whose features are still zero predicts the train prior in training:
    σ(b + τB) = π_s for the sigmoid losses, softmax(b + τB) = π_s for the softmax ones (B: the loss's bias).

    Lin et al. (2017)'s prior initialisation, adjusted for the loss's bias. A zero sigmoid head starts every class at
    σ(τB) instead (Bal-BCE, 10 classes: the head class at 0.86 for every image), and its first updates go into
    undoing that. For Bal-BCE / Bal-CE with a uniform test prior and τ = 1, b is the same for every class.
    """
    pi_s = train_prior(class_counts)
    start = torch.logit(pi_s) if loss in SIGMOID_LOSSES else pi_s.log()
    bias = logit_bias(loss, class_counts, test_prior_values)
    return start if bias is None else start - tau * bias


def model_prior(
    loss: str, class_counts: Sequence[int], tau: float = 1.0, trained_test_prior: Sequence[float] | None = None
) -> torch.Tensor:
    """π_m, the prior a model's raw logits correspond to (float64, sums to 1 for softmax losses; the formulas are
    explained in `livt_hf.prior_shift`)."""
    pi_s = train_prior(class_counts)
    if loss not in PRIOR_AWARE_LOSSES:
        return pi_s
    pi_t = resolve_test_prior(len(pi_s), None if loss == "la" else trained_test_prior)
    if loss in SIGMOID_LOSSES:
        return torch.sigmoid((1 - tau) * torch.logit(pi_s) + tau * torch.logit(pi_t))
    mixed = torch.exp((1 - tau) * pi_s.log() + tau * pi_t.log())
    return mixed / mixed.sum()


def prior_shift_bias(loss: str, from_prior: torch.Tensor, to_prior: torch.Tensor) -> torch.Tensor:
    """What `shift_logits` subtracts: the loss family's bias between the two priors."""
    return (bal_bce_bias if loss in SIGMOID_LOSSES else bal_ce_bias)(from_prior, to_prior)


def subtract_shift(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """logits − bias in float32 or wider: in bf16 (`--bf16_full_eval`) a shift of a few nats is off by ~0.01."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return z - bias.to(z.device, z.dtype)


def shift_logits(logits: torch.Tensor, loss: str, from_prior: torch.Tensor, to_prior: torch.Tensor) -> torch.Tensor:
    """Logits for `to_prior` from logits that answer for `from_prior`."""
    return subtract_shift(logits, prior_shift_bias(loss, from_prior, to_prior))


def effective_number_weights(class_counts: Sequence[int], beta: float) -> torch.Tensor:
    """Class-balanced weights (1 − β) / (1 − β^n_c), scaled to sum to C (Cui et al. 2019)."""
    if not 0 <= beta < 1:
        raise ValueError(f"cb_beta must be in [0, 1), got {beta}.")
    counts = train_prior(class_counts).new_tensor(class_counts)
    weights = (1 - beta) / (1 - beta**counts)
    return weights * len(weights) / weights.sum()


def ldam_margins(class_counts: Sequence[int], max_margin: float) -> torch.Tensor:
    """Δ_c ∝ n_c^(−1/4), scaled so the rarest class gets `max_margin` (Cao et al. 2019)."""
    margins = train_prior(class_counts).new_tensor(class_counts) ** -0.25
    return margins * (max_margin / margins.max())


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


def softmax_cross_entropy(
    z: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None = None, focal_gamma: float = 0.0
) -> torch.Tensor:
    """−Σ_c w_c (1 − p_c)^γ y_c log p_c, mean over the batch (γ = 0, w = 1: plain CE)."""
    log_p = F.log_softmax(z, dim=-1)
    per_class = -y * log_p
    if focal_gamma:
        per_class = per_class * (1 - log_p.exp()).pow(focal_gamma)
    if class_weight is not None:
        per_class = per_class * class_weight
    return per_class.sum(-1).mean()


def sigmoid_cross_entropy(z: torch.Tensor, y: torch.Tensor, negative_tolerance: float = 1.0) -> torch.Tensor:
    """−Σ_c [y_c log σ(z_c) + (1 − y_c)/λ · log(1 − σ(λ z_c))], mean over the batch (λ = 1: plain BCE)."""
    lam = negative_tolerance
    per_class = -y * F.logsigmoid(z) - (1 - y) * F.logsigmoid(-lam * z) / lam
    return per_class.sum() / z.shape[0]


class _ConstantsOnLogitsDevice(nn.Module):
    """Per-class constants kept as plain CPU tensors, not buffers: the config rebuilds them, and HF's meta-device
    loading would wipe a non-persistent buffer. They follow the logits' device on first use."""

    def _on(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        value = getattr(self, name)
        if value is not None and value.device != like.device:
            value = value.to(like.device)
            setattr(self, name, value)
        return value

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """z + τ·bias (z itself for losses without a bias), in float32."""
        logits = logits.float()
        bias = self._on("bias", logits)
        return logits if bias is None else logits + self.tau * bias


class SoftmaxLoss(_ConstantsOnLogitsDevice):
    """ce, bal_ce, la, focal, cb, ldam: softmax cross-entropy on adjusted logits, optionally focal, with LDAM
    margins, or class-weighted from epoch `weight_from_epoch` on (0 for cb; `drw_epoch` for deferred re-weighting;
    `set_epoch` is called by the trainer)."""

    def __init__(
        self,
        bias: torch.Tensor | None = None,
        tau: float = 1.0,
        class_weight: torch.Tensor | None = None,
        weight_from_epoch: int = 0,
        focal_gamma: float = 0.0,
        margins: torch.Tensor | None = None,
        scale: float = 1.0,
    ):
        super().__init__()
        self.bias = None if bias is None else bias.float()
        self.tau, self.focal_gamma, self.scale, self.weight_from_epoch = tau, focal_gamma, scale, weight_from_epoch
        self.class_weight = None if class_weight is None else class_weight.float()
        self.margins = None if margins is None else margins.float()
        self.reweighting = class_weight is not None and weight_from_epoch == 0

    def set_epoch(self, epoch: float) -> None:
        """The class weights apply from epoch `weight_from_epoch` (0-based) on."""
        self.reweighting = self.class_weight is not None and int(epoch) >= self.weight_from_epoch

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = self.adjust(logits)
        y = as_probabilities(targets, z.shape[-1])
        margins = self._on("margins", z)
        if margins is not None:
            z = z - y * margins
        weight = self._on("class_weight", z) if self.reweighting else None
        return softmax_cross_entropy(self.scale * z, y, weight, self.focal_gamma)


class SigmoidLoss(_ConstantsOnLogitsDevice):
    """bce, bal_bce, nt_bce, nt_bce_bal: per-class binary cross-entropy on adjusted logits."""

    def __init__(self, bias: torch.Tensor | None = None, tau: float = 1.0, negative_tolerance: float = 1.0):
        super().__init__()
        if not negative_tolerance > 0:
            raise ValueError(f"negative_tolerance (λ) must be > 0, got {negative_tolerance}.")
        self.bias = None if bias is None else bias.float()
        self.tau, self.negative_tolerance = tau, negative_tolerance

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = self.adjust(logits)
        return sigmoid_cross_entropy(z, as_probabilities(targets, z.shape[-1]), self.negative_tolerance)


def build_loss(
    loss: str,
    class_counts: Sequence[int] | None = None,
    tau: float = 1.0,
    test_prior: Sequence[float] | None = None,
    **params,
) -> SoftmaxLoss | SigmoidLoss:
    """The loss named `loss` for a train set with `class_counts`; `params` are the `LOSS_DEFAULTS` keys.

    A τ or a parameter changed from its default for a loss that does not use it is an error, never ignored.
    """
    drw = {"drw"} if params.get("drw_epoch") is not None else set()
    p = resolve_options("loss", params, LOSS_DEFAULTS, _USED_BY, {loss} | drw, f"on loss {loss!r}")
    bias = logit_bias(loss, class_counts, test_prior)
    if loss not in PRIOR_AWARE_LOSSES and tau != 1.0:
        raise ValueError(f"τ = {tau} has no effect on loss {loss!r}; τ applies to {PRIOR_AWARE_LOSSES}.")
    if test_prior is not None and loss not in TEST_PRIOR_LOSSES:
        raise ValueError(f"--test_prior has no effect on loss {loss!r}; it applies to {TEST_PRIOR_LOSSES}.")
    if loss in SIGMOID_LOSSES:
        return SigmoidLoss(bias, tau, p["negative_tolerance"])
    weighted = loss == "cb" or p["drw_epoch"] is not None
    if (weighted or loss == "ldam") and class_counts is None:
        raise ValueError(f"Loss {loss!r} needs the train class counts (config.class_counts).")
    if p["drw_epoch"] is not None and p["drw_epoch"] < 0:
        raise ValueError(f"drw_epoch must be ≥ 0, got {p['drw_epoch']}.")
    return SoftmaxLoss(
        bias,
        tau,
        class_weight=effective_number_weights(class_counts, p["cb_beta"]) if weighted else None,
        weight_from_epoch=p["drw_epoch"] or 0,
        focal_gamma=p["focal_gamma"] if loss == "focal" else 0.0,
        margins=ldam_margins(class_counts, p["ldam_max_margin"]) if loss == "ldam" else None,
        scale=p["ldam_scale"] if loss == "ldam" else 1.0,
    )
