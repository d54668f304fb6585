"""Batch mixing in the training step: mixup / cutmix (LiVT Table 9), Remix, and UniMix (UniMix §3.1, Alg. 1).

Each method turns a batch of images and class ids into mixed images and soft targets, which every loss in
`livt_hf.losses` accepts. Mixing runs on the device inside `BalancedTrainer.compute_loss` (Trainer shares one
collator between training and evaluation, so it cannot live there); evaluation never sees it.

- ``mixup_cutmix``: one factor per batch; mixup (λ ~ Beta(α_m, α_m)) or, with probability `switch_prob`, cutmix
  (a box of area 1 − λ, λ ~ Beta(α_c, α_c), λ corrected to the box actually pasted); partner = the batch reversed.
- ``remix`` (Chou et al. 2020): mixup_cutmix images; the label goes wholly to the minority class when the pair's
  counts differ by ≥ κ and the minority image holds ≥ 1 − τ_r of the mix.
- ``unimix``: one factor per pair, ξ* ~ 𝒰(π_i, π_j, α, α) (Eq. 6): Beta(α, α) shifted by π_j / (π_i + π_j)
  with wrap-around, which puts its mass around that ratio and so on the rarer class of the pair; partners come
  from `PartnerSampler` (Eq. 9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..losses import as_probabilities
from ..options import resolve_options

MIXING_METHODS = ("none", "mixup_cutmix", "remix", "unimix")

# Mixing hyper-parameters, their defaults (LiVT Table 9; UniMix §4 / App. C.1 for CIFAR-like data; Remix's
# paper), and the methods that use each: a value changed for a method that does not use it is an error.
MIXING_DEFAULTS = {
    "mixup_alpha": 0.8,
    "cutmix_alpha": 1.0,
    "mix_switch_prob": 0.5,
    "remix_kappa": 3.0,
    "remix_tau": 0.5,
    "unimix_alpha": 0.5,
    "unimix_tau": -1.0,
    "mix_until_epoch": None,
}
MIXING_USED_BY = {
    "mixup_alpha": ("mixup_cutmix", "remix"),
    "cutmix_alpha": ("mixup_cutmix", "remix"),
    "mix_switch_prob": ("mixup_cutmix", "remix"),
    "remix_kappa": ("remix",),
    "remix_tau": ("remix",),
    "unimix_alpha": ("unimix",),
    "unimix_tau": ("unimix",),
    "mix_until_epoch": ("mixup_cutmix", "remix", "unimix"),
}


def sample_beta(alpha: float, shape: tuple[int, ...] = (), device: torch.device | str = "cpu") -> torch.Tensor:
    """Draws from Beta(α, α) with the global torch RNG (seeded by Trainer). α was checked when the mixer was built:
    the distribution's own argument check reads the tensor on the host, a sync in every step."""
    a = torch.full((), float(alpha), device=device)  # a fill, not a host-to-device copy: no sync in the step
    return torch.distributions.Beta(a, a, validate_args=False).sample(shape)


