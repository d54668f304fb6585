"""Fine-tuning augmentation on whole batches, on the images' device: the batched twin of `train_transform`.

Small images (28-px Fashion-MNIST) make the per-image CPU transforms the bottleneck of a small ViT on a GPU. Here the
decoded uint8 train set can stay on the GPU and be augmented a batch at a time, each sample with its own random
parameters drawn as torchvision draws them. Nothing syncs host and device: no `.item()`, no masked indexing, no Python
branch on a tensor's value; per-sample choices are `torch.where` selections. Draws use the global torch RNG on the
images' device, so the Trainer's seeding and checkpointed RNG states cover them.

Images are float (B, C, H, W) in [0, 1] until normalised. The CPU path rounds to uint8 after every step; here values
stay float, so outputs differ from it by that rounding (about 1/255 a step; `tests/test_batch_augment.py` bounds each).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .transforms import _LEVEL_BINS, _MAX_LEVEL, check_crop_and_erasing, check_rand_augment, parse_rand_augment

OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
    "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # torchvision RandAugment's ops, in its order
GEOMETRIC_OPS = OPS[1:6]
SIGNED_OPS = OPS[1:10]  # torchvision negates their magnitude with probability 1/2
GRAY = 128 / 255  # the CPU path's fill=128


def _per_sample(values: Tensor) -> Tensor:
    return values.reshape(-1, 1, 1, 1)


def _cubic(x: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic with a = -0.5: the kernel of `interpolate(mode='bicubic', antialias=True)`, so of torchvision's
    `resize` (plain bicubic `interpolate` and `grid_sample` use a = -0.75)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _resize_weights(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """(B, out_size, in_size): row i weighs the input pixels for output pixel i of a per-sample crop [start,
    start + length) along one axis, as antialiased bicubic `interpolate` does: kernel widened by the scale when
    downsampling, taps outside the crop dropped and the rest renormalised."""
    scale = (length / out_size).unsqueeze(-1)
    stretch = scale.clamp(min=1)
    centres = scale * (torch.arange(out_size, device=start.device) + 0.5)
    offsets = torch.arange(in_size, device=start.device) - start.unsqueeze(-1)  # input pixel index within the crop
    inside = (offsets >= 0) & (offsets < length.unsqueeze(-1))
    weights = _cubic((offsets.unsqueeze(1) + 0.5 - centres.unsqueeze(-1)) / stretch.unsqueeze(-1))
    weights = weights * inside.unsqueeze(1)
    return weights / weights.sum(-1, keepdim=True)


def crop_flip(images: Tensor, boxes: Tensor, flips: Tensor, size: int) -> Tensor:
    """Per-sample `resized_crop(top, left, height, width → size², bicubic, antialias=True)` then `horizontal_flip`
    where `flips`, clamped to [0, 1] as the uint8 path's saturating cast is. `boxes` is (B, 4): top, left, height,
    width. The resize is separable, so it is two batched matmuls with per-sample weight matrices; the flip reverses
    the column matrix."""
    boxes = boxes.to(torch.float32)
    rows = _resize_weights(boxes[:, 0], boxes[:, 2], images.shape[-2], size)
    cols = _resize_weights(boxes[:, 1], boxes[:, 3], images.shape[-1], size)
    cols = torch.where(flips.reshape(-1, 1, 1), cols.flip(1), cols)
    rows, cols = rows.to(images.dtype).unsqueeze(1), cols.to(images.dtype).unsqueeze(1)
    return (rows @ images @ cols.transpose(-1, -2)).clamp(0, 1)


def _box_sides(
    batch: int, image_area: int, scale: Sequence[float], ratio: Sequence[float], device: torch.device
) -> tuple[Tensor, Tensor]:
    """(B, 10) tries of round(√(a·r)), round(√(a/r)), area a ~ U(scale)·image_area and log r ~ U(log ratio): the sides
    torchvision's RandomResizedCrop (w, h) and RandomErasing (h, w) try."""
    area = torch.empty(batch, 10, device=device).uniform_(scale[0], scale[1]) * image_area
    aspect = torch.empty(batch, 10, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    return (area * aspect).sqrt().round(), (area / aspect).sqrt().round()


def _first_fit(fits: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """Per row, each of `values` at the first try that `fits` (the first try where none does)."""
    first = fits.int().argmax(1, keepdim=True)
    return tuple(value.gather(1, first).squeeze(1) for value in values)


def _random_offset(room: Tensor) -> Tensor:
    """An integer uniform on [0, room] per sample, like `torch.randint(0, room + 1)`."""
    return torch.minimum((torch.rand(room.shape, device=room.device) * (room + 1)).floor(), room)


def sample_crop_boxes(
    batch: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float], device: torch.device
) -> Tensor:
    """(B, 4) top, left, height, width drawn as `RandomResizedCrop.make_params`: area fraction ~ U(scale), log aspect
    ~ U(log ratio), the first of 10 tries that fits, else its centre-crop fallback."""
    w, h = _box_sides(batch, height * width, scale, ratio, device)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    h, w = _first_fit(fits, h, w)
    drawn = torch.stack([_random_offset(height - h), _random_offset(width - w), h, w], 1)
    in_ratio = width / height  # the fallback: the largest centred box of aspect within `ratio`
    fallback_h = round(width / min(ratio)) if in_ratio < min(ratio) else height
    fallback_w = round(height * max(ratio)) if in_ratio > max(ratio) else width
    fallback = ((height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w)
    columns = zip(drawn.long().unbind(1), fallback)
    return torch.stack([torch.where(fits.any(1), column, value) for column, value in columns], 1)


def resized_crop_flip(
    images: Tensor, size: int, scale: Sequence[float], ratio: Sequence[float] = (3 / 4, 4 / 3), flip_prob: float = 0.5
) -> Tensor:
    """`RandomResizedCrop(size, scale, ratio, bicubic)` + `RandomHorizontalFlip(flip_prob)`, per sample."""
    batch, _, height, width = images.shape
    boxes = sample_crop_boxes(batch, height, width, scale, ratio, images.device)
    flips = torch.rand(batch, device=images.device) < flip_prob
    return crop_flip(images, boxes, flips, size)


def translate(images: Tensor, max_shift: int) -> Tensor:
    """Per-sample `RandomCrop(size, padding=max_shift, fill=0)`: each image shifted by an integer drawn uniformly from
    [-max_shift, max_shift] along each axis, zeros (black) shifted in."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch, 1), device=images.device)
    rows = offsets[0] + torch.arange(height, device=images.device)  # (B, H): the padded rows each sample keeps
    cols = offsets[1] + torch.arange(width, device=images.device)
    padded = padded.gather(2, rows[:, None, :, None].expand(-1, padded.shape[1], -1, padded.shape[3]))
    return padded.gather(3, cols[:, None, None, :].expand(-1, padded.shape[1], height, -1))


def warp(images: Tensor, theta: Tensor, fill: float) -> Tensor:
    """Bilinear `grid_sample` by per-sample `affine_grid` matrices (B, 2, 3), `fill` outside the image blended in as
    `F.affine` blends it (by the resampled coverage of a channel of ones)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    ones = torch.ones_like(images[:, :1])
    sampled = F.grid_sample(torch.cat([images, ones], 1), grid, mode="bilinear", align_corners=False)
    warped, coverage = sampled[:, :-1], sampled[:, -1:]
    return coverage * (warped - fill) + fill


def geometric_matrices(op_ids: Tensor, magnitudes: Tensor, height: int, width: int) -> Tensor:
    """(B, 2, 3) `affine_grid` matrices of torchvision's RandAugment geometry (identity for other ops): shear by
    tan = magnitude about the top-left corner, translate by int(magnitude) pixels, rotate by magnitude degrees about
    the centre. Built as torchvision's inverse maps in pixel coordinates centred on the image, then rescaled to
    `affine_grid`'s [-1, 1] coordinates (x by width / 2, y by height / 2)."""
    shear_x, shear_y, shift_x, shift_y, rotate = (op_ids == OPS.index(name) for name in GEOMETRIC_OPS)
    shift = magnitudes.trunc()
    angle = torch.deg2rad(magnitudes) * rotate
    cos, sin = angle.cos(), angle.sin()
    pixel_x = [cos, -sin + magnitudes * shear_x, magnitudes * shear_x * height / 2 - shift * shift_x]
    pixel_y = [sin + magnitudes * shear_y, cos, magnitudes * shear_y * width / 2 - shift * shift_y]
    row_x = [pixel_x[0], pixel_x[1] * (height / width), pixel_x[2] * (2 / width)]
    row_y = [pixel_y[0] * (width / height), pixel_y[1], pixel_y[2] * (2 / height)]
    return torch.stack([torch.stack(row_x, -1), torch.stack(row_y, -1)], 1)


def _grayscale(images: Tensor) -> Tensor:
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(images: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    return (ratio * images + (1 - ratio) * other).clamp(0, 1)


def brightness(images: Tensor, factor: Tensor) -> Tensor:
    return (images * factor).clamp(0, 1)


def saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale; a 1-channel image is left alone, as in torchvision (and PIL)."""
    return images if images.shape[1] == 1 else _blend(images, _grayscale(images), factor)


def contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the mean of the grayscale image."""
    return _blend(images, _grayscale(images).mean((1, 2, 3), keepdim=True), factor)


def sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 blur inside a one-pixel border, which is kept."""
    if min(images.shape[-2:]) <= 2:
        return images
    inner = images[..., 1:-1, 1:-1]
    blurred = (F.avg_pool2d(images, 3, stride=1) * 9 + 4 * inner) / 13
    out = images.clone()
    out[..., 1:-1, 1:-1] = _blend(inner, blurred, factor)
    return out


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep the top `bits` bits of the uint8 value, as torchvision's uint8 kernel (the CPU path's) does."""
    step = 2.0 ** (8 - bits)
    return torch.where(bits >= 8, images, ((images * 255).round() / step).floor() * step / 255)


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    return torch.where(images >= threshold, 1 - images, images)


def autocontrast(images: Tensor) -> Tensor:
    """Stretch each channel to [0, 1]; a constant channel is left alone."""
    low, high = images.amin((2, 3), keepdim=True), images.amax((2, 3), keepdim=True)
    flat = high == low
    span = torch.where(flat, torch.ones_like(high), high - low)
    return ((images - torch.where(flat, torch.zeros_like(low), low)) / span).clamp(0, 1)


def equalize(images: Tensor) -> Tensor:
    """Per-channel histogram equalisation on the uint8 values (`to_dtype` quantisation), with torchvision's (PIL's)
    lookup table: lut[k] = (cumhist[k-1] + step // 2) // step, step = the pixels outside the top bin // 255; a
    channel with step 0 only gets quantised."""
    values = (images * (255 + 1 - 1e-3)).long().clamp(0, 255).flatten(2)  # (B, C, HW)
    histogram = torch.zeros(*values.shape[:2], 256, dtype=torch.long, device=images.device)
    histogram.scatter_add_(2, values, torch.ones_like(values))
    cumulative = histogram.cumsum(2)
    top_count = histogram.gather(2, cumulative.argmax(2, keepdim=True))
    step = torch.div(values.shape[2] - top_count, 255, rounding_mode="floor")
    lut = torch.div(cumulative[..., :-1] + step // 2, step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
    lut = F.pad(lut, (1, 0))
    equalized = torch.where(step > 0, lut.gather(2, values), values)
    return (equalized.to(images.dtype) / 255).reshape(images.shape)


def apply_op(images: Tensor, op_ids: Tensor, magnitudes: Tensor, fill: float = GRAY) -> Tensor:
    """Op `OPS[op_ids[i]]` with torchvision's (signed) magnitude `magnitudes[i]` on sample i, as RandAugment applies
    it: factor 1 + m for the blends, int(m) bits, threshold m. Every op runs on the whole batch; each sample keeps its
    own op's result."""
    m = _per_sample(magnitudes)
    theta = geometric_matrices(op_ids, magnitudes, *images.shape[-2:])
    results = {
        "Brightness": brightness(images, 1 + m),
        "Color": saturation(images, 1 + m),
        "Contrast": contrast(images, 1 + m),
        "Sharpness": sharpness(images, 1 + m),
        "Posterize": posterize(images, m.trunc().clamp(0, 8)),
        "Solarize": solarize(images, m),
        "AutoContrast": autocontrast(images),
        "Equalize": equalize(images),
    }
    ids = _per_sample(op_ids)
    is_geometric = (ids >= OPS.index(GEOMETRIC_OPS[0])) & (ids <= OPS.index(GEOMETRIC_OPS[-1]))
    out = torch.where(is_geometric, warp(images, theta, fill), images)
    for name, result in results.items():
        out = torch.where(ids == OPS.index(name), result, out)
    return out


@functools.lru_cache(maxsize=16)
def magnitude_table(height: int, width: int, device: torch.device) -> Tensor:
    """(len(OPS), 101): torchvision RandAugment's unsigned magnitude of each op at each bin of timm's 0–10 level.
    Cached: one per image size and device, not a dozen small kernels per training step."""
    bins = torch.arange(_LEVEL_BINS, device=device)
    zeros = torch.zeros(_LEVEL_BINS, device=device)

    def span(end: float) -> Tensor:
        return torch.linspace(0.0, end, _LEVEL_BINS, device=device)

    tables = {"ShearX": span(0.3), "ShearY": span(0.3), "Rotate": span(30.0)}
    tables |= {"TranslateX": span(150.0 / 331.0 * width), "TranslateY": span(150.0 / 331.0 * height)}
    tables |= {name: span(0.9) for name in ("Brightness", "Color", "Contrast", "Sharpness")}
    tables["Posterize"] = (8 - bins / ((_LEVEL_BINS - 1) / 4)).round()
    tables["Solarize"] = torch.linspace(1.0, 0.0, _LEVEL_BINS, device=device)
    return torch.stack([tables.get(name, zeros) for name in OPS])


class BatchRandAugment(torch.nn.Module):
    """`NoisyRandAugment` per sample: for each of `num_ops` slots, every sample draws its op uniformly, its level from
    N(magnitude, magnitude_std) clipped to [0, 10] and binned as `NoisyRandAugment` bins it, and a sign."""

    def __init__(self, num_ops: int, magnitude: float, magnitude_std: float = 0.0, fill: float = GRAY):
        super().__init__()
        check_rand_augment(num_ops, magnitude, magnitude_std)
        self.num_ops, self.magnitude, self.magnitude_std, self.fill = num_ops, magnitude, magnitude_std, fill

    def sample(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample op ids and signed magnitudes for one slot."""
        batch, device = images.shape[0], images.device
        op_ids = torch.randint(len(OPS), (batch,), device=device)
        level = (self.magnitude + self.magnitude_std * torch.randn(batch, device=device)).clamp(0, _MAX_LEVEL)
        bins = (level * ((_LEVEL_BINS - 1) / _MAX_LEVEL)).round().long()
        magnitudes = magnitude_table(*images.shape[-2:], device)[op_ids, bins]
        signed = (op_ids >= OPS.index(SIGNED_OPS[0])) & (op_ids <= OPS.index(SIGNED_OPS[-1]))
        negate = signed & (torch.rand(batch, device=device) < 0.5)
        return op_ids, torch.where(negate, -magnitudes, magnitudes)

    def forward(self, images: Tensor) -> Tensor:
        for _ in range(self.num_ops):
            images = apply_op(images, *self.sample(images), fill=self.fill)
        return images


def batch_random_erasing(
    images: Tensor, p: float, scale: Sequence[float] = (0.02, 1 / 3), ratio: Sequence[float] = (0.3, 3.3)
) -> Tensor:
    """`RandomErasing(p, scale, ratio, value='random')` per sample: with probability p, the first of 10 boxes that
    fits (height and width below the image's) is filled with N(0, 1) noise per pixel and channel; none fits → kept."""
    (batch, _, height, width), device = images.shape, images.device
    h, w = _box_sides(batch, height * width, scale, ratio, device)
    fits = (h < height) & (w < width)
    h, w = _first_fit(fits, h, w)
    top, left = _random_offset(height - h), _random_offset(width - w)
    erase = fits.any(1) & (torch.rand(batch, device=device) < p)
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    box = _per_sample(erase) & in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return torch.where(box, torch.randn_like(images), images)


def check_batched_auto_augment(auto_augment: str) -> None:
    """Only RandAugment specs have a batched implementation; the arguments call this too, before any data is read."""
    if auto_augment == "autoaugment":
        raise ValueError(
            "--augment_on_device cannot run --auto_augment 'autoaugment' (it runs only in the per-image CPU "
            "transforms): use a RandAugment string such as 'rand-m9-mstd0.5', or drop --augment_on_device."
        )


def batch_train_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_min_scale: float,
    auto_augment: str = "none",
    random_erasing: float = 0.0,
    random_translate: int = 0,
) -> Callable[[Tensor], Tensor]:
    """`train_transform` for a uint8 batch (B, C, H, W) on any device: crop [+ translation] + flip [+ RandAugment] +
    normalise [+ RandomErasing], each sample with its own parameters; returns float (B, C, image_size, image_size)."""
    check_crop_and_erasing(crop_min_scale, random_erasing, random_translate, image_size)
    check_batched_auto_augment(auto_augment)
    rand_augment = parse_rand_augment(auto_augment)
    augment = BatchRandAugment(*rand_augment) if rand_augment is not None else None
    mean_std = torch.tensor([mean, std], dtype=torch.float32).reshape(2, 1, -1, 1, 1)
    on_device: dict[torch.device, Tensor] = {}  # mean and std copied to each device once, not every step

    def apply(images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"Expected a uint8 batch (B, C, H, W), got {images.dtype} {tuple(images.shape)}.")
        out = resized_crop_flip(images.float() / 255, image_size, (crop_min_scale, 1.0))
        if random_translate > 0:  # after the flip here, before it per image: the shift's law is symmetric, so equal
            out = translate(out, random_translate)
        if augment is not None:
            out = augment(out)
        if out.device not in on_device:
            on_device[out.device] = mean_std.to(out.device)
        mean_, std_ = on_device[out.device]
        out = (out - mean_) / std_
        return batch_random_erasing(out, random_erasing) if random_erasing > 0 else out

    return apply
