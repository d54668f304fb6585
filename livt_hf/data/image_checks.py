"""Checks on the image files themselves: a full decode of every image before training, so that a corrupt or truncated
file stops the run (or is left out of it) up front instead of crashing a DataLoader worker mid-epoch, and a cheap
look at the images' modes."""

from __future__ import annotations

import io
import logging
import os
from collections import Counter

import numpy as np
import PIL.Image
from datasets import Dataset, DatasetDict, Image

logger = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("error", "skip", "no_check")
MAX_BAD_IMAGE_FRACTION = 0.01  # --bad_images skip: the default share of a split that may be left out
# what PIL raises for a file it cannot decode: truncated or unidentified data (OSError), malformed headers
# (SyntaxError, ValueError, EOFError), a missing file (FileNotFoundError), an image past its pixel limit
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, PIL.Image.DecompressionBombError)
_LISTED = 5  # bad files named in a message


def default_check_workers() -> int:
    """This process's share of the machine's cores (at most 8): every process of a distributed run scans."""
    return max(1, min(8, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _open(value: dict) -> PIL.Image.Image:
    """A `datasets.Image(decode=False)` value (`bytes` or `path`) opened lazily: PIL reads the header only."""
    return PIL.Image.open(io.BytesIO(value["bytes"]) if value["bytes"] is not None else value["path"])


def _decode_errors(batch: dict) -> dict:
    errors = []
    for value in batch["image"]:
        try:
            with _open(value) as image:
                image.load()
            errors.append("")
        except DECODE_ERRORS as err:
            errors.append(f"{type(err).__name__}: {err}")
    return {"decode_error": errors}


def _undecoded(dataset: Dataset) -> Dataset:
    return dataset.select_columns(["image"]).cast_column("image", Image(decode=False))


def find_bad_images(dataset: Dataset, num_proc: int = 1, desc: str = "Checking images") -> dict[int, str]:
    """Row index → "path (error)" for every image of `dataset` that PIL cannot fully decode.

    Nothing is cached: a file fixed since the last run must not be reported again from a stale result.
    """
    errors = _undecoded(dataset).map(
        _decode_errors,
        batched=True,
        batch_size=64,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=["image"],
        keep_in_memory=True,
        load_from_cache_file=False,
        desc=desc,
    )["decode_error"]
    bad = [i for i, error in enumerate(errors) if error]
    if not bad:
        return {}
    values = _undecoded(dataset).select(bad)["image"]
    return {i: f"{v['path'] or f'row {i}'} ({errors[i]})" for i, v in zip(bad, values)}


def check_images(
    dataset: DatasetDict, policy: str = "error", max_fraction: float = MAX_BAD_IMAGE_FRACTION, num_proc: int = 1
) -> tuple[DatasetDict, dict[str, list[str]]]:
    """Decode every image of every split; with `policy` "error" raise if any fails, with "skip" leave the failures
    out (at most `max_fraction` of each split). Returns the dataset and the images left out, per split."""
    if policy not in ("error", "skip"):
        raise ValueError(f"Unknown bad-image policy {policy!r}; the scan takes 'error' or 'skip'.")
    bad = {name: find_bad_images(split, num_proc, f"Checking {name} images") for name, split in dataset.items()}
    if policy == "error" and any(bad.values()):
        raise ValueError(
            f"{_describe(bad, dataset)} cannot be decoded: {_first(bad)}. Fix or remove those files, or pass "
            "--bad_images skip to train without them (at most --max_bad_image_fraction of a split)."
            + _missing_hint(bad)
        )
    for name, failed in bad.items():
        if len(failed) > max_fraction * len(dataset[name]):
            raise ValueError(
                f"{_describe({name: failed}, dataset)} ({len(failed) / len(dataset[name]):.1%}) cannot be decoded, "
                f"more than --max_bad_image_fraction {max_fraction:g} allows: {_first({name: failed})}. Fix the data, "
                "or raise --max_bad_image_fraction if losing this many is acceptable." + _missing_hint({name: failed})
            )
    if any(bad.values()):
        logger.warning(
            "--bad_images skip: leaving out %s that cannot be decoded: %s. Class counts are computed without them.",
            _describe(bad, dataset),
            _first(bad),
        )
    kept = DatasetDict(
        {name: split.select(sorted(set(range(len(split))) - set(bad[name]))) if bad[name] else split
         for name, split in dataset.items()}  # fmt: skip
    )
    return kept, {name: list(failed.values()) for name, failed in bad.items() if failed}


def _describe(bad: dict[str, dict], dataset: DatasetDict) -> str:
    counts = [f"{len(failed)} of {len(dataset[name])} {name} images" for name, failed in bad.items() if failed]
    return ", ".join(counts)


def _first(bad: dict[str, dict]) -> str:
    listed = [f"{name}: {item}" for name, failed in bad.items() for item in failed.values()]
    return "; ".join(listed[:_LISTED]) + (f"; … ({len(listed) - _LISTED} more)" if len(listed) > _LISTED else "")


def _missing_hint(bad: dict[str, dict]) -> str:
    missing = sum("FileNotFoundError" in item for failed in bad.values() for item in failed.values())
    return f" {missing} of the files do not exist: check --image_root and the lists' paths." if missing else ""


def sample_image_modes(dataset: Dataset, sample_size: int = 1000) -> Counter[str]:
    """The modes of up to `sample_size` images spread evenly over `dataset` (so every class of a class-sorted split is
    seen), read from the headers without decoding the pixels: cheap even for JPEG folders."""
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), sample_size)).round().astype(int))
    modes = Counter()
    for value in _undecoded(dataset).select(indices)["image"]:
        with _open(value) as image:
            modes[image.mode] += 1
    return modes
