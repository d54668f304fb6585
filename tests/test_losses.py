"""Bal-BCE and Bal-CE against the papers' formulas, computed by hand with Python's math module."""

import math

import pytest
import torch

from livt_hf.losses import bal_bce_bias, build_loss, logit_bias, prior_head_bias, train_prior

COUNTS = [600, 300, 90, 10]  # π = 0.6, 0.3, 0.09, 0.01
LOGITS = torch.tensor([[1.5, -0.3, 0.2, -2.0], [-0.7, 0.4, 2.2, 0.1]])
LABELS = torch.tensor([0, 3])


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def hand_bal_bce(logits, targets, counts, tau, pi_t):
    """LiVT Thm. 3 written out element by element; sum over classes, mean over the batch."""
    n = sum(counts)
    pi_s = [c / n for c in counts]
    bias = [(math.log(s) - math.log(t)) - (math.log(1 - s) - math.log(1 - t)) for s, t in zip(pi_s, pi_t)]
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        for z, b, yc in zip(row, bias, y):
            p = sigmoid(z + tau * b)
            total -= yc * math.log(p) + (1 - yc) * math.log(1 - p)
    return total / len(logits)


def one_hot(labels):
    return torch.nn.functional.one_hot(labels, 4).float()


@pytest.mark.parametrize("tau", [1.0, 0.5, 1.3])
@pytest.mark.parametrize("pi_t", [None, [0.1, 0.2, 0.3, 0.4]])
def test_bal_bce_matches_theorem_3(tau, pi_t):
    loss = build_loss("bal_bce", COUNTS, tau=tau, test_prior=pi_t)(LOGITS, LABELS)
    expected = hand_bal_bce(LOGITS, one_hot(LABELS), COUNTS, tau, pi_t or [0.25] * 4)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_test_prior_gives_the_log_c_minus_1_form():
    pi = train_prior(COUNTS)
    closed_form = [math.log(p) - math.log(1 - p) + math.log(4 - 1) for p in pi.tolist()]
    assert bal_bce_bias(pi, torch.full((4,), 0.25, dtype=torch.float64)).tolist() == pytest.approx(closed_form)


def test_tau_takes_effect_and_tau_zero_is_plain_bce():
    losses = [build_loss("bal_bce", COUNTS, tau=t)(LOGITS, LABELS).item() for t in (0.0, 0.5, 1.0)]
    assert len(set(losses)) == 3
    assert losses[0] == pytest.approx(build_loss("bce")(LOGITS, LABELS).item())


def test_soft_targets():
    loss = build_loss("bal_bce", COUNTS)
    assert loss(LOGITS, one_hot(LABELS)).item() == pytest.approx(loss(LOGITS, LABELS).item())
    # a mixup target λ·e_a + (1 − λ)·e_b: both losses are linear in the target
    lam, other = 0.7, torch.tensor([2, 1])
    soft = lam * one_hot(LABELS) + (1 - lam) * one_hot(other)
    expected = hand_bal_bce(LOGITS, soft, COUNTS, 1.0, [0.25] * 4)
    assert loss(LOGITS, soft).item() == pytest.approx(expected, rel=1e-6)
    ce = build_loss("bal_ce", COUNTS)
    mixed = lam * ce(LOGITS, LABELS) + (1 - lam) * ce(LOGITS, other)
    assert ce(LOGITS, soft).item() == pytest.approx(mixed.item(), rel=1e-6)


def test_bal_ce_is_ce_on_bayias_adjusted_logits():
    n = sum(COUNTS)
    total = 0.0
    for row, y in zip(LOGITS.tolist(), LABELS.tolist()):
        adjusted = [z + math.log(c / n) + math.log(4) for z, c in zip(row, COUNTS)]  # + log π + log C
        total -= adjusted[y] - math.log(sum(math.exp(a) for a in adjusted))
    assert build_loss("bal_ce", COUNTS)(LOGITS, LABELS).item() == pytest.approx(total / 2, rel=1e-6)


def test_bayias_is_plain_ce_on_a_balanced_train_set():
    balanced = build_loss("bal_ce", [50, 50, 50, 50])(LOGITS, LABELS)
    assert balanced.item() == pytest.approx(torch.nn.functional.cross_entropy(LOGITS, LABELS).item())


