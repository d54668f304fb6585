"""Batched, on-device training augmentation (`batch_augment.py`) against torchvision, the per-image reference.

Tolerances. Every op is compared with torchvision's functional op twice: on the float image u8/255 (torchvision's float
kernels compute what ours do, so they agree to float error, 1e-5) and on the uint8 image u8 (what the CPU path runs),
where torchvision rounds or truncates to uint8 and we do not:
- geometry (bilinear, fill 128): the result is rounded, ≤ 0.5/255;
- brightness, autocontrast: the result is truncated, < 1/255;
- saturation, contrast: plus the grayscale floored before the blend, < (1 + |1 - factor|)/255;
- sharpness: plus the blur rounded before the blend, < (1 + 0.5 |1 - factor|)/255;
- posterize, solarize, equalize, identity: both work on the same integer values, exact.
Posterize keeps uint8 semantics (the top bits of the uint8 value), so it is compared with the uint8 kernel only.
Crop + resize (bicubic, antialias) against torchvision's float path: 1e-5; against its uint8 path on a smooth image
(values far from 0 and 255, so nothing clips between its two passes): final rounding 0.5 plus the first pass's
rounding 0.5 times the second pass's sum of |weights| (≤ 1.25 for Keys' a = -0.5), ≤ 1.125/255.
"""

import math

import pytest
import torch
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from livt_hf.data.batch_augment import (
    GRAY,
    OPS,
    BatchRandAugment,
    apply_op,
    batch_random_erasing,
    batch_train_transform,
    crop_flip,
    magnitude_table,
    resized_crop_flip,
    sample_crop_boxes,
    translate,
)
from livt_hf.data.transforms import parse_rand_augment, train_transform

BILINEAR, BICUBIC = T.InterpolationMode.BILINEAR, T.InterpolationMode.BICUBIC
FLOAT_ERROR = 1e-5


