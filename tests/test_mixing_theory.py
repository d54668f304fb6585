"""UniMix's theory on real long-tailed class counts: the class distribution of ξ-Aug samples (UniMix Def. 1: a
mixed sample belongs to the class holding ≥ 0.5 of its label) produced by our samplers and `Mixer`, measured over
many draws and compared with closed forms worked out here from the paper's definitions.

Counts: Fashion-MNIST-LT ρ = 100 (10 classes, 5000 … 50) and CIFAR-100-LT ρ = 200 (the setting of UniMix Fig. 2).
"""

import math

import pytest
import torch

from livt_hf.data.long_tail import exponential_counts
from livt_hf.data.mixing import Mixer, unimix_factor
from livt_hf.data.samplers import ClassAwareSampler, PartnerSampler

FMNIST_LT = exponential_counts(5000, 10, 100)
CIFAR100_LT_200 = exponential_counts(500, 100, 200)


def xi_aug_distribution(counts, method, epochs, tau=1.0, **params):
    """Runs every (image, partner) pair of `epochs` epochs through the Mixer; returns the ξ-Aug class frequencies."""
    torch.manual_seed(0)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    base = ClassAwareSampler(labels, "instance", seed=1)
    sampler = PartnerSampler(base, tau) if method == "unimix" else base
    mixer = Mixer(method, counts, **params)
    classes = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), 128):  # training batches
            chunk = order[start : start + 128]
            if method == "unimix":
                i, j = (torch.tensor(c) for c in zip(*chunk))
                partners = {"partner_pixel_values": torch.zeros(len(j), 1, 1, 1), "partner_labels": labels[j]}
            else:
                i, partners = torch.tensor(chunk), {}
            batch = {"pixel_values": torch.zeros(len(i), 1, 1, 1), "labels": labels[i], **partners}
            y_i = labels[i]
            targets = mixer(batch, epoch=0)["labels"]
            own = targets.gather(1, y_i[:, None]).squeeze(1)
            partner = targets.clone().scatter_(1, y_i[:, None], -1.0).argmax(1)  # the other class in the mix
            classes.append(torch.where(own >= 0.5, y_i, partner))
    return torch.bincount(torch.cat(classes), minlength=len(counts)).double() / sum(len(c) for c in classes)


def pair_priors(counts, tau):
    """The counts, the random sampler's class prior π and UniMix's partner prior π^τ / Σ π^τ (Eq. 9)."""
    n = torch.tensor(counts, dtype=torch.float64)
    pi = n / n.sum()
    return n, pi, pi**tau / (pi**tau).sum()


def rarer_class_distribution(counts, tau):
    """Corollaries 2–3 as the paper derives them: ξ* sits at π_j / (π_i + π_j) (the α → 0 limit of Eq. 6), so the
    ξ-Aug sample belongs to the rarer class of its pair. i ~ π (random sampler), j ~ π^τ (Eq. 9); equal counts split."""
    n, pi, pj = pair_priors(counts, tau)
    q = torch.zeros_like(pi)
    for a in range(len(n)):
        for b in range(len(n)):
            mass = pi[a] * pj[b]
            if n[a] == n[b]:
                q[a] += mass / 2
                q[b] += mass / 2
            else:
                q[a if n[a] < n[b] else b] += mass
    return q


def arcsine_cdf(x: float) -> float:
    """CDF of Beta(0.5, 0.5)."""
    return 2 / math.pi * math.asin(math.sqrt(min(max(x, 0.0), 1.0)))


def unimix_half_alpha_distribution(counts, tau):
    """The exact ξ-Aug distribution for α = 0.5 (the paper's CIFAR setting): from Eq. 6, ξ* = (ξ + s) mod 1, so
    P(ξ* ≥ 0.5) = P(0.5 − s ≤ ξ < 1 − s) + P(ξ ≥ 1.5 − s) with ξ ~ Beta(0.5, 0.5)."""
    n, pi, pj = pair_priors(counts, tau)
    q = torch.zeros_like(pi)
    for a in range(len(n)):
        for b in range(len(n)):
            s = (pi[b] / (pi[a] + pi[b])).item()
            own = arcsine_cdf(1 - s) - arcsine_cdf(0.5 - s) + 1 - arcsine_cdf(1.5 - s)  # the CDF clips at 1
            q[a] += pi[a] * pj[b] * own
            q[b] += pi[a] * pj[b] * (1 - own)
    return q