def test_bal_bce_bias_approaches_bal_ce_bias_for_small_priors():
    # LiVT Supp. B / Fig. 4 (C = 1000): B_bce − B_ce = −log(1 − π) + log((C − 1)/C) → 0 as π → 0
    counts = [10_000] + [1] * 999
    bce = logit_bias("bal_bce", counts)
    ce = logit_bias("bal_ce", counts)
    assert (bce[1:] - ce[1:]).abs().max() < 2e-3
    assert bce[0] - ce[0] > 1.0  # but the head gets a clearly larger bias


def test_bal_bce_gradient_of_a_class_ignores_other_classes_biases():
    # Supp. B: ∂L/∂z_j depends on B_j only; change every other class's count and z_j's gradient is unchanged
    def grad(counts):
        z = LOGITS.clone().requires_grad_()
        build_loss("bal_bce", counts, test_prior=[0.25] * 4)(z, LABELS).backward()
        return z.grad[:, 2]

    # π_2 = 90/1000 in both; the other classes change
    assert torch.allclose(grad(COUNTS), grad([100, 700, 90, 110]))
    assert not torch.allclose(grad(COUNTS), grad([600, 300, 50, 50]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss="focal_ce"), "Unknown loss"),
        (dict(loss="ce", tau=2.0), "no effect on loss 'ce'"),
        (dict(loss="bal_bce", class_counts=[5, 0, 1]), "no training images"),
        (dict(loss="bal_bce", class_counts=None), "needs the train class counts"),
        (dict(loss="bal_bce", class_counts=[5, 5], test_prior=[0.9, 0.3]), "summing to 1"),
    ],
)
def test_bad_loss_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_loss(**kwargs)


def test_label_outside_num_labels_is_an_error():
    with pytest.raises(ValueError, match="0 … 3"):
        build_loss("bal_bce", COUNTS)(LOGITS, torch.tensor([0, 4]))


def hand_ce(rows, labels, weights=None, gamma=0.0, scale=1.0, shift=None):
    """−w_y (1 − p_y)^γ log p_y on scale·(z − shift), averaged, written out with math."""
    total = 0.0
    for row, y in zip(rows, labels):
        z = [scale * (v - (shift[i] if shift and i == y else 0.0)) for i, v in enumerate(row)]
        log_p = z[y] - math.log(sum(math.exp(v) for v in z))
        total -= (weights[y] if weights else 1.0) * (1 - math.exp(log_p)) ** gamma * log_p
    return total / len(rows)


def test_la_is_ce_on_log_prior_adjusted_logits_and_equals_bayias_for_a_balanced_test():
    n = sum(COUNTS)
    adjusted = [[z + 0.7 * math.log(c / n) for z, c in zip(row, COUNTS)] for row in LOGITS.tolist()]
    la = build_loss("la", COUNTS, tau=0.7)(LOGITS, LABELS)
    assert la.item() == pytest.approx(hand_ce(adjusted, LABELS.tolist()), rel=1e-6)
    assert la.item() == pytest.approx(build_loss("bal_ce", COUNTS, tau=0.7)(LOGITS, LABELS).item(), rel=1e-6)
    with pytest.raises(ValueError, match="for a known test prior use 'bal_ce'"):
        build_loss("la", COUNTS, test_prior=[0.1, 0.2, 0.3, 0.4])


def test_focal_loss_by_hand():
    focal = build_loss("focal", COUNTS, focal_gamma=2.0)(LOGITS, LABELS)
    assert focal.item() == pytest.approx(hand_ce(LOGITS.tolist(), LABELS.tolist(), gamma=2.0), rel=1e-6)
    assert build_loss("focal", focal_gamma=0.0)(LOGITS, LABELS).item() == pytest.approx(
        build_loss("ce")(LOGITS, LABELS).item())


def test_class_balanced_weights_from_the_effective_number():
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**c) for c in COUNTS]
    weights = [w * 4 / sum(raw) for w in raw]  # scaled to sum to C
    cb = build_loss("cb", COUNTS, cb_beta=beta)(LOGITS, LABELS)
    assert cb.item() == pytest.approx(hand_ce(LOGITS.tolist(), LABELS.tolist(), weights=weights), rel=1e-6)
    assert build_loss("cb", COUNTS, cb_beta=0.0)(LOGITS, LABELS).item() == pytest.approx(
        build_loss("ce")(LOGITS, LABELS).item())  # β = 0: every weight 1


