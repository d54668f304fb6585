"""Prior shift is exact on posteriors built from known likelihoods; EM recovers a test prior it was not told."""

import math

import numpy as np
import pytest
import torch

from livt_hf.losses import model_prior, shift_logits
from livt_hf.prior_shift import estimate_test_prior

PI_A = torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64)
PI_B = torch.tensor([0.05, 0.15, 0.3, 0.5], dtype=torch.float64)


def test_softmax_shift_is_bayes_rule():
    likelihood = torch.tensor(np.random.default_rng(0).uniform(0.01, 1, size=(50, 4)))  # p(x | y)
    logits = (likelihood * PI_A).log()  # posterior under π_a, up to a per-row constant
    shifted = torch.softmax(shift_logits(logits, "ce", PI_A, PI_B), -1)
    expected = likelihood * PI_B / (likelihood * PI_B).sum(1, keepdim=True)
    assert torch.allclose(shifted, expected)


def test_sigmoid_shift_is_bayes_rule_for_each_one_vs_rest_problem():
    ratio = torch.tensor(np.random.default_rng(1).uniform(0.05, 20, size=(50, 4)))  # p(x | y = c) / p(x | y ≠ c)
    logits = ratio.log() + torch.logit(PI_A)  # σ(z_c) = P_a(y = c | x)
    shifted = torch.sigmoid(shift_logits(logits, "bal_bce", PI_A, PI_B))
    expected = ratio * PI_B / (ratio * PI_B + 1 - PI_B)
    assert torch.allclose(shifted, expected)


def test_model_prior_per_loss():
    counts = [600, 250, 100, 50]
    pi_s = torch.tensor(counts, dtype=torch.float64) / 1000
    assert torch.allclose(model_prior("ce", counts), pi_s)
    assert torch.allclose(model_prior("bal_ce", counts), torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.allclose(model_prior("bal_bce", counts, trained_test_prior=PI_B.tolist()), PI_B)
    assert torch.allclose(model_prior("bal_ce", counts, tau=0.0), pi_s)
    half = model_prior("bal_ce", counts, tau=0.5)  # geometric mean of π_s and uniform, renormalised
    assert torch.allclose(half, pi_s.sqrt() / pi_s.sqrt().sum())
    assert torch.allclose(model_prior("la", counts), torch.full((4,), 0.25, dtype=torch.float64))


def test_em_recovers_an_unseen_test_prior():
    # three 1-D Gaussian classes; posteriors computed under π_a, samples drawn from π_b
    rng = np.random.default_rng(2)
    means, pi_a, pi_b = np.array([-2.0, 0.0, 2.0]), np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    labels = rng.choice(3, size=20000, p=pi_b)
    x = rng.normal(means[labels], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - means) ** 2)
    posteriors = likelihood * pi_a / (likelihood * pi_a).sum(1, keepdims=True)
    estimate = estimate_test_prior(posteriors, pi_a)
    assert np.abs(estimate - pi_b).max() < 0.02
    assert np.abs(posteriors.mean(0) - pi_b).max() > 0.1  # the naive average is far off


def test_model_shifts_its_logits_to_a_test_prior_only_outside_training():
    from livt_hf import LiVTConfig, LiVTForImageClassification

    counts = [600, 250, 100, 50]
    config = LiVTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=28, patch_size=7, num_channels=1, num_labels=4, class_counts=counts,
                        loss="bal_bce", drop_path_rate=0.0, inference_test_prior=PI_B.tolist())  # fmt: skip
    model = LiVTForImageClassification(config).eval()
    x = torch.randn(3, 1, 28, 28)
    raw = model(x, test_prior=[0.25] * 4).logits  # uniform = what a Bal-BCE model answers for: no shift
    expected = raw - (torch.logit(torch.tensor(0.25)) - torch.logit(PI_B)).float()
    assert torch.allclose(model(x).logits, expected, atol=1e-5)  # config.inference_test_prior applies in eval
    labels = torch.tensor([0, 1, 2])
    assert model(x, labels=labels).loss.item() == pytest.approx(model.loss_fn(raw, labels).item())
    model.train()
    torch.manual_seed(0)
    assert torch.allclose(model(x).logits, raw, atol=1e-6)  # training sees raw logits
    with pytest.raises(Exception, match="positive probabilities summing to 1"):
        LiVTConfig(num_labels=4, class_counts=counts, inference_test_prior=[0.5, 0.5, 0.5, 0.5])