def torchvision_op(image, name, magnitude, fill):
    """torchvision's functional op as its RandAugment applies it (`_apply_image_or_video_transform`)."""
    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        shears = [shear, 0.0] if name == "ShearX" else [0.0, shear]
        return TF.affine(image, 0.0, [0, 0], 1.0, shears, interpolation=BILINEAR, fill=fill, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        shift = [int(magnitude), 0] if name == "TranslateX" else [0, int(magnitude)]
        return TF.affine(image, 0.0, shift, 1.0, [0.0, 0.0], interpolation=BILINEAR, fill=fill)
    if name == "Rotate":
        return TF.rotate(image, magnitude, interpolation=BILINEAR, fill=fill)
    if name == "Posterize":
        return TF.posterize(image, int(magnitude))
    if name == "Solarize":
        return TF.solarize(image, (255 if image.dtype == torch.uint8 else 1.0) * magnitude)
    blends = {"Brightness": TF.adjust_brightness, "Color": TF.adjust_saturation, "Contrast": TF.adjust_contrast,
              "Sharpness": TF.adjust_sharpness}
    if name in blends:
        return blends[name](image, 1.0 + magnitude)
    return {"Identity": lambda x: x, "AutoContrast": TF.autocontrast, "Equalize": TF.equalize}[name](image)


def uint8_tolerance(name, magnitude):
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        return 0.5 / 255 + FLOAT_ERROR
    if name in ("Brightness", "AutoContrast"):
        return 1 / 255
    if name in ("Color", "Contrast"):
        return (1 + abs(magnitude)) / 255
    if name == "Sharpness":
        return (1 + 0.5 * abs(magnitude)) / 255
    return FLOAT_ERROR


def random_batch(channels, height=20, width=28):
    """Random uint8 images, plus the edge cases: a constant image (autocontrast and equalize leave it) and a two-value
    one (equalize's step is 0)."""
    images = torch.randint(0, 256, (6, channels, height, width), dtype=torch.uint8)
    images[1] = 77
    images[2] = 200
    images[2, :, 0, :3] = 10
    return images


def signed_magnitudes(name, height, width):
    """A few of the op's table magnitudes (bins 10, 50, 90, 100) with both signs, as RandAugment draws them."""
    row = magnitude_table(height, width, torch.device("cpu"))[OPS.index(name)]
    if name == "Posterize":
        return [8.0, 6.0, 5.0, 4.0]
    if name == "Solarize":
        return [1.0, float(row[50]), float(row[90]), 0.0]
    values = [float(row[b]) for b in (10, 50, 90, 100)]
    return values + [-v for v in values] if name in OPS[1:10] else [0.0]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", OPS)
def test_each_op_matches_torchvision_per_image(name, channels):
    torch.manual_seed(0)
    images = random_batch(channels)
    height, width = images.shape[-2:]
    for magnitude in signed_magnitudes(name, height, width):
        ids, magnitudes = torch.full((len(images),), OPS.index(name)), torch.full((len(images),), magnitude)
        out = apply_op(images / 255, ids, magnitudes)
        assert out.shape == images.shape and out.dtype == torch.float32
        from_uint8 = torch.stack([torchvision_op(image, name, magnitude, 128) for image in images]) / 255
        assert (out - from_uint8).abs().max() <= uint8_tolerance(name, magnitude), (name, magnitude)
        if name != "Posterize":
            from_float = torch.stack([torchvision_op(image / 255, name, magnitude, GRAY) for image in images])
            torch.testing.assert_close(out, from_float, atol=FLOAT_ERROR, rtol=0, msg=f"{name} {magnitude}")


def test_each_sample_gets_its_own_op_and_magnitude():
    torch.manual_seed(0)
    images = torch.rand(len(OPS), 3, 20, 28)
    ids = torch.arange(len(OPS))
    magnitudes = torch.linspace(-0.6, 0.6, len(OPS))
    magnitudes[OPS.index("Posterize")], magnitudes[OPS.index("Solarize")] = 5.0, 0.4
    magnitudes[OPS.index("TranslateX")], magnitudes[OPS.index("TranslateY")] = -6.5, 3.7  # int(m) pixels
    out = apply_op(images, ids, magnitudes)
    for i in range(len(OPS)):
        alone = apply_op(images[i : i + 1], ids[i : i + 1], magnitudes[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], alone, atol=FLOAT_ERROR, rtol=0)
    changes = (out - images).abs().amax((1, 2, 3))
    assert changes[0] == 0 and (changes[1:] > 1e-3).all()  # Identity kept its image, every other op changed its own


def test_magnitude_table_is_torchvisions():
    for height, width in ((20, 28), (224, 224)):
        table = magnitude_table(height, width, torch.device("cpu"))
        for name, row in zip(OPS, table):
            expected = T.RandAugment._AUGMENTATION_SPACE[name][0](101, height, width)
            assert torch.equal(row, torch.zeros(101) if expected is None else expected.float()), name


def smooth_image(height=20, width=28):
    """A uint8 image in [68, 188]: bicubic overshoot stays inside [0, 255], so torchvision's uint8 resize clips
    nothing between its two passes."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image = 128 + 60 * torch.sin(cols / 4.0) * torch.cos(rows / 5.0)
    return torch.stack([image, image.flip(-1), 255 - image]).round().to(torch.uint8)


@pytest.mark.parametrize("size", [24, 8])  # upsampling and downsampling (where antialiasing matters)
def test_crop_flip_matches_resized_crop_and_horizontal_flip(size):
    torch.manual_seed(0)
    boxes = torch.tensor([[0, 0, 20, 28], [3, 5, 11, 17], [7, 20, 13, 8], [0, 0, 20, 10], [2, 1, 18, 27]])
    flips = torch.tensor([False, True, False, True, True])
    for images, uint8_tolerance_ in ((torch.randint(0, 256, (5, 3, 20, 28), dtype=torch.uint8), None),
                                     (smooth_image().expand(5, -1, -1, -1), 1.125 / 255)):
        out = crop_flip(images / 255, boxes, flips, size)
        assert out.shape == (5, 3, size, size)
        for image, box, flip, result in zip(images, boxes.tolist(), flips, out):
            ref = TF.resized_crop(image / 255, *box, [size, size], interpolation=BICUBIC, antialias=True)
            ref = TF.horizontal_flip(ref) if flip else ref
            torch.testing.assert_close(result, ref.clamp(0, 1), atol=FLOAT_ERROR, rtol=0)
            if uint8_tolerance_ is not None:
                ref8 = TF.resized_crop(image, *box, [size, size], interpolation=BICUBIC, antialias=True)
                ref8 = TF.horizontal_flip(ref8) if flip else ref8
                assert (result - ref8 / 255).abs().max() <= uint8_tolerance_


def test_crop_boxes_follow_random_resized_crop():
    torch.manual_seed(0)
    height, width, scale, ratio = 20, 28, (0.35, 1.0), (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(20000, height, width, scale, ratio, torch.device("cpu"))
    top, left, h, w = boxes.T.double()
    assert boxes.dtype == torch.long and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area, aspect = h * w / (height * width), w / h
    # h and w are rounded: the area fraction and aspect may leave their ranges by that rounding only
    assert area.min() >= 0.3 and area.max() <= 1 and area.min() < 0.37
    assert aspect.min() >= 0.7 and aspect.max() <= 1.42
    assert len(set(map(tuple, boxes.tolist()))) > 100  # boxes differ from sample to sample
    reference = T.RandomResizedCrop(24, scale=scale, ratio=ratio)
    params = [reference.make_params([torch.zeros(1, height, width)]) for _ in range(4000)]
    ref_area = torch.tensor([p["height"] * p["width"] / (height * width) for p in params], dtype=torch.float64)
    ref_aspect = torch.tensor([p["width"] / p["height"] for p in params], dtype=torch.float64)
    assert area.mean() == pytest.approx(ref_area.mean().item(), abs=0.01)
    assert aspect.log().mean() == pytest.approx(ref_aspect.log().mean().item(), abs=0.01)
    for offset, room in ((top, height - h), (left, width - w)):  # uniform on [0, room]
        assert (offset[room > 0] / room[room > 0]).mean() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "height, width, scale", [(2, 200, (0.9, 1.0)), (200, 2, (0.9, 1.0)), (10, 40, (0.5, 1.0)), (2, 2, (0.01, 0.01))]
)
def test_crop_falls_back_to_torchvisions_centre_crop_when_no_box_fits(height, width, scale):
    """Thin images fit no box of that area with an aspect in 3/4–4/3 (fallback: the widest box of the extreme aspect);
    on 2 × 2, 1 % of the area rounds to an empty box (fallback: the whole image)."""
    torch.manual_seed(0)
    boxes = sample_crop_boxes(500, height, width, scale, (3 / 4, 4 / 3), torch.device("cpu"))
    ref = T.RandomResizedCrop(8, scale=scale).make_params([torch.zeros(1, height, width)])
    assert (boxes == torch.tensor([ref["top"], ref["left"], ref["height"], ref["width"]])).all()


def test_flips_happen_with_flip_prob_and_independently():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16).expand(4000, -1, -1, -1)
    out = resized_crop_flip(image, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.3)  # the whole image
    flipped = (out - image.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    kept = (out - image).abs().amax((1, 2, 3)) < 1e-5
    assert (flipped ^ kept).all()
    assert flipped.double().mean() == pytest.approx(0.3, abs=0.03)


def test_random_augment_draws_ops_uniformly_signs_evenly_and_levels_as_noisy_rand_augment():
    torch.manual_seed(0)
    images = torch.rand(28000, 1, 20, 28)
    op_ids, magnitudes = BatchRandAugment(2, 9, 0.5).sample(images)
    counts = torch.bincount(op_ids, minlength=len(OPS))
    assert len(counts) == len(OPS) and (counts - 2000).abs().max() < 200  # 4.5 standard deviations
    signed = (op_ids >= 1) & (op_ids <= 9)
    assert (magnitudes[~signed] >= 0).all()
    assert (magnitudes[signed] < 0).double().mean() == pytest.approx(0.5, abs=0.02)
    rotate = op_ids == OPS.index("Rotate")
    bins = magnitudes[rotate].abs() / 30 * 100  # Rotate's table: 0–30 degrees over 101 bins
    assert torch.allclose(bins, bins.round(), atol=1e-3)  # magnitudes come from the table's bins
    assert bins.mean() == pytest.approx(90, abs=0.6) and bins.std() == pytest.approx(5, abs=0.6)

    for magnitude in (9.8, 0.2):  # levels from N(m, 2) clipped to [0, 10]
        op_ids, magnitudes = BatchRandAugment(1, magnitude, 2.0).sample(images)
        bins = magnitudes[op_ids == OPS.index("Rotate")].abs() / 30 * 100
        assert bins.min() >= 0 and bins.max() <= 100 + 1e-3
        at_the_limit = bins > 100 - 1e-3 if magnitude > 5 else bins < 1e-3
        assert at_the_limit.double().mean() == pytest.approx(0.46, abs=0.05)  # P(N(0, 1) > 0.1) ≈ 0.46


@pytest.mark.parametrize("level, bin_", [(9, 90), (9.06, 91), (9.04, 90), (0, 0), (10, 100)])
def test_level_without_noise_is_binned_as_noisy_rand_augment(level, bin_):
    """bin = round(level · 100 / 10), as `NoisyRandAugment` sets torchvision's magnitude index."""
    torch.manual_seed(0)
    images = torch.rand(2000, 3, 20, 28)
    op_ids, magnitudes = BatchRandAugment(1, level).sample(images)
    assert torch.equal(magnitudes.abs(), magnitude_table(20, 28, torch.device("cpu"))[op_ids, bin_])


def test_rand_augment_changes_samples_differently_and_keeps_range():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 20, 28).expand(64, -1, -1, -1)
    out = BatchRandAugment(2, 9, 0.5)(images)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) > 30  # one input, per-sample ops


