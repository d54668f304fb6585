"""LiVT Table 9's augmentation: RandAugment "(9, 0.5)", RandomErasing, the MGP / BFT split of steps, evaluation
without augmentation, grayscale and RGB."""

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from PIL import Image
from torchvision.transforms import v2 as T

from livt_hf.arguments import FinetuneDataArguments
from livt_hf.data import attach_transforms, auto_augment_transform, image_processor, train_transform
from livt_hf.data.transforms import NoisyRandAugment


def test_rand_augment_specs_follow_timm_notation():
    livt = auto_augment_transform("rand-m9-mstd0.5")
    assert isinstance(livt, NoisyRandAugment)
    assert (livt.num_ops, livt.magnitude, livt.magnitude_std) == (2, 9.0, 0.5)
    three = auto_augment_transform("rand-m7-n3-inc1")
    assert (three.num_ops, three.magnitude, three.magnitude_std) == (3, 7.0, 0.0)
    assert isinstance(auto_augment_transform("autoaugment"), T.AutoAugment)
    assert auto_augment_transform("none") is None
    for bad in ("rand-9", "randaugment", "rand-m9-mstd0.5-inc0"):
        with pytest.raises(ValueError, match="rand-m9-mstd0.5"):
            auto_augment_transform(bad)
    with pytest.raises(ValueError, match="magnitude in"):
        auto_augment_transform("rand-m11")
    with pytest.raises(ValueError, match="--auto_augment"):
        FinetuneDataArguments(auto_augment="rand9")  # rejected when the arguments are parsed


def test_rand_augment_magnitude_is_noisy_per_op_on_the_0_to_10_scale():
    """Level ~ N(9, 0.5) clipped to [0, 10], on torchvision's bins of 0.1 level: bin 90 is magnitude 9."""
    torch.manual_seed(0)
    augment = NoisyRandAugment(num_ops=2, magnitude=9, magnitude_std=0.5)
    bins = []
    original = augment.op.forward

    def record(image):
        bins.append(augment.op.magnitude)
        return original(image)

    augment.op.forward = record
    image = torch.randint(0, 256, (1, 12, 12), dtype=torch.uint8)
    for _ in range(500):
        augment(image)
    bins = torch.tensor(bins, dtype=torch.float64)
    assert len(bins) == 1000  # one magnitude per op, two ops per image
    assert bins.mean() == pytest.approx(90, abs=0.6) and bins.std() == pytest.approx(5, abs=0.6)
    assert bins.max() <= 100
    exact = NoisyRandAugment(num_ops=1, magnitude=9)
    exact(image)
    assert exact.op.magnitude == 90


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_fine_tuning_augmentation_runs_on_grayscale_and_rgb(mode, channels):
    torch.manual_seed(0)
    image = Image.new(mode, (40, 32), color=100 if mode == "L" else (100, 50, 200))
    transform = train_transform(28, [0.5] * channels, [0.5] * channels, 0.35, "rand-m9-mstd0.5", random_erasing=1.0)
    out = transform(image)
    assert out.shape == (channels, 28, 28) and out.dtype == torch.float32
    assert isinstance(transform.transforms[-1], T.RandomErasing)


def test_random_erasing_fills_a_box_with_noise():
    torch.manual_seed(0)
    image = Image.new("L", (28, 28), color=255)
    plain = train_transform(28, [0.5], [0.5], 1.0)(image)
    assert torch.allclose(plain, torch.ones_like(plain))  # white stays 1.0 after normalisation, whatever the crop
    erased = train_transform(28, [0.5], [0.5], 1.0, random_erasing=1.0)(image)
    changed = erased != 1.0
    assert 0.02 * 784 * 0.9 <= changed.sum() <= 784 / 3 + 1 and erased[changed].std() > 0.5  # N(0, 1) noise


def test_pretraining_steps_are_crop_flip_normalise_only():
    steps = [type(t) for t in train_transform(28, [0.5], [0.5], 0.2).transforms]
    assert steps == [T.ToImage, T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToDtype, T.Normalize]


def test_only_the_train_split_is_augmented():
    images = [Image.fromarray((torch.rand(28, 28) * 255).byte().numpy(), "L") for _ in range(2)]
    splits = DatasetDict({name: Dataset.from_dict({"image": images, "label": [0, 1]}) for name in ("train", "test")})
    attach_transforms(splits, image_processor(28, 1), 0.35, auto_augment="rand-m9-mstd0.5", random_erasing=0.25)
    torch.manual_seed(0)
    first, second = splits["train"][0]["pixel_values"], splits["train"][0]["pixel_values"]
    assert not torch.equal(first, second)
    test_a, test_b = splits["test"][0]["pixel_values"], splits["test"][0]["pixel_values"]
    assert torch.equal(test_a, test_b)
    expected = (torch.from_numpy(np.array(images[0])).float() / 255 - 0.5) / 0.5
    assert torch.allclose(test_a[0], expected, atol=1e-5)  # 28 px in, 28 px out: only normalised