def test_em_needs_calibrated_posteriors_and_bias_corrected_scaling_provides_them():
    from livt_hf.prior_shift import PosteriorCalibration

    means, rng = np.array([-2.0, 0.0, 2.0]), np.random.default_rng(3)

    def sample(prior, n):
        labels = rng.choice(3, size=n, p=prior)
        x = rng.normal(means[labels], 1.0)
        # an over-confident (×3) model with a class bias: raw logits that are not log-posteriors
        return 3.0 * -0.5 * (x[:, None] - means) ** 2 + np.array([1.5, 0.0, -1.0]), labels

    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    val_logits, val_labels = sample([1 / 3] * 3, 20000)
    calibration = PosteriorCalibration.fit(val_logits, val_labels, "ce", uniform, uniform)
    assert calibration.temperature == pytest.approx(3.0, rel=0.1)
    pi_b = np.array([0.1, 0.3, 0.6])
    test_logits, _ = sample(pi_b, 20000)
    calibrated = calibration.estimate_test_prior(test_logits).numpy()
    raw = estimate_test_prior(torch.softmax(torch.tensor(test_logits), -1).numpy(), uniform.numpy())
    calibrated_error, raw_error = np.abs(calibrated - pi_b).sum(), np.abs(raw - pi_b).sum()
    # over seeds 0-5 of this setup: calibrated 0.003-0.028, raw 0.12-0.15
    assert calibrated_error < 0.05
    assert raw_error > 0.1 and raw_error > 3 * calibrated_error


def test_calibration_refuses_a_class_with_no_validation_image_instead_of_turning_nan():
    from livt_hf.prior_shift import PosteriorCalibration

    # the stratified carve of --long_tail_profile none leaves a class with one train image no validation image
    rng = np.random.default_rng(4)
    logits, labels = rng.normal(size=(30, 3)), np.array([0, 1] * 15)
    counts = np.bincount(labels, minlength=3)
    prior = torch.tensor(counts / counts.sum(), dtype=torch.float64)
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"classes \[2\] have no validation image.*Raise --validation_split"):
        PosteriorCalibration.fit(logits, labels, "bal_bce", uniform, prior)


def tiny_classifier(**kwargs):
    from livt_hf import LiVTConfig, LiVTForImageClassification

    config = LiVTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=28, patch_size=7, num_channels=1, num_labels=4, class_counts=[600, 250, 100, 50],
                        drop_path_rate=0.0, **kwargs)  # fmt: skip
    return LiVTForImageClassification(config).eval()


def test_the_shift_is_made_in_float32_when_the_model_runs_in_bf16():
    model = tiny_classifier(loss="bal_bce", inference_test_prior=PI_B.tolist()).to(torch.bfloat16)  # --bf16_full_eval
    x = torch.randn(3, 1, 28, 28)
    raw = model(x, use_inference_test_prior=False).logits
    shifted = model(x).logits
    assert raw.dtype == torch.bfloat16 and shifted.dtype == torch.float32
    exact = raw.double() - (torch.logit(torch.tensor(0.25, dtype=torch.float64)) - torch.logit(PI_B))  # uniform → π_b
    torch.testing.assert_close(shifted.double(), exact, atol=1e-6, rtol=0)
    assert shift_logits(raw, "bal_ce", PI_A, PI_B).dtype == torch.float32


def test_the_model_computes_each_prior_shift_once_not_every_batch(monkeypatch):
    import livt_hf.modeling_livt as modeling

    computed = []
    monkeypatch.setattr(modeling, "model_prior", lambda *args: computed.append(args) or model_prior(*args))
    model = tiny_classifier(loss="bal_ce", inference_test_prior=PI_B.tolist())
    x = torch.randn(2, 1, 28, 28)
    first = model(x).logits
    for _ in range(3):
        assert torch.equal(model(x).logits, first)
    model(x, test_prior=PI_A.tolist())
    model(x, test_prior=PI_A.tolist())
    assert len(computed) == 2  # once per prior shifted to


