"""`--augment_on_device`: the train split decoded once into a uint8 tensor on the training device and augmented a
whole batch at a time there (`batch_augment.py`), instead of per image in DataLoader workers.

For small images (Fashion-MNIST, CIFAR: a few KB each) a GPU trains a small ViT faster than CPU workers can decode
and augment: the loader then only moves indices, and the images never leave the GPU. The samplers, partner pairs
(UniMix) and mixing work unchanged; evaluation keeps the per-image CPU transform.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch
from datasets import Dataset as HFDataset
from torch.utils.data import Dataset
from transformers import ViTImageProcessor

from .batch_augment import batch_train_transform
from .transforms import convert_image, image_mode

logger = logging.getLogger(__name__)

INDEX_KEY = "image_index"
# the decoded split may use at most this share of the GPU's free memory: the model and its activations need the rest
MAX_MEMORY_SHARE = 0.5


class IndexedImages(Dataset):
    """The train rows as `{"image_index": i[, "labels": y]}`: what the DataLoader moves instead of images."""

    def __init__(self, labels: Sequence[int] | None, size: int):
        self.labels, self.size = labels, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        return {INDEX_KEY: i} | ({"labels": self.labels[i]} if self.labels is not None else {})


def decode_images(split: HFDataset, num_channels: int, image_size: int) -> torch.Tensor:
    """Every image of `split` as one uint8 (N, C, H, W) tensor, in the model's mode (`convert_image`).

    Images of one common size keep it, so RandomResizedCrop crops exactly what the per-image path crops; images of
    several sizes are each resized (bicubic) to `image_size` × `image_size` first, a square they can be stacked in.
    """
    mode = image_mode(num_channels)
    images = [convert_image(row["image"], mode) for row in split.select_columns(["image"])]
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        logger.warning("--augment_on_device: train images have %d sizes; each is resized to %d × %d once before "
                       "the random crops (non-square images are squeezed).", len(sizes), image_size, image_size)
        images = [image.resize((image_size, image_size), PIL.Image.Resampling.BICUBIC) for image in images]
    arrays = np.stack([np.asarray(image) for image in images])
    return torch.from_numpy(arrays.reshape(*arrays.shape[:3], num_channels)).permute(0, 3, 1, 2).contiguous()


def check_fits_on_gpu(images: torch.Tensor) -> None:
    """Refuse a decoded split that would crowd the model out of GPU memory, with the numbers and the way out."""
    if not torch.cuda.is_available():
        return
    size, free = images.nbytes, torch.cuda.mem_get_info()[0]
    if size > MAX_MEMORY_SHARE * free:
        raise ValueError(
            f"--augment_on_device: the decoded train split ({tuple(images.shape)} uint8, {size / 2**30:.1f} GiB) "
            f"would take more than {MAX_MEMORY_SHARE:.0%} of the GPU's free {free / 2**30:.1f} GiB. Drop "
            "--augment_on_device (DataLoader workers then decode and augment each image), or train at a lower "
            "--image_size."
        )


class DeviceImages:
    """The decoded train images and the batched train transform: turns the loader's `image_index` (and UniMix's
    `partner_image_index`) into augmented `pixel_values` on the batch's device. The images are copied there once."""

    def __init__(self, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.images, self.transform = images, transform

    def __call__(self, inputs: dict) -> dict:
        for prefix in ("", "partner_"):
            index = inputs.pop(prefix + INDEX_KEY, None)
            if index is not None:
                if self.images.device != index.device:
                    self.images = self.images.to(index.device)
                inputs[prefix + "pixel_values"] = self.transform(self.images[index])
        return inputs


def device_train_data(
    split: HFDataset,
    processor: ViTImageProcessor,
    crop_min_scale: float,
    with_labels: bool = True,
    auto_augment: str = "none",
    random_erasing: float = 0.0,
    random_translate: int = 0,
) -> tuple[IndexedImages, DeviceImages]:
    """The train dataset for the loader (indices) and the `DeviceImages` that `LiVTTrainer` turns them into images
    with: the same augmentation `attach_transforms` gives the per-image path, batched."""
    size, mean, std = processor.size["height"], processor.image_mean, processor.image_std
    transform = batch_train_transform(size, mean, std, crop_min_scale, auto_augment, random_erasing, random_translate)
    images = decode_images(split, len(mean), size)
    check_fits_on_gpu(images)
    logger.info("--augment_on_device: %d train images decoded, %.1f MiB, augmented in batches on the device.",
                len(images), images.nbytes / 2**20)  # fmt: skip
    labels = list(split["label"]) if with_labels else None  # read now: a lazy column would go through set_transform
    return IndexedImages(labels, len(images)), DeviceImages(images, transform)