def test_random_erasing_rate_area_and_noise():
    torch.manual_seed(0)
    images = torch.full((4000, 3, 20, 28), 5.0)  # N(0, 1) noise never lands on 5
    out = batch_random_erasing(images, p=0.4)
    erased = out != 5.0
    assert (erased == erased[:, :1]).all()  # every channel of the box
    hit = erased.flatten(1).any(1)
    assert hit.double().mean() == pytest.approx(0.4, abs=0.03)
    rows, cols = erased[:, 0].any(2), erased[:, 0].any(1)
    h, w = rows.sum(1), cols.sum(1)
    assert (erased[:, 0].sum((1, 2)) == h * w).all()  # one rectangle
    area = (h * w).double()[hit] / (20 * 28)
    assert area.min() >= 0.02 - 0.01 and area.max() <= 1 / 3 + 0.03  # h and w rounded
    assert (h[hit] < 20).all() and (w[hit] < 28).all()
    reference = T.RandomErasing(p=1.0, value="random")
    params = [reference.make_params([torch.zeros(3, 20, 28)]) for _ in range(3000)]
    ref_area = torch.tensor([p["h"] * p["w"] / (20 * 28) for p in params], dtype=torch.float64)
    assert area.mean() == pytest.approx(ref_area.mean().item(), abs=0.01)
    noise = out[erased]
    assert noise.mean() == pytest.approx(0, abs=0.02) and noise.std() == pytest.approx(1, abs=0.02)
    assert len({tuple(b) for b in torch.stack([h, w], 1)[hit].tolist()}) > 50  # per-sample boxes


