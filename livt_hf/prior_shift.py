"""Adapting a trained model to another test label distribution, known or estimated, without retraining.

A model's raw logits z answer for some prior π_m: the train prior for a plain loss, the test prior it was trained
for with a prior-aware loss (with τ ≠ 1, the geometric mix (1 − τ)·π_s + τ·π_t in log space for softmax losses,
in logit space for sigmoid ones). Moving to π_new subtracts the loss family's own bias formula:
    softmax losses: z − (log π_m − log π_new)                                  (Bayias, UniMix Eq. 10)
    sigmoid losses: z − [(log π_m − log π_new) − (log(1 − π_m) − log(1 − π_new))] (Bal-BCE, LiVT Thm. 3)
For ce / focal / cb / ldam π_m is taken as the train prior (exact for ce; the others reweight or add margins, so
the shift is an approximation for them).

`model_prior` (π_m) and `shift_logits` live in `livt_hf.losses`, next to the bias formulas: the model applies them
in its forward, and the code saved with a checkpoint (`save_pretrained`) is modeling_livt.py with its flat
relative imports only.

An unknown π_new is estimated from unlabelled test predictions by EM (Saerens, Latinne & Decaestecker 2002).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data.long_tail import resample_indices, resampled_test_counts
from .losses import PRIOR_AWARE_LOSSES, resolve_test_prior, shift_logits
from .metrics.calibration import class_probabilities, fit_logit_scaling


def predicted_prior(loss: str, tau: float = 1.0, trained_test_prior: Sequence[float] | None = None) -> str:
    """The label distribution a model's raw logits predict for, in words, for reports (`model_prior` in numbers)."""
    if loss not in PRIOR_AWARE_LOSSES or tau == 0:
        return "the train prior"
    uniform = trained_test_prior is None or loss == "la"
    target = "a uniform test prior" if uniform else f"the test prior {list(trained_test_prior)}"
    return target if tau == 1 else f"{target}, mixed with the train prior by τ = {tau:g}"


def estimate_test_prior(
    probs: np.ndarray, prior: Sequence[float], max_iterations: int = 1000, tolerance: float = 1e-8
) -> np.ndarray:
    """EM estimate of the label distribution of unlabelled samples whose posteriors `probs` (N, C) were computed
    under `prior`: alternate π ← mean of the re-weighted posteriors, posteriors ∝ p · π / prior."""
    probs, prior = np.asarray(probs, dtype=np.float64), np.asarray(prior, dtype=np.float64)
    prior = prior / prior.sum()  # a sigmoid model's π_m need not sum to 1
    estimate = prior.copy()
    for _ in range(max_iterations):
        weighted = probs * (estimate / prior)
        weighted /= weighted.sum(1, keepdims=True)
        new = weighted.mean(0)
        if np.abs(new - estimate).max() < tolerance:
            return new
        estimate = new
    return estimate


@dataclass
class PosteriorCalibration:
    """Calibrated posteriors for EM, under the validation split's prior: z shifted from π_m to π_val, then
    softmax(z / T + b) with T and b fitted on validation (bias-corrected temperature scaling). EM is only as good
    as its posteriors; uncalibrated ones from a weak model send it far off (Alexandari et al. 2020)."""

    loss: str
    trained_for: torch.Tensor
    validation_prior: torch.Tensor
    temperature: float
    biases: torch.Tensor

    @classmethod
    def fit(
        cls, logits: np.ndarray, labels: np.ndarray, loss: str, trained_for: torch.Tensor,
        validation_prior: torch.Tensor,
    ) -> PosteriorCalibration:  # fmt: skip
        """Fit T and b on validation logits and labels; every class needs a validation image (else T, b and EM's
        estimate would all be NaN: log π_val = −∞)."""
        counts = np.bincount(np.asarray(labels), minlength=len(validation_prior))
        if missing := np.flatnonzero((counts == 0) | (validation_prior.numpy() <= 0)).tolist():
            raise ValueError(
                f"Calibrating EM's posteriors needs every class in the validation split; classes {missing} have no "
                "validation image (the stratified carve of --long_tail_profile none keeps a class's last image for "
                "training). Raise --validation_split, or give a validation split with every class (--validation_dir "
                "or --validation_list)."
            )
        unfitted = cls(loss, trained_for, validation_prior, 1.0, torch.zeros(len(validation_prior)))
        temperature, biases = fit_logit_scaling(unfitted.to_validation_prior(logits), labels, "ce", class_biases=True)
        return cls(loss, trained_for, validation_prior, temperature, biases)

    def to_validation_prior(self, logits: np.ndarray | torch.Tensor) -> torch.Tensor:
        return shift_logits(torch.as_tensor(np.asarray(logits), dtype=torch.float64), self.loss, self.trained_for,
                            self.validation_prior)  # fmt: skip

    def posteriors(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        return class_probabilities(self.to_validation_prior(logits) / self.temperature + self.biases, "ce").numpy()

    def estimate_test_prior(self, logits: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(estimate_test_prior(self.posteriors(logits), self.validation_prior.numpy()))


TEST_IMBALANCE_RATIOS = (100.0, 10.0, 1.0, 0.1, 0.01)  # UniMix Table D2: long-tailed, balanced, reversed


def evaluate_under_test_priors(
    logits: np.ndarray,
    labels: np.ndarray,
    calibration: PosteriorCalibration,
    test_imbalance_ratios: Sequence[float] = TEST_IMBALANCE_RATIOS,
    seed: int = 0,
) -> list[dict]:
    """Top-1 on test sets resampled to each ρ' (n_max = the smallest class of `labels`), predicting with the raw
    logits, after a shift to a uniform prior, to the true prior of that test set, and to the EM estimate of it
    (EM on `calibration`'s posteriors, fitted on validation)."""
    logits, labels = torch.as_tensor(np.asarray(logits), dtype=torch.float64), np.asarray(labels)
    num_classes = logits.shape[1]
    loss, trained_for = calibration.loss, calibration.trained_for
    n_max = int(np.bincount(labels, minlength=num_classes).min())
    rows = []
    for ratio in test_imbalance_ratios:
        counts = resampled_test_counts(n_max, num_classes, ratio)
        index = resample_indices(labels, counts, seed)
        z, y = logits[index], labels[index]
        true_prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
        estimate = calibration.estimate_test_prior(z)

        def accuracy(prior: torch.Tensor | None) -> float:
            shifted = z if prior is None else shift_logits(z, loss, trained_for, prior)
            return float((shifted.argmax(-1).numpy() == y).mean())

        rows.append(
            {
                "test_imbalance_ratio": ratio,
                "images": len(index),
                "as_trained": accuracy(None),
                "uniform_prior": accuracy(resolve_test_prior(num_classes)),
                "true_prior": accuracy(true_prior),
                "estimated_prior": accuracy(estimate),
                "estimate_l1_error": float((estimate - true_prior).abs().sum()),
            }
        )
    return rows


def format_test_prior_table(rows: list[dict], title: str) -> str:
    """The rows of `evaluate_under_test_priors` as Markdown (top-1 in %)."""
    lines = [
        f"## {title}",
        "",
        "| ρ' | images | as trained | uniform prior | true prior | EM-estimated prior | ‖π̂ − π‖₁ |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['test_imbalance_ratio']:g} | {r['images']} | {100 * r['as_trained']:.2f} | "
            f"{100 * r['uniform_prior']:.2f} | {100 * r['true_prior']:.2f} | {100 * r['estimated_prior']:.2f} | "
            f"{r['estimate_l1_error']:.3f} |"
        )
    return "\n".join(lines) + "\n"
