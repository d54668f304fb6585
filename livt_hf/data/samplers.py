"""Class-aware training samplers: instance-balanced, class-balanced, square-root, progressively balanced, and
UniMix's partner sampler (UniMix Eq. 9).

Every sampler draws from its own generator seeded by (seed, epoch), so all processes of a distributed run
produce the same sequence and `accelerate` hands each one a disjoint share of its batches (`BatchSamplerShard`);
`set_epoch` (called by Trainer through accelerate, or through `PairedDataset` where accelerate cannot reach the
sampler) re-seeds it every epoch, and a resumed run replays the interrupted epoch's order exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

SAMPLERS = ("instance", "class_balanced", "sqrt", "progressive")
# class probability ∝ n_c^q (Kang et al. 2020, "Decoupling representation and classifier")
_CLASS_POWER = {"instance": 1.0, "class_balanced": 0.0, "sqrt": 0.5}


def class_power_weights(labels: torch.Tensor, power: float) -> torch.Tensor:
    """Per-sample weights under which class c is drawn with probability ∝ n_c^power.

    power 1: instance-balanced, 0.5: square-root, 0: class-balanced, τ: UniMix's sampler (τ < 0 favours the tail).
    """
    counts = torch.bincount(labels).double()
    return counts.pow(power - 1)[labels]  # class total: n_c · n_c^(power − 1) = n_c^power


def class_probabilities(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The probability of drawing each class under per-sample `weights`."""
    return torch.bincount(labels, weights=weights) / weights.sum()


class ClassAwareSampler(Sampler[int]):
    """`len(labels)` indices per epoch. "instance" is a shuffle without replacement; the others draw with
    replacement with class probability ∝ n_c^q; "progressive" moves linearly from instance- to class-balanced:
    p(t) = (1 − t/T) p_IB + (t/T) p_CB at epoch t of T (Kang et al. 2020)."""

    def __init__(self, labels: Sequence[int], kind: str = "instance", num_epochs: int | None = None, seed: int = 0):
        if kind not in SAMPLERS:
            raise ValueError(f"Unknown sampler {kind!r}; choose one of {SAMPLERS}.")
        if kind == "progressive" and (num_epochs is None or num_epochs < 1):
            raise ValueError(f"The progressive sampler needs the number of training epochs (≥ 1), got {num_epochs}.")
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise ValueError("The sampler needs one label per training image, and at least one image.")
        self.kind, self.num_epochs, self.seed, self.epoch = kind, num_epochs, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def weights(self, epoch: int) -> torch.Tensor:
        """Per-sample draw weights at `epoch` (the instance sampler's are uniform)."""
        if self.kind != "progressive":
            return class_power_weights(self.labels, _CLASS_POWER[self.kind])
        t = min(epoch / self.num_epochs, 1.0)
        instance = class_power_weights(self.labels, 1.0)
        balanced = class_power_weights(self.labels, 0.0)
        return (1 - t) * instance / instance.sum() + t * balanced / balanced.sum()

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch, stream=0))
        if self.kind == "instance":
            yield from torch.randperm(len(self.labels), generator=generator).tolist()
        else:
            yield from torch.multinomial(self.weights(self.epoch), len(self.labels), True, generator=generator).tolist()


class PartnerSampler(Sampler):
    """Pairs every index of `base` with a partner drawn with class probability ∝ π_c^τ (UniMix Eq. 9, the
    sampler R* of Alg. 1), for the epochs before `until_epoch`; afterwards it yields `base`'s indices alone, so
    no partner image is loaded once mixing stops (Alg. 1's T1 → T2)."""

    def __init__(self, base: ClassAwareSampler, tau: float, until_epoch: int | None = None):
        if tau > 1:
            raise ValueError(f"UniMix's sampler needs τ ≤ 1 (1: random, < 0: tail-favoured), got {tau}.")
        self.base, self.tau, self.until_epoch = base, tau, until_epoch
        self.partner_weights = class_power_weights(base.labels, tau)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        epoch = self.base.epoch
        if self.until_epoch is not None and epoch >= self.until_epoch:
            yield from self.base
            return
        generator = torch.Generator().manual_seed(_epoch_seed(self.base.seed, epoch, stream=1))
        partners = torch.multinomial(self.partner_weights, len(self.base), True, generator=generator).tolist()
        yield from zip(self.base, partners)


class PairedDataset(Dataset):
    """Loads an `(i, j)` index from `PartnerSampler` as example i with example j's fields under a `partner_`
    prefix, so partner images go through the same workers and augmentation; a plain index loads one example.

    Each batch is loaded under its own torch RNG, seeded from `seed` and the batch's indices, so the per-image
    augmentation of a batch is the same whenever, and in whichever worker, it is loaded: a run resumed mid-epoch
    loads its first batches before Trainer restores the checkpoint's RNG state (and accelerate's loader fetches one
    batch ahead), which with the global RNG gave those batches other augmentations and shifted every later draw.

    `set_epoch` forwards to `sampler`: accelerate's loader calls the dataset's when it cannot reach the sampler,
    as in an epoch resumed mid-way under DDP (its skipping batch sampler wraps the per-process shard), where the
    sampler would otherwise replay epoch 0's order."""

    def __init__(self, dataset, sampler: ClassAwareSampler | PartnerSampler | None = None, seed: int = 0):
        self.dataset, self.sampler, self.seed = dataset, sampler, seed

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list[dict]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, keys))
            if not keys or not isinstance(keys[0], tuple):
                return self._load(keys)
            firsts, partners = self._load([i for i, _ in keys]), self._load([j for _, j in keys])
        return [a | {f"partner_{k}": v for k, v in b.items()} for a, b in zip(firsts, partners)]

    def _load(self, indices: list[int]) -> list[dict]:
        """A batched read where the dataset has one (Hugging Face Datasets: one transform call per batch)."""
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(indices)
        return [self.dataset[i] for i in indices]


def batch_seed(seed: int, keys: list) -> int:
    """A 63-bit seed from the run's seed and a batch's indices (pairs flattened): the sampler's order is a function
    of (seed, epoch), so every batch of a run gets its own seed, the same in a resumed run."""
    values = np.asarray([seed, *np.asarray(keys, dtype=np.int64).ravel()], dtype=np.int64)
    return int.from_bytes(hashlib.blake2b(values.tobytes(), digest_size=8).digest(), "little") >> 1


def build_train_sampler(
    labels: Sequence[int],
    kind: str,
    num_epochs: int | None,
    seed: int,
    partner_tau: float | None = None,
    partner_until_epoch: int | None = None,
) -> ClassAwareSampler | PartnerSampler:
    """The `kind` sampler over the train labels; with `partner_tau` (UniMix), wrapped to yield partners too."""
    sampler = ClassAwareSampler(labels, kind, num_epochs, seed)
    return sampler if partner_tau is None else PartnerSampler(sampler, partner_tau, partner_until_epoch)


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """One seed per (run seed, epoch, stream): the same on every process, different every epoch."""
    return (seed * 1_000_003 + epoch) * 2 + stream


__all__ = [
    "ClassAwareSampler",
    "build_train_sampler",
    "PairedDataset",
    "PartnerSampler",
    "batch_seed",
    "SAMPLERS",
    "class_power_weights",
    "class_probabilities",
]