@pytest.mark.parametrize("alpha", [0.2, 0.8])
def test_corollary_1_mixup_keeps_the_long_tail(alpha):
    """Mixup with a random partner: ξ-Aug classes follow the original long-tailed prior (Eq. 5: P_mixup = π)."""
    q = xi_aug_distribution(FMNIST_LT, "mixup_cutmix", epochs=12, mixup_alpha=alpha, cutmix_alpha=0.0)
    assert torch.allclose(q, pair_priors(FMNIST_LT, 1.0)[1], atol=0.02)
    assert q.argmax() == 0 and q[0] > 0.35  # head-majority, like the data


def test_unimix_factor_follows_eq_6():
    """ξ* for a head–tail pair has Eq. 6's law: its CDF, integrated by hand from the shifted Beta(0.5, 0.5)."""
    torch.manual_seed(0)
    pi_i, pi_j = torch.full((200_000,), 0.403), torch.full((200_000,), 0.004)
    xi = unimix_factor(pi_i, pi_j, alpha=0.5)
    s = 0.004 / 0.407
    for t in (0.005, s, 0.02, 0.2, 0.5, 0.9, 0.999):
        below = arcsine_cdf(t + 1 - s) - arcsine_cdf(1 - s) if t < s else arcsine_cdf(t - s) + 1 - arcsine_cdf(1 - s)
        assert (xi <= t).double().mean().item() == pytest.approx(below, abs=0.004), t
    assert xi.min() >= 0 and xi.max() < 1


@pytest.mark.parametrize("counts", [FMNIST_LT, CIFAR100_LT_200], ids=["fmnist-lt-100", "cifar100-lt-200"])
def test_corollary_2_unimix_factor_with_a_random_sampler_is_middle_majority(counts):
    q = xi_aug_distribution(counts, "unimix", epochs=15, tau=1.0, unimix_alpha=0.01)
    expected = rarer_class_distribution(counts, tau=1.0)
    assert torch.allclose(q, expected, atol=0.02)
    peak = q.argmax().item()
    # the middle, not the head (C = 100's peak is flat: neighbours differ by less than the sampling noise)
    assert 0 < peak < len(counts) - 1 and abs(peak - expected.argmax().item()) <= 1
    # Eq. 8's continuous closed form peaks at class 1 + ln 2 / λ (1-based), λ = ln ρ / (C − 1)
    rho = counts[0] / counts[-1]
    assert abs(peak + 1 - (1 + math.log(2) / (math.log(rho) / (len(counts) - 1)))) <= 1.5


@pytest.mark.parametrize("counts", [FMNIST_LT, CIFAR100_LT_200], ids=["fmnist-lt-100", "cifar100-lt-200"])
def test_corollary_3_unimix_with_the_inverse_sampler_is_tail_majority(counts):
    q = xi_aug_distribution(counts, "unimix", epochs=15, tau=-1.0, unimix_alpha=0.01)
    expected = rarer_class_distribution(counts, tau=-1.0)
    assert torch.allclose(q, expected, atol=0.02)
    half = len(counts) // 2
    assert q[half:].sum() > 0.9  # the tail half gets most ξ-Aug samples (mixup gives it < 0.1)
    if counts is FMNIST_LT:  # Eq. 10 increases with the class index: so does every step here
        assert (q.diff() > 0).all()


@pytest.mark.parametrize("tau", [1.0, -1.0])
def test_unimix_at_the_papers_alpha_matches_the_exact_distribution(tau):
    """At α = 0.5 much of ξ*'s mass lies away from π_j / (π_i + π_j): the exact distribution is flatter than the
    long tail but, with a random sampler, still head-majority; the inverse sampler (τ = −1) makes it tail-majority."""
    q = xi_aug_distribution(FMNIST_LT, "unimix", epochs=15, tau=tau, unimix_alpha=0.5)
    expected = unimix_half_alpha_distribution(FMNIST_LT, tau)
    assert torch.allclose(q, expected, atol=0.006)
    pi = pair_priors(FMNIST_LT, 1.0)[1]
    if tau == 1.0:
        assert q.argmax() == 0 and q[0] < pi[0] - 0.05 and q[-1] > pi[-1]
    else:
        assert q.argmax() == len(q) - 1 and q[5:].sum() > 0.55