def test_random_erasing_keeps_images_where_no_box_fits():
    """On 4 × 4, a box of ≥ 90 % of the area cannot have both sides below 4."""
    torch.manual_seed(0)
    images = torch.rand(200, 3, 4, 4)
    assert torch.equal(batch_random_erasing(images, p=1.0, scale=(0.9, 1.0)), images)
    assert torch.equal(batch_random_erasing(images, p=0.0), images)


def test_batch_train_transform_output_range_and_normalisation():
    torch.manual_seed(0)
    mean, std = [0.2, 0.5, 0.7], [0.3, 0.25, 0.5]
    images = torch.randint(0, 256, (32, 3, 20, 28), dtype=torch.uint8)
    out = batch_train_transform(24, mean, std, 0.35, "rand-m9-mstd0.5")(images)
    assert out.shape == (32, 3, 24, 24) and out.dtype == torch.float32
    unnormalised = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert unnormalised.min() >= -1e-6 and unnormalised.max() <= 1 + 1e-6

    constant = torch.full((8, 3, 20, 28), 100, dtype=torch.uint8)
    out = batch_train_transform(24, mean, std, 1.0)(constant)
    expected = (100 / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5, rtol=0)

    erased = batch_train_transform(24, mean, std, 1.0, random_erasing=1.0)(constant)
    changed = (erased - out).abs() > 1e-4
    assert changed.flatten(1).any(1).all() and changed.double().mean() < 0.4  # erasing after normalising
    assert erased[changed].std() == pytest.approx(1, abs=0.1)