def test_table_d2_columns_on_a_model_whose_posteriors_are_known():
    """Three Gaussian classes and a ce model whose logits are the log posteriors under its train prior; test sets
    resampled long-tailed like train (ρ' = 10), balanced, and reversed (0.1), from 3000 images per class."""
    from livt_hf.prior_shift import PosteriorCalibration, evaluate_under_test_priors

    means, pi_s, rng = np.array([-2.0, 0.0, 2.0]), np.array([0.7, 0.2, 0.1]), np.random.default_rng(5)

    def sample(per_class):
        labels = np.repeat(np.arange(3), per_class)
        x = rng.normal(means[labels], 1.0)
        return -0.5 * (x[:, None] - means) ** 2 + np.log(pi_s), labels

    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    calibration = PosteriorCalibration.fit(*sample(2000), "ce", torch.tensor(pi_s), uniform)
    long_tailed, balanced, reversed_ = evaluate_under_test_priors(*sample(3000), calibration, (10, 1, 0.1))
    # ⌊3000 · 10^(−i/2)⌋ = 3000, 948, 300 images per class
    assert [r["images"] for r in (long_tailed, balanced, reversed_)] == [4248, 9000, 4248]
    for row in (long_tailed, balanced, reversed_):
        assert row["estimate_l1_error"] < 0.03  # EM finds the resampled prior from unlabelled predictions …
        assert row["estimated_prior"] == pytest.approx(row["true_prior"], abs=0.01)  # … and predicts as well with it
    # the train prior (0.7, 0.2, 0.1) is about the long-tailed set's; predicting for the reversed set's pays
    assert long_tailed["as_trained"] == pytest.approx(long_tailed["true_prior"], abs=0.01)
    assert long_tailed["true_prior"] > long_tailed["uniform_prior"] + 0.03
    assert reversed_["true_prior"] > reversed_["uniform_prior"] + 0.03 > reversed_["as_trained"] + 0.06


def test_model_prior_of_the_sigmoid_losses_with_tau():
    """Bal-BCE trains σ(z + τ·B) towards the train-prior posterior, B = logit π_s − logit π_t, so its raw logits z
    answer for logit π_m = (1 − τ)·logit π_s + τ·logit π_t."""
    counts, tau = [600, 250, 100, 50], 0.6
    logit = [(1 - tau) * math.log(s / (1 - s)) + tau * math.log(t / (1 - t))
             for s, t in zip([0.6, 0.25, 0.1, 0.05], PI_B.tolist())]  # fmt: skip
    expected = torch.tensor([1 / (1 + math.exp(-v)) for v in logit], dtype=torch.float64)
    for loss in ("bal_bce", "nt_bce_bal"):
        torch.testing.assert_close(model_prior(loss, counts, tau, PI_B.tolist()), expected)
    # a sigmoid model's π_m need not sum to 1: it is one binary prior per class
    assert model_prior("bal_bce", counts, tau, PI_B.tolist()).sum() != pytest.approx(1.0)


@pytest.mark.parametrize("loss, trained_for", [("ce", [0.6, 0.25, 0.1, 0.05]), ("bal_ce", [0.25] * 4)])
def test_softmax_models_shift_their_logits_by_bayes_rule(loss, trained_for):
    """softmax(z') ∝ softmax(z) · π_new / π_m: z' = z − (log π_m − log π_new), π_m the train prior for ce and the
    (uniform) test prior for bal_ce."""
    model = tiny_classifier(loss=loss, inference_test_prior=PI_B.tolist())
    torch.nn.init.normal_(model.head.weight, std=0.3)
    x = torch.randn(3, 1, 28, 28)
    raw, shifted = model(x, use_inference_test_prior=False).logits, model(x).logits
    expected = raw - (torch.tensor(trained_for).log() - PI_B.float().log())
    torch.testing.assert_close(shifted, expected, atol=1e-6, rtol=0)
    bayes = torch.softmax(raw, -1) * PI_B / torch.tensor(trained_for)
    torch.testing.assert_close(torch.softmax(shifted, -1), (bayes / bayes.sum(-1, keepdim=True)).float())
