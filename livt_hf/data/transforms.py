"""Image transforms for both stages (LiVT Table 9), applied lazily with `Dataset.set_transform`.

MGP: RandomResizedCrop + flip + normalise. BFT adds RandAugment "(9, 0.5)" (timm's `rand-m9-mstd0.5`, as MAE's
fine-tuning) and RandomErasing 0.25; mixup / cutmix run later, in the training step (`mixing.py`). Training
augmentation is only ever attached to the train split; validation and test get the deterministic resize + centre crop.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch
from datasets import DatasetDict
from torchvision.transforms import v2 as T
from transformers import ViTImageProcessor

logger = logging.getLogger(__name__)


def image_mode(num_channels: int) -> str:
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}.")
    return "L" if num_channels == 1 else "RGB"


SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "F"}) | SIXTEEN_BIT_MODES


def convert_image(image: PIL.Image.Image, mode: str) -> PIL.Image.Image:
    """`image` in `mode` ('L' or 'RGB'), whatever mode its file has.

    - Transparency is composited onto white, as the saved processor's `convert_to_rgb` does at inference, so
      training sees what a deployed model sees (PIL's own conversion drops alpha: transparent pixels keep their
      hidden, often black, colour).
    - 16-bit grayscale ('I;16*', 16-bit PNG and TIFF) is scaled to 8 bits (v / 257, 65535 → 255): PIL clips it at
      255, which turns nearly every pixel white.
    - 32-bit 'I' and float 'F' keep PIL's convention, values on the 0–255 scale (clipped): that is what `datasets`
      stores integer and float arrays as, and their files carry no range to scale by.
    - Other colour modes (P, CMYK, YCbCr, LAB, HSV) go through RGB: PIL cannot turn every one of them into 'L'.
    """
    if image.mode == mode:
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        image = PIL.Image.fromarray(np.rint(np.asarray(image) / 257).astype(np.uint8), "L")
    elif "A" in image.getbands() or image.info.get("transparency") is not None:
        white = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    elif image.mode not in GRAYSCALE_MODES | {"RGB"}:
        image = image.convert("RGB")
    return image.convert(mode)


_MAX_LEVEL = 10  # timm's magnitude scale: level 10 is each op's largest change
_LEVEL_BINS = 101  # torchvision bins on that scale in steps of 0.1, so a noisy level keeps its precision


def check_rand_augment(num_ops: int, magnitude: float, magnitude_std: float) -> None:
    """The RandAugment arguments both the per-image and the batched (`batch_augment.py`) implementations accept."""
    if num_ops < 1 or not 0 <= magnitude <= _MAX_LEVEL or magnitude_std < 0:
        raise ValueError(
            f"RandAugment needs ≥ 1 op, a magnitude in [0, {_MAX_LEVEL}] and a std ≥ 0; got n={num_ops}, "
            f"m={magnitude}, mstd={magnitude_std}."
        )


class NoisyRandAugment(torch.nn.Module):
    """RandAugment on timm's 0–10 magnitude scale, the level drawn per op from N(magnitude, magnitude_std) and
    clipped to [0, 10] (timm's `mstd`). Each op is torchvision's `RandAugment` with one op, whose operations already
    grow more severe with the magnitude (timm's `inc1` variants)."""

    def __init__(self, num_ops: int, magnitude: float, magnitude_std: float = 0.0):
        super().__init__()
        check_rand_augment(num_ops, magnitude, magnitude_std)
        self.num_ops, self.magnitude, self.magnitude_std = num_ops, magnitude, magnitude_std
        self.op = T.RandAugment(
            num_ops=1, num_magnitude_bins=_LEVEL_BINS, interpolation=T.InterpolationMode.BILINEAR, fill=128
        )

    def forward(self, image):
        for _ in range(self.num_ops):
            level = self.magnitude + self.magnitude_std * torch.randn(()).item()
            self.op.magnitude = round(min(max(level, 0.0), _MAX_LEVEL) * (_LEVEL_BINS - 1) / _MAX_LEVEL)
            image = self.op(image)
        return image


def parse_rand_augment(spec: str) -> tuple[int, float, float] | None:
    """(ops, magnitude, std) of timm's RandAugment string `rand-m9[-n2][-mstd0.5][-inc1]` (n defaults to 2 ops); None
    for 'none' and 'autoaugment', the specs that are not RandAugment. One parser for the per-image and batched paths."""
    if spec in ("none", "autoaugment"):
        return None
    match = re.fullmatch(r"rand-m(\d+(?:\.\d+)?)(?:-n(\d+))?(?:-mstd(\d+(?:\.\d+)?))?(?:-inc1)?", spec)
    if match is None:
        raise ValueError(
            f"Unknown --auto_augment {spec!r}: use 'none', 'autoaugment', or a RandAugment string such as "
            "'rand-m9-mstd0.5' (magnitude 9 of 10, noise std 0.5, optional '-n<ops>')."
        )
    magnitude, num_ops, std = match.groups()
    return int(num_ops or 2), float(magnitude), float(std or 0.0)


def auto_augment_transform(spec: str) -> torch.nn.Module | None:
    """`none`, torchvision's ImageNet `autoaugment` policy, or timm's RandAugment string `rand-m9[-n2][-mstd0.5][-inc1]`
    (LiVT Table 9's "(9, 0.5)" is `rand-m9-mstd0.5`; n defaults to 2 ops)."""
    if spec == "autoaugment":
        return T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, interpolation=T.InterpolationMode.BILINEAR, fill=128)
    rand_augment = parse_rand_augment(spec)
    return None if rand_augment is None else NoisyRandAugment(*rand_augment)


def check_crop_and_erasing(
    crop_min_scale: float, random_erasing: float = 0.0, random_translate: int = 0, image_size: int | None = None
) -> None:
    """The crop, translation and erasing arguments both the per-image and the batched training transforms accept."""
    if not 0 < crop_min_scale <= 1:
        raise ValueError(f"--crop_min_scale must be in (0, 1], got {crop_min_scale}.")
    if not 0 <= random_erasing <= 1:
        raise ValueError(f"--random_erasing is a probability in [0, 1], got {random_erasing}.")
    if random_translate < 0 or (image_size is not None and random_translate >= image_size):
        raise ValueError(
            f"--random_translate is a shift in pixels, 0 (off) up to the image size less one"
            f"{f' ({image_size - 1})' if image_size is not None else ''}, got {random_translate}."
        )


def train_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_min_scale: float,
    auto_augment: str = "none",
    random_erasing: float = 0.0,
    random_translate: int = 0,
) -> Callable:
    """RandomResizedCrop [+ translation] + horizontal flip [+ auto-augment] + normalise [+ RandomErasing].

    MGP uses none of the bracketed steps (LiVT Table 9). The translation is the CIFAR recipe's pad-and-crop: a shift
    of up to `random_translate` pixels along each axis, black filling the border. RandomErasing fills with per-pixel
    Gaussian noise after normalisation (timm's `mode='pixel'`, as in MAE / LiVT).
    """
    check_crop_and_erasing(crop_min_scale, random_erasing, random_translate, image_size)
    augment = auto_augment_transform(auto_augment)
    steps = [
        T.ToImage(),
        T.RandomResizedCrop(image_size, scale=(crop_min_scale, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        *([T.RandomCrop(image_size, padding=random_translate, fill=0)] if random_translate > 0 else []),
        T.RandomHorizontalFlip(),
        *([augment] if augment is not None else []),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std),
    ]
    if random_erasing > 0:
        steps.append(T.RandomErasing(p=random_erasing, value="random"))
    return T.Compose(steps)


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
    """Wrap an image transform for `Dataset.set_transform`: `image`/`label` columns → `pixel_values`/`labels`, every
    image first converted to the model's mode (`convert_image`).

    MGP takes no labels (`with_labels=False`): ViTMAE's forward has no `labels` argument.
    """
    mode = image_mode(num_channels)

    def apply(batch: dict) -> dict:
        out = {"pixel_values": [transform(convert_image(image, mode)) for image in batch["image"]]}
        if with_labels:
            out["labels"] = batch["label"]
        return out

    return apply


def image_processor(
    image_size: int, num_channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> ViTImageProcessor:
    """The processor saved with every checkpoint: its size, mean and std are what the transforms use (default mean and
    std: 0.5 per channel, what a model trained from scratch here uses).

    Every processor converts its input to RGB (alpha on white), whatever the mode: HF processors have no grayscale
    step, and without the conversion a palette image would pass its indices, an RGBA one 4 channels. A grayscale
    model reads the luma of that RGB input (`LiVTModel`), which for an 'L' image is the image itself.
    """
    image_mode(num_channels)
    return ViTImageProcessor(
        do_convert_rgb=True,
        size={"height": image_size, "width": image_size},
        image_mean=list(mean) if mean is not None else [0.5] * num_channels,
        image_std=list(std) if std is not None else [0.5] * num_channels,
    )


def checkpoint_processor(checkpoint: str | None, image_size: int, num_channels: int) -> tuple[ViTImageProcessor, str]:
    """The processor a run trains with and a sentence saying what it is and where its mean and std come from (for the
    log, which gets it here, and the model card).

    From the processor saved with `checkpoint` (folder or Hub id) when there is one: a model keeps seeing inputs
    normalised as in its pretraining (the Hub's ViTMAEs: ImageNet's mean and std). Its size becomes `image_size`, the
    model's input size. A checkpoint saved without a processor gets mean = std = 0.5, with a warning; so does a new
    model (`checkpoint` None), without one.
    """
    if checkpoint is None:
        return _described(image_processor(image_size, num_channels), "mean = std = 0.5, for a new model")
    try:
        saved = ViTImageProcessor.from_pretrained(checkpoint)
    except OSError as err:
        logger.warning("%s has no saved image processor (%s): its training inputs are normalised with mean = std = "
                       "0.5. If it was pretrained with another mean and std, save its processor (preprocessor_config"
                       ".json) beside it.", checkpoint, str(err).splitlines()[0])  # fmt: skip
        return _described(image_processor(image_size, num_channels),
                          f"mean = std = 0.5, the default ({checkpoint} has no saved image processor)")  # fmt: skip
    if not (saved.do_rescale and math.isclose(saved.rescale_factor, 1 / 255) and saved.do_normalize):
        raise ValueError(
            f"The image processor of {checkpoint} has do_rescale {saved.do_rescale}, rescale_factor "
            f"{saved.rescale_factor:g}, do_normalize {saved.do_normalize}; the training transforms scale pixels to [0, 1] "
            "and normalise them with its mean and std, as a ViTImageProcessor does by default. Save one with those "
            "defaults beside the checkpoint, or remove its preprocessor_config.json to use mean = std = 0.5."
        )
    mean, std = (_per_channel(saved, name, num_channels, checkpoint) for name in ("image_mean", "image_std"))
    origin = f"the image processor saved with {checkpoint}"
    saved_size = (saved.size["height"], saved.size["width"])
    if saved_size != (image_size, image_size):
        origin += f" (its {saved_size[0]} × {saved_size[1]} px become the model's {image_size} × {image_size})"
    return _described(image_processor(image_size, num_channels, mean, std), origin)


def _per_channel(processor: ViTImageProcessor, name: str, num_channels: int, checkpoint: str) -> list[float]:
    """A processor's `image_mean` / `image_std` as one value per channel of the model (one value: every channel)."""
    values = getattr(processor, name)
    values = [float(v) for v in (values if isinstance(values, Sequence) else [values])]
    if len(set(values)) == 1:
        return values[:1] * num_channels
    if len(values) != num_channels:
        raise ValueError(
            f"The image processor of {checkpoint} has {name} {values} for a {num_channels}-channel model: one value "
            f"per channel is needed. Save a processor with {num_channels} value(s) beside the checkpoint."
        )
    return values


def _described(processor: ViTImageProcessor, origin: str) -> tuple[ViTImageProcessor, str]:
    size = processor.size["height"]
    text = f"{size} × {size} px, mean {list(processor.image_mean)}, std {list(processor.image_std)}: {origin}"
    logger.info("Image processor: %s.", text)
    return processor, text


def attach_transforms(
    splits: DatasetDict,
    processor: ViTImageProcessor,
    crop_min_scale: float,
    with_labels: bool = True,
    auto_augment: str = "none",
    random_erasing: float = 0.0,
    random_translate: int = 0,
) -> None:
    """Training augmentation on `train`, the deterministic eval transform on every other split."""
    size, mean, std = processor.size["height"], processor.image_mean, processor.image_std
    for name, split in splits.items():
        if name == "train":
            transform = train_transform(size, mean, std, crop_min_scale, auto_augment, random_erasing, random_translate)
        else:
            transform = eval_transform(size, mean, std)
        split.set_transform(batch_transform(transform, len(mean), with_labels))