def shifts_of_a_lit_pixel(out: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """(N, 2) row and column shift of each image's single lit pixel from (row, col), channel 0."""
    flat = out[:, 0].flatten(1).argmax(1)
    return torch.stack([flat // out.shape[-1] - row, flat % out.shape[-1] - col], 1)


def assert_uniform_shifts(shifts: torch.Tensor, max_shift: int) -> None:
    """Every shift in {-m … m}² appears, each about N / (2m + 1)² times: 5000 draws, 25 shifts → 200 each, a count's sd
    √(5000 · 0.04 · 0.96) ≈ 13.9; 5 sd either side."""
    assert shifts.abs().max() <= max_shift
    side = 2 * max_shift + 1
    counts = torch.bincount((shifts[:, 0] + max_shift) * side + shifts[:, 1] + max_shift, minlength=side**2)
    expected, sd = len(shifts) / side**2, math.sqrt(len(shifts) * (1 / side**2) * (1 - 1 / side**2))
    assert counts.min() > expected - 5 * sd and counts.max() < expected + 5 * sd, counts


def test_translate_shifts_each_image_by_up_to_the_given_pixels_with_black_shifted_in():
    """Channel 0: one lit pixel at the centre of 7 × 7, whose landing place gives the shift (dy, dx); channel 1: all
    ones, of which (7 - |dy|)(7 - |dx|) stay in the frame (zeros come in): both channels move together."""
    torch.manual_seed(0)
    images = torch.zeros(5000, 2, 7, 7)
    images[:, 0, 3, 3] = 1
    images[:, 1] = 1
    out = translate(images, 2)
    assert out.shape == images.shape and out[:, 0].flatten(1).sum(1).eq(1).all()
    shifts = shifts_of_a_lit_pixel(out, 3, 3)
    assert_uniform_shifts(shifts, 2)
    kept = (7 - shifts[:, 0].abs()) * (7 - shifts[:, 1].abs())
    assert torch.equal(out[:, 1].sum((1, 2)), kept.float())
    assert torch.equal(translate(images[:1], 0), images[:1])


def test_batched_and_per_image_translation_draw_the_same_shifts():
    """`--random_translate 2` on both paths (crop 1.0: the crop keeps the whole image): the lit pixel of a 7 × 7 image
    lands uniformly within 2 px of where it was (a flip mirrors the column: a symmetric law stays the same)."""
    torch.manual_seed(0)
    image = torch.zeros(1, 1, 7, 7, dtype=torch.uint8)
    image[..., 3, 3] = 255
    batched = batch_train_transform(7, [0.0], [1.0], 1.0, random_translate=2)(image.expand(5000, -1, -1, -1))
    per_image = train_transform(7, [0.0], [1.0], 1.0, random_translate=2)
    cpu = torch.stack([per_image(TF.to_pil_image(image[0])) for _ in range(5000)])
    for out in (batched, cpu):
        assert out.amax((1, 2, 3)).eq(1).all() and out.sum((1, 2, 3)).eq(1).all()  # black comes in
        assert_uniform_shifts(shifts_of_a_lit_pixel(out, 3, 3), 2)
    assert batch_train_transform(7, [0.0], [1.0], 1.0)(image).flatten().argmax() == 3 * 7 + 3  # 0: no shift


def test_batch_train_transform_matches_train_transform_in_distribution():
    """Crop, flip and normalise: per-pixel means over 3000 draws agree with the per-image path to sampling error
    (each mean's standard error ≈ 0.72 / √3000 ≈ 0.013; the largest of 1728 differences stays below 0.1)."""
    torch.manual_seed(0)
    image = smooth_image()
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
    cpu = torch.stack([train_transform(24, mean, std, 0.35)(image) for _ in range(3000)])
    batched = batch_train_transform(24, mean, std, 0.35)(image.expand(3000, -1, -1, -1))
    assert (cpu.mean(0) - batched.mean(0)).abs().max() < 0.1
    assert (cpu.std(0) - batched.std(0)).abs().max() < 0.1


def test_parse_rand_augment_is_the_shared_parser():
    assert parse_rand_augment("rand-m9-mstd0.5") == (2, 9.0, 0.5)
    assert parse_rand_augment("rand-m7-n3-inc1") == (3, 7.0, 0.0)
    assert parse_rand_augment("none") is None and parse_rand_augment("autoaugment") is None
    with pytest.raises(ValueError, match="Unknown --auto_augment"):
        parse_rand_augment("rand9")


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="per-image CPU transforms.*rand-m9-mstd0.5"):
        batch_train_transform(28, [0.5], [0.5], 0.35, "autoaugment")
    with pytest.raises(ValueError, match="--crop_min_scale"):
        batch_train_transform(28, [0.5], [0.5], 0.0)
    with pytest.raises(ValueError, match="--random_erasing"):
        batch_train_transform(28, [0.5], [0.5], 0.35, random_erasing=1.5)
    for shift in (-1, 28):
        with pytest.raises(ValueError, match=r"--random_translate is a shift in pixels, 0 \(off\) up to .* \(27\)"):
            batch_train_transform(28, [0.5], [0.5], 0.35, random_translate=shift)
    with pytest.raises(ValueError, match="Unknown --auto_augment"):
        batch_train_transform(28, [0.5], [0.5], 0.35, "randaugment")
    with pytest.raises(ValueError, match="magnitude in"):
        batch_train_transform(28, [0.5], [0.5], 0.35, "rand-m11")
    for args in ((0, 9), (2, 11), (2, 9, -0.5)):
        with pytest.raises(ValueError, match="RandAugment needs"):
            BatchRandAugment(*args)
    with pytest.raises(ValueError, match="uint8 batch"):
        batch_train_transform(28, [0.5], [0.5], 0.35)(torch.rand(2, 1, 28, 28))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pipeline_never_syncs_with_the_host():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 20, 28), dtype=torch.uint8, device="cuda")
    transform = batch_train_transform(24, [0.5] * 3, [0.5] * 3, 0.35, "rand-m9-mstd0.5", random_erasing=0.25)
    transform(images)  # warm-up: lazy CUDA initialisation may sync once
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = transform(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == images.device and out.shape == (64, 3, 24, 24)
