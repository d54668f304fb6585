"""Image transforms for both stages (LiVT Table 9), applied lazily with `Dataset.with_transform`.

Training augmentation is only ever attached to the train split; validation and test get the deterministic
resize + centre crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from datasets import DatasetDict
from torchvision.transforms import v2 as T
from transformers import ViTImageProcessor


def image_mode(num_channels: int) -> str:
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}.")
    return "L" if num_channels == 1 else "RGB"


def train_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], crop_min_scale: float
) -> Callable:
    """RandomResizedCrop + horizontal flip + normalise: the MGP recipe, and the BFT base before mixing."""
    if not 0 < crop_min_scale <= 1:
        raise ValueError(f"--crop_min_scale must be in (0, 1], got {crop_min_scale}.")
    return T.Compose(
        [
            T.ToImage(),
            T.RandomResizedCrop(image_size, scale=(crop_min_scale, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean, std),
        ]
    )


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """Resize the short side to `image_size` and centre-crop: no randomness."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean, std),
        ]
    )


def batch_transform(transform: Callable, num_channels: int, with_labels: bool = True) -> Callable[[dict], dict]:
    """Wrap an image transform for `Dataset.set_transform`: `image`/`label` columns → `pixel_values`/`labels`.

    MGP takes no labels (`with_labels=False`): ViTMAE's forward has no `labels` argument.
    """
    mode = image_mode(num_channels)

    def apply(batch: dict) -> dict:
        out = {"pixel_values": [transform(image.convert(mode)) for image in batch["image"]]}
        if with_labels:
            out["labels"] = batch["label"]
        return out

    return apply


def image_processor(image_size: int, num_channels: int) -> ViTImageProcessor:
    """The processor saved with every checkpoint: its size, mean and std are what the transforms use."""
    image_mode(num_channels)
    return ViTImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5] * num_channels,
        image_std=[0.5] * num_channels,
    )


def attach_transforms(
    splits: DatasetDict, processor: ViTImageProcessor, crop_min_scale: float, with_labels: bool = True
) -> None:
    """Training augmentation on `train`, the deterministic eval transform on every other split."""
    size, mean, std = processor.size["height"], processor.image_mean, processor.image_std
    for name, split in splits.items():
        transform = train_transform(size, mean, std, crop_min_scale) if name == "train" else eval_transform(size, mean, std)
        split.set_transform(batch_transform(transform, len(mean), with_labels))
