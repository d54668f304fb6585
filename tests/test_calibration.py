"""Calibration metrics (UniMix Eq. D.2–D.6) against hand computations and torchmetrics."""

import math
import warnings

import numpy as np
import pytest
import torch

from livt_hf.metrics.calibration import (
    adaptive_calibration_error,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    probabilities_from_logits,
    static_calibration_error,
    thresholded_adaptive_calibration_error,
)


def test_ece_and_mce_by_hand():
    # top-1 confidences 0.9 (right), 0.9 (wrong), 0.61 (right), 1.0 (right): bins (0.867, 0.933], (0.6, 0.667], (0.933, 1]
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.61, 0.39], [1.0, 0.0]])
    labels = np.array([0, 0, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * 0.4 + 0.39 + 0.0) / 4)
    assert maximum_calibration_error(probs, labels) == pytest.approx(0.4)


def test_confidence_of_exactly_one_lands_in_the_last_bin():
    probs = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.5)  # one bin: acc 0.5, cfd 1.0
    assert expected_calibration_error(probs, np.array([0, 0]), num_bins=15) == 0.0


def test_ece_and_mce_agree_with_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7)) * 3
    probs = probabilities_from_logits(logits, "ce")
    labels = rng.integers(0, 7, 500)
    t_probs, t_labels = torch.tensor(probs), torch.tensor(labels)
    for ours, norm in ((expected_calibration_error, "l1"), (maximum_calibration_error, "max")):
        theirs = multiclass_calibration_error(t_probs, t_labels, num_classes=7, n_bins=15, norm=norm).item()
        assert ours(probs, labels) == pytest.approx(theirs, abs=1e-6)


def test_sce_by_hand():
    # class 0: 0.81 (y=0, gap 0.19), 0.29 (y=0, gap 0.71); class 1: 0.19 (gap 0.19), 0.71 (gap 0.71); N = 2
    probs = np.array([[0.81, 0.19], [0.29, 0.71]])
    assert static_calibration_error(probs, np.array([0, 0])) == pytest.approx(((0.19 + 0.71) / 2 + (0.19 + 0.71) / 2) / 2)


def test_ace_and_tace_by_hand():
    probs = np.array([[0.1, 0.9], [0.4, 0.6], [0.6, 0.4], [0.9, 0.1]])
    labels = np.array([1, 1, 0, 0])
    # R = 2, per class: ranges {0.1, 0.4} (acc 0, cfd 0.25) and {0.6, 0.9} (acc 1, cfd 0.75): (0.25 + 0.25) · 2 / (2 · 2)
    assert adaptive_calibration_error(probs, labels, num_ranges=2) == pytest.approx(0.25)
    # ε = 0.2 drops 0.1: ranges {0.4, 0.6} (acc 0.5, cfd 0.5) and {0.9} (acc 1, cfd 0.9): 0.1 · 2 / 4
    assert thresholded_adaptive_calibration_error(probs, labels, num_ranges=2, threshold=0.2) == pytest.approx(0.05)


def test_brier_and_nll_by_hand():
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    labels = np.array([0, 0])
    assert brier_score(probs, labels) == pytest.approx((0.09 + 0.09 + 0.64 + 0.64) / 4)  # 1/(N·C), Eq. D.6
    assert negative_log_likelihood(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.2)) / 2)


def test_probabilities_per_loss_family():
    logits = np.array([[2.0, 0.0, -1.0], [-3.0, 1.0, 0.5]])
    soft = probabilities_from_logits(logits, "bal_ce")
    assert np.allclose(soft, torch.softmax(torch.tensor(logits), -1).numpy())
    sig = probabilities_from_logits(logits, "bal_bce")
    expected = 1 / (1 + np.exp(-logits))
    assert np.allclose(sig, expected / expected.sum(-1, keepdims=True))
    assert np.allclose(sig.sum(-1), 1) and (sig.argmax(-1) == logits.argmax(-1)).all()