def test_ldam_margins_and_deferred_reweighting():
    margins = [c**-0.25 for c in COUNTS]
    margins = [0.5 * m / max(margins) for m in margins]  # the rarest class (10 images) gets 0.5
    cosines = torch.tanh(LOGITS)  # anything in [−1, 1]
    loss = build_loss("ldam", COUNTS, ldam_max_margin=0.5, ldam_scale=30.0, drw_epoch=2, cb_beta=0.99)
    expected = hand_ce(cosines.tolist(), LABELS.tolist(), scale=30.0, shift=margins)
    loss.set_epoch(1.9)
    assert loss(cosines, LABELS).item() == pytest.approx(expected, rel=1e-5)
    loss.set_epoch(2.0)  # from epoch 2 on, class-balanced weights
    raw = [(1 - 0.99) / (1 - 0.99**c) for c in COUNTS]
    weighted = hand_ce(cosines.tolist(), LABELS.tolist(), [w * 4 / sum(raw) for w in raw], scale=30.0, shift=margins)
    assert loss(cosines, LABELS).item() == pytest.approx(weighted, rel=1e-5)


def test_negative_tolerant_bce_by_hand():
    lam = 2.0
    total = 0.0
    for row, label in zip(LOGITS.tolist(), LABELS.tolist()):
        for c, z in enumerate(row):
            total -= math.log(sigmoid(z)) if c == label else math.log(1 - sigmoid(lam * z)) / lam
    assert build_loss("nt_bce", negative_tolerance=lam)(LOGITS, LABELS).item() == pytest.approx(total / 2, rel=1e-6)
    assert build_loss("nt_bce")(LOGITS, LABELS).item() == pytest.approx(build_loss("bce")(LOGITS, LABELS).item())
    # with the Bal-BCE bias and λ = 1 it is Bal-BCE
    assert build_loss("nt_bce_bal", COUNTS, tau=0.8)(LOGITS, LABELS).item() == pytest.approx(
        build_loss("bal_bce", COUNTS, tau=0.8)(LOGITS, LABELS).item())


def hand_soft_loss(name, logits, targets, counts, negative_tolerance=1.0):
    """Each loss on soft targets y (rows summing to 1), written out with math at the defaults of `LOSS_DEFAULTS`:
    softmax losses −Σ_c w_c y_c (1 − p_c)^γ log p_c on the adjusted logits (LDAM: s·(z − y ⊙ Δ), the margin weighed
    by each class's share of the target); sigmoid losses −Σ_c [y_c log σ(z_c) + (1 − y_c)/λ log(1 − σ(λ z_c))]."""
    c, pi = len(counts), [n / sum(counts) for n in counts]
    bias = {
        "bal_ce": [math.log(p) + math.log(c) for p in pi],  # log π_s − log(1/C)
        "la": [math.log(p) for p in pi],
        "bal_bce": [math.log(p) - math.log(1 / c) - math.log(1 - p) + math.log(1 - 1 / c) for p in pi],
    }
    bias["nt_bce_bal"] = bias["bal_bce"]
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in counts]
    weights = [w * c / sum(raw) for w in raw] if name == "cb" else [1.0] * c
    margins = [n**-0.25 for n in counts]
    margins = [0.5 * m / max(margins) for m in margins]
    gamma, lam = (2.0 if name == "focal" else 0.0), negative_tolerance
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        z = [v + b for v, b in zip(row, bias.get(name, [0.0] * c))]
        if name in ("bce", "bal_bce", "nt_bce", "nt_bce_bal"):
            total -= sum(t * math.log(sigmoid(v)) + (1 - t) / lam * math.log(sigmoid(-lam * v)) for v, t in zip(z, y))
            continue
        if name == "ldam":
            z = [30.0 * (v - t * m) for v, t, m in zip(z, y, margins)]
        log_norm = math.log(sum(math.exp(v) for v in z))
        total -= sum(w * t * (1 - math.exp(v - log_norm)) ** gamma * (v - log_norm) for w, t, v in zip(weights, y, z))
    return total / len(logits)