def unimix_factor(prior_i: torch.Tensor, prior_j: torch.Tensor, alpha: float) -> torch.Tensor:
    """ξ* ~ 𝒰(π_i, π_j, α, α) of UniMix Eq. 6: ξ* = (ξ + π_j / (π_i + π_j)) mod 1, ξ ~ Beta(α, α).

    Eq. 6's density is f(ξ* − s + 1) on [0, s) and f(ξ* − s) on [s, 1] with s = π_j / (π_i + π_j): exactly the
    law of (ξ + s) mod 1. Image i gets weight ξ*, so a head image i paired with a tail image j gets little. Only the
    ratio of the priors matters, so class counts serve as well.
    """
    shift = prior_j / (prior_i + prior_j)
    return torch.remainder(sample_beta(alpha, prior_i.shape, prior_i.device) + shift, 1.0)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box of area ≈ (1 − λ)·H·W at a uniform centre, clipped to the image: (top, bottom, left, right)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = torch.randint(height, ()).item(), torch.randint(width, ()).item()
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def mixup_images(x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """λ·x + (1 − λ)·partner, with λ a number or one factor per image."""
    if isinstance(lam, torch.Tensor):
        lam = lam.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return lam * x + (1 - lam) * partner


def cutmix_images(x: torch.Tensor, partner: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Pastes a box of `partner` into `x`; returns the images and λ corrected to the area kept from `x`."""
    height, width = x.shape[-2:]
    top, bottom, left, right = cutmix_box(height, width, lam)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)


def remix_label_weight(
    lam: torch.Tensor, counts_i: torch.Tensor, counts_j: torch.Tensor, kappa: float, tau: float
) -> torch.Tensor:
    """Remix's weight on label i: 0 if n_i / n_j ≥ κ and λ < τ; 1 if n_i / n_j ≤ 1/κ and 1 − λ < τ; else λ."""
    ratio = counts_i / counts_j
    weight = lam.expand_as(ratio)
    weight = torch.where((ratio >= kappa) & (lam < tau), 0.0, weight)  # where, not a mask write: no device sync
    return torch.where((ratio <= 1 / kappa) & (1 - lam < tau), 1.0, weight)


def mix_targets(y_i: torch.Tensor, y_j: torch.Tensor, weight: torch.Tensor, num_classes: int) -> torch.Tensor:
    """w·onehot(y_i) + (1 − w)·onehot(y_j), one weight per image."""
    weight = weight.to(torch.float32).view(-1, 1)
    return weight * as_probabilities(y_i, num_classes) + (1 - weight) * as_probabilities(y_j, num_classes)


class Mixer:
    """Mixes a training batch with one of `MIXING_METHODS`; `num_classes` and the train `class_counts` fix the
    prior that Remix and UniMix use. Mixing stops from epoch `mix_until_epoch` (UniMix Alg. 1's T1; default:
    never); the `PartnerSampler` of a UniMix run gets the same epoch."""

    def __init__(self, method: str, class_counts: Sequence[int], **params):
        if method not in MIXING_METHODS:
            raise ValueError(f"Unknown --mixing {method!r}; choose one of {MIXING_METHODS}.")
        p = resolve_options("mixing", params, MIXING_DEFAULTS, MIXING_USED_BY, {method}, f"with --mixing {method}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if p[name] < 0:
                raise ValueError(f"--{name} must be ≥ 0 (0 switches it off), got {p[name]}.")
        if method in ("mixup_cutmix", "remix") and p["mixup_alpha"] == 0 and p["cutmix_alpha"] == 0:
            raise ValueError(f"--mixing {method} needs --mixup_alpha or --cutmix_alpha > 0; use --mixing none.")
        if not 0 <= p["mix_switch_prob"] <= 1:
            raise ValueError(f"--mix_switch_prob must be in [0, 1], got {p['mix_switch_prob']}.")
        if p["unimix_alpha"] <= 0:
            raise ValueError(f"--unimix_alpha must be > 0, got {p['unimix_alpha']}.")
        if p["unimix_tau"] > 1:
            raise ValueError(f"--unimix_tau must be ≤ 1 (1: random partners, < 0: tail-favoured), got {p['unimix_tau']}.")
        if p["remix_kappa"] < 1 or not 0 <= p["remix_tau"] <= 1:
            raise ValueError(f"Remix needs κ ≥ 1 and τ in [0, 1], got κ = {p['remix_kappa']}, τ = {p['remix_tau']}.")
        if p["mix_until_epoch"] is not None and p["mix_until_epoch"] < 0:
            raise ValueError(f"--mix_until_epoch must be ≥ 0, got {p['mix_until_epoch']}.")
        self.method, self.params = method, p
        self.counts = torch.as_tensor(class_counts, dtype=torch.float32)
        self.num_classes = len(class_counts)
        self._counts_on: dict[torch.device, torch.Tensor] = {}

    def _counts(self, device: torch.device) -> torch.Tensor:
        """The class counts on `device`, copied once rather than every step (a copy would wait for the GPU)."""
        if device not in self._counts_on:
            self._counts_on[device] = self.counts.to(device)
        return self._counts_on[device]

    def active(self, epoch: float) -> bool:
        until = self.params["mix_until_epoch"]
        return self.method != "none" and (until is None or epoch < until)

    def __call__(self, inputs: dict, epoch: float) -> dict:
        """`inputs` with `pixel_values` mixed and `labels` as soft targets; `partner_*` entries are consumed."""
        partner_x, partner_y = inputs.pop("partner_pixel_values", None), inputs.pop("partner_labels", None)
        if not self.active(epoch):
            return inputs
        x, y = inputs["pixel_values"], inputs["labels"]
        if y.ndim != 1:
            raise ValueError("Mixing needs class ids as labels, got soft targets.")
        if self.method == "unimix":
            if partner_x is None:
                raise ValueError("UniMix needs partner images: train with the PartnerSampler (BalancedTrainer does).")
            counts = self._counts(x.device)
            xi = unimix_factor(counts[y], counts[partner_y], self.params["unimix_alpha"])  # ratios: counts as priors
            return inputs | {"pixel_values": mixup_images(x, partner_x, xi),
                             "labels": mix_targets(y, partner_y, xi, self.num_classes)}
        x_mixed, lam = self._mix_with_reversed(x)
        partner_y = y.flip(0)
        weight = torch.full(y.shape, lam, device=y.device)
        if self.method == "remix":
            counts = self._counts(y.device)
            weight = remix_label_weight(weight, counts[y], counts[partner_y], self.params["remix_kappa"],
                                        self.params["remix_tau"])
        return inputs | {"pixel_values": x_mixed, "labels": mix_targets(y, partner_y, weight, self.num_classes)}

    def _mix_with_reversed(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """timm-style batch mode: one λ for the batch, mixup or cutmix, partner = the batch reversed."""
        p = self.params
        use_cutmix = p["cutmix_alpha"] > 0 and (p["mixup_alpha"] == 0 or torch.rand(()).item() < p["mix_switch_prob"])
        if use_cutmix:
            return cutmix_images(x, x.flip(0), sample_beta(p["cutmix_alpha"]).item())
        lam = sample_beta(p["mixup_alpha"]).item()
        return mixup_images(x, x.flip(0), lam), lam


def smooth_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(1 − ε)·targets + ε / C (Szegedy et al. 2016); ids become one-hot first. Linear, so it commutes with mixing."""
    return (1 - smoothing) * as_probabilities(labels, num_classes) + smoothing / num_classes


__all__ = [
    "MIXING_DEFAULTS",
    "MIXING_METHODS",
    "MIXING_USED_BY",
    "Mixer",
    "cutmix_box",
    "cutmix_images",
    "mix_targets",
    "mixup_images",
    "remix_label_weight",
    "sample_beta",
    "smooth_targets",
    "unimix_factor",
]