def test_calibration_metrics_of_a_perfect_model():
    probs = np.eye(4)[[0, 1, 2, 3, 0]]
    metrics = calibration_metrics(probs, np.array([0, 1, 2, 3, 0]))
    assert metrics["ece"] == metrics["mce"] == metrics["sce"] == metrics["brier"] == 0.0
    assert metrics["nll"] == pytest.approx(0.0, abs=1e-9)


def test_local_evaluate_module_loads_offline_and_computes_every_metric():
    import evaluate

    from livt_hf.metrics import CALIBRATION_ERROR

    # test_ece_and_mce_by_hand's four predictions: |p_c − 1(y = c)| is 0.1, 0.9, 0.39 and 0 in each class
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.61, 0.39], [1.0, 0.0]])
    result = evaluate.load(CALIBRATION_ERROR).compute(predictions=probs, references=np.zeros(4, dtype=int))
    assert result == pytest.approx({
        "ece": (2 * 0.4 + 0.39) / 4, "mce": 0.4,
        "sce": 1.39 / 4,  # one probability per bin, the same gaps in both classes
        "ace": 2 * 1.39 / (2 * 15), "tace": 2 * 1.39 / (2 * 15),  # 4 probabilities < 15 ranges: one range each
        "brier": 2 * (0.1**2 + 0.9**2 + 0.39**2) / (4 * 2),
        "nll": -(math.log(0.9) + math.log(0.1) + math.log(0.61)) / 4,
    })  # fmt: skip


def test_temperature_scaling_recovers_the_temperature_that_generated_the_labels():
    from livt_hf.metrics.calibration import fit_temperature

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4000, 5)) * 4
    true_probs = probabilities_from_logits(logits / 2.5, "ce")  # labels drawn from softmax(z / 2.5)
    labels = np.array([rng.choice(5, p=p) for p in true_probs])
    t = fit_temperature(logits, labels, "ce")
    assert t == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(probabilities_from_logits(logits, "ce"), labels)
    after = expected_calibration_error(probabilities_from_logits(logits, "ce", temperature=t), labels)
    assert after < before / 3


def test_temperature_scaling_of_the_sigmoid_losses_uses_their_probabilities():
    """The default loss (Bal-BCE) scores with renormalised sigmoids, σ(z_c / T) / Σ_k σ(z_k / T): labels drawn from
    those at T = 2.5 give back T ≈ 2.5; softmax probabilities would not (the family matters)."""
    from livt_hf.metrics.calibration import fit_temperature

    rng = np.random.default_rng(6)
    logits = rng.normal(size=(4000, 5)) * 4 - 2
    sigmoids = 1 / (1 + np.exp(-logits / 2.5))
    labels = np.array([rng.choice(5, p=p / p.sum()) for p in sigmoids])
    assert fit_temperature(logits, labels, "bal_bce") == pytest.approx(2.5, rel=0.1)
    assert fit_temperature(logits, labels, "ce") != pytest.approx(2.5, rel=0.2)


def test_no_temperature_is_fitted_when_every_validation_image_is_right():
    """All right: the NLL of z / T falls towards 0 as T → 0 (here a mean 0.210 at T = 1, 1.1e-5 at T = 0.1), so any T
    the optimiser stops at is an artefact (0.026 on 54 all-right validation images of digits); T = 1 is kept."""
    from livt_hf.metrics.calibration import fit_logit_scaling, fit_temperature

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [-1.0, 0.5, 2.5], [1.0, -2.0, 0.0]])
    labels = np.array([0, 1, 2, 0])
    for loss in ("ce", "bal_bce"):
        with pytest.warns(UserWarning, match="no temperature can be fitted"):
            assert fit_temperature(logits, labels, loss) == 1.0
    with pytest.warns(UserWarning, match="no temperature can be fitted"):
        t, biases = fit_logit_scaling(logits, labels, "ce", class_biases=True)
    assert t == 1.0 and biases.tolist() == [0.0, 0.0, 0.0]
    labels[3] = 2  # one wrong (its label's logit 1 below the top): a finite T is fitted, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = fit_temperature(logits, labels, "ce")
    assert 0.2 < t < 5 and t != 1.0
