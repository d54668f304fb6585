"""Class-aware samplers: the class distribution each one draws, seeding per epoch, UniMix's partner sampler, and
per-rank sharding in a real 2-process (gloo) training run."""

import json
import sys
from collections import Counter

import pytest
import torch

from conftest import REPO, run_two_processes
from helpers.threads import GLOO_THREADS
from livt_hf.data import PairedDataset
from livt_hf.data.long_tail import exponential_counts
from livt_hf.data.samplers import (
    ClassAwareSampler,
    PartnerSampler,
    batch_seed,
    build_train_sampler,
    class_power_weights,
    class_probabilities,
)

COUNTS = exponential_counts(1000, 10, 100)  # 1000 … 10
LABELS = torch.repeat_interleave(torch.arange(10), torch.tensor(COUNTS))
N = torch.tensor(COUNTS, dtype=torch.float64)


def drawn_class_frequencies(sampler, epochs=range(20)):
    drawn = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        drawn += [LABELS[i].item() for i in sampler]
    return torch.tensor([Counter(drawn)[c] for c in range(10)], dtype=torch.float64) / len(drawn)


@pytest.mark.parametrize(
    "kind, expected",
    [("instance", N / N.sum()), ("class_balanced", torch.full((10,), 0.1, dtype=torch.float64)),
     ("sqrt", N.sqrt() / N.sqrt().sum())],
)  # fmt: skip
def test_each_sampler_draws_classes_with_probability_n_to_the_q(kind, expected):
    frequencies = drawn_class_frequencies(ClassAwareSampler(LABELS, kind, seed=0))
    assert torch.allclose(frequencies, expected, atol=0.01)


def test_instance_sampler_is_a_permutation_and_the_others_draw_with_replacement():
    instance = ClassAwareSampler(LABELS, "instance")
    assert sorted(instance) == list(range(len(LABELS)))
    balanced = list(ClassAwareSampler(LABELS, "class_balanced"))
    assert len(balanced) == len(LABELS) and len(set(balanced)) < len(LABELS)


def test_progressive_sampler_moves_from_instance_to_class_balanced():
    """Kang et al. 2020: p(t) = (1 − t/T)·p_IB + (t/T)·p_CB."""
    sampler = ClassAwareSampler(LABELS, "progressive", num_epochs=4, seed=0)
    pi = N / N.sum()
    for epoch in (0, 1, 2, 4):
        t = epoch / 4
        expected = (1 - t) * pi + t / 10
        assert torch.allclose(class_probabilities(LABELS, sampler.weights(epoch)), expected), epoch
        assert torch.allclose(drawn_class_frequencies(sampler, [epoch]), expected, atol=0.03), epoch
    with pytest.raises(ValueError, match="number of training epochs"):
        ClassAwareSampler(LABELS, "progressive")


def test_samplers_are_reproducible_and_reseeded_every_epoch():
    a, b = ClassAwareSampler(LABELS, "sqrt", seed=7), ClassAwareSampler(LABELS, "sqrt", seed=7)
    assert list(a) == list(b)  # same seed, same epoch: the same order on every process
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first  # a resumed epoch replays its order
    assert list(ClassAwareSampler(LABELS, "sqrt", seed=8)) != first


def test_partner_sampler_draws_partners_with_probability_pi_to_the_tau():
    """UniMix Eq. 9: P_inv(c) = π_c^τ / Σ π^τ; τ = −1 makes the tail the most likely partner."""
    for tau in (-1.0, 0.0, 0.5):
        sampler = PartnerSampler(ClassAwareSampler(LABELS, "instance"), tau=tau)
        partners = []
        for epoch in range(20):
            sampler.set_epoch(epoch)
            partners += [LABELS[j].item() for _, j in sampler]
        frequencies = torch.tensor([Counter(partners)[c] for c in range(10)], dtype=torch.float64) / len(partners)
        pi = N / N.sum()
        assert torch.allclose(frequencies, pi**tau / (pi**tau).sum(), atol=0.01), tau


def test_partner_sampler_stops_pairing_at_until_epoch():
    """UniMix Alg. 1: mixing stops at T1; from then on no partner image is loaded."""
    sampler = PartnerSampler(ClassAwareSampler(LABELS, "instance", seed=1), tau=-1.0, until_epoch=2)
    sampler.set_epoch(1)
    assert all(isinstance(k, tuple) for k in sampler)
    sampler.set_epoch(2)
    plain = list(sampler)
    reference = ClassAwareSampler(LABELS, "instance", seed=1)
    reference.set_epoch(2)
    assert plain == list(reference)  # the base sampler's own order, unchanged
    with pytest.raises(ValueError, match="τ ≤ 1"):
        PartnerSampler(ClassAwareSampler(LABELS), tau=1.5)


def test_class_power_weights_give_class_totals_n_to_the_power():
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    totals = torch.bincount(labels, weights=class_power_weights(labels, 0.5))
    assert torch.allclose(totals, torch.tensor([2.0, 1.0, 2**0.5], dtype=torch.float64))