@pytest.mark.parametrize("name", ["ce", "bal_ce", "la", "focal", "cb", "ldam", "bce", "bal_bce", "nt_bce", "nt_bce_bal"])
def test_every_loss_on_soft_targets_matches_a_hand_computation(name):
    lam = {"negative_tolerance": 2.0} if name.startswith("nt_") else {}
    loss = build_loss(name, COUNTS, **lam)
    z = torch.tanh(LOGITS) if name == "ldam" else LOGITS
    assert loss(z, one_hot(LABELS)).item() == pytest.approx(loss(z, LABELS).item(), rel=1e-6)
    mixed = 0.6 * one_hot(LABELS) + 0.4 * one_hot(torch.tensor([1, 2]))  # mixup rows (0.6, 0.4, 0, 0), (0, 0, 0.4, 0.6)
    smoothed = 0.9 * mixed + 0.1 / 4  # and label smoothing on top: every class gets some of the target
    for soft in (mixed, smoothed):
        expected = hand_soft_loss(name, z, soft, COUNTS, lam.get("negative_tolerance", 1.0))
        assert loss(z, soft).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss="ce", focal_gamma=1.0), "focal_gamma = 1.0 has no effect on loss 'ce'"),
        (dict(loss="bal_bce", negative_tolerance=2.0), "negative_tolerance = 2.0 has no effect"),
        (dict(loss="cb", drw_epoch=3), "drw_epoch = 3 has no effect on loss 'cb'"),
        (dict(loss="bce", drw_epoch=3), "drw_epoch = 3 has no effect on loss 'bce'"),
        (dict(loss="ldam", ldam_scale=10.0, cb_beta=0.9), "cb_beta = 0.9 has no effect"),
        (dict(loss="ce", label_smoothing=0.1), "Unknown loss parameters"),
        (dict(loss="cb", cb_beta=1.0), r"cb_beta must be in \[0, 1\)"),
        (dict(loss="nt_bce", negative_tolerance=0.0), "must be > 0"),
    ],
)
def test_loss_parameters_that_would_be_ignored_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_loss(class_counts=COUNTS, **kwargs)


@pytest.mark.parametrize("tau", [1.0, 0.5])
@pytest.mark.parametrize("pi_t", [None, [0.1, 0.2, 0.3, 0.4]])
def test_prior_head_bias_starts_training_at_the_train_prior(tau, pi_t):
    """A model whose features are zero outputs the head bias b; with the 'prior' init the loss's adjusted logits
    b + τB give back π_s: σ(·) per class for Bal-BCE, softmax for Bal-CE (B written out by hand, LiVT Thm. 3 and
    UniMix Eq. 10)."""
    n = sum(COUNTS)
    pi_s = [c / n for c in COUNTS]
    t = pi_t or [0.25] * 4
    bal_bce = [(math.log(s / q)) - math.log((1 - s) / (1 - q)) for s, q in zip(pi_s, t)]
    bal_ce = [math.log(s / q) for s, q in zip(pi_s, t)]
    b = prior_head_bias("bal_bce", COUNTS, tau, pi_t).tolist()
    assert [sigmoid(bi + tau * Bi) for bi, Bi in zip(b, bal_bce)] == pytest.approx(pi_s, abs=1e-12)
    b = prior_head_bias("bal_ce", COUNTS, tau, pi_t).tolist()
    e = [math.exp(bi + tau * Bi) for bi, Bi in zip(b, bal_ce)]
    assert [x / sum(e) for x in e] == pytest.approx(pi_s, abs=1e-12)


def test_prior_head_bias_of_the_plain_losses_and_balanced_bal_bce():
    n = sum(COUNTS)
    assert prior_head_bias("bce", COUNTS).tolist() == pytest.approx([math.log(c / (n - c)) for c in COUNTS])
    assert prior_head_bias("ce", COUNTS).tolist() == pytest.approx([math.log(c / n) for c in COUNTS])
    # Bal-BCE, uniform test prior, τ = 1: every class starts at −log(C − 1), the test-time prediction is uniform
    assert prior_head_bias("bal_bce", COUNTS).tolist() == pytest.approx([-math.log(3)] * 4)