def test_paired_dataset_loads_partners_under_a_prefix(fashion_mnist):
    data = fashion_mnist["train"].select(range(6)).with_format("torch")
    paired = PairedDataset(data)
    rows = paired.__getitems__([(0, 5), (1, 4)])
    assert torch.equal(rows[0]["image"], data[0]["image"]) and torch.equal(rows[0]["partner_image"], data[5]["image"])
    assert rows[1]["label"] == data[1]["label"] and rows[1]["partner_label"] == data[4]["label"]
    assert set(paired.__getitems__([2])[0]) == {"image", "label"}
    plain = PairedDataset([{"x": 0}, {"x": 1}])  # any map-style dataset, batched reads or not
    assert plain[(1, 0)] == {"x": 1, "partner_x": 0} and plain[1] == {"x": 1}


class RandomRows(torch.utils.data.Dataset):
    """Each row is a fresh draw from the global torch RNG, as a per-image augmentation is."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"x": torch.rand(3)}


def test_a_batch_draws_its_augmentation_from_its_own_seed_and_leaves_the_global_rng_alone():
    """The same batch loads the same draws whatever the global RNG's state (a resumed run loads its first batches
    before Trainer restores the checkpoint's RNG state); another batch, order or seed draws others; loading does not
    advance the global RNG (mixing and masks, drawn in the training step, stay in step with the checkpoint)."""
    data = PairedDataset(RandomRows(), seed=7)
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    first = data.__getitems__([3, 1, 4])
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)
    again = data.__getitems__([3, 1, 4])
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(first, again))
    assert not torch.equal(first[0]["x"], first[1]["x"])  # rows of a batch are not copies of one draw
    for other in (data.__getitems__([3, 1, 5]), data.__getitems__([1, 3, 4]), PairedDataset(RandomRows(), seed=8)
                  .__getitems__([3, 1, 4]), data.__getitems__([(3, 0), (1, 0), (4, 0)])):  # fmt: skip
        assert not torch.equal(first[0]["x"], other[0]["x"])
    assert batch_seed(7, [3, 1, 4]) == batch_seed(7, [3, 1, 4]) != batch_seed(7, [(3, 1), (4, 0)])
    assert 0 <= batch_seed(2**40, list(range(1000))) < 2**63


@pytest.mark.parametrize("kind, mixing", [("class_balanced", "unimix"), ("instance", "none")])
def test_two_processes_see_disjoint_shares_of_one_sampled_sequence(tmp_path, kind, mixing):
    """A real 2-process (gloo, CPU) training run through Trainer and accelerate: each epoch, the two ranks' batches
    interleave into exactly the sequence one process draws, so they are disjoint shares with the sampler's class
    distribution, re-seeded per epoch; UniMix's partners travel with their images. Each rank draws its own mixing
    factors, and a run resumed mid-epoch continues that epoch's order and draws on both ranks."""
    result = run_two_processes(REPO / "tests/helpers/record_sampling.py", tmp_path, kind, mixing)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert all(not GLOO_THREADS & set(r["threads_at_exit"]) for r in ranks)  # joined by `end_training` (issue 15)

    sys.path.insert(0, str(REPO / "tests/helpers"))
    from record_sampling import COUNTS as counts  # noqa: E402

    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    reference = build_train_sampler(labels, kind, 2, seed=3, partner_tau=-1.0 if mixing == "unimix" else None)
    orders = []
    for epoch in (0, 1):
        steps = [[s for s in r["steps"] if s["epoch"] == epoch] for r in ranks]
        assert len(steps[0]) == len(steps[1]) == 15
        interleaved = [step for pair in zip(*steps) for step in pair]  # batch k of rank r is batch 2k + r
        reference.set_epoch(epoch)
        expected = list(reference)
        if mixing == "unimix":
            assert [(i, j) for s in interleaved for i, j in zip(s["idx"], s["partner_idx"])] == expected
        else:
            assert [i for s in interleaved for i in s["idx"]] == expected
            assert all(s["partner_idx"] is None for s in interleaved)
            assert sorted(expected) == list(range(len(labels)))  # so the two ranks' images are disjoint
        assert all(labels[i] == y for s in interleaved for i, y in zip(s["idx"], s["labels"]))
        orders.append(expected)
    assert orders[0] != orders[1]
    for rank in ranks:
        # resumed at step 20, mid-epoch 1: the rest of epoch 1's order (not epoch 0's replayed), the same factors
        assert len(rank["steps"]) == 30 and rank["resumed_steps"] == rank["steps"][20:]
        assert rank["resumed_draws"] == rank["draws"][20:]
    if mixing == "unimix":  # one Beta draw of factors per step, different on each rank at every step
        assert len(ranks[0]["draws"]) == len(ranks[1]["draws"]) == 30
        assert all(a != b for a, b in zip(ranks[0]["draws"], ranks[1]["draws"]))
