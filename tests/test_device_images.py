"""`--augment_on_device`: the train split decoded once into a uint8 tensor, indices through the DataLoader, and each
index turned into its own augmented image on the device in the training step."""

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from transformers import HfArgumentParser

from livt_hf import BalancedTrainer, LiVTConfig, LiVTForImageClassification
from livt_hf.arguments import FinetuningArguments
from livt_hf.data import DeviceImages, IndexedImages, Mixer, build_train_sampler, convert_image
from livt_hf.data.batch_augment import batch_train_transform
from livt_hf.data.device_images import check_fits_on_gpu, decode_images

COUNTS = [6, 4, 2]


def image_split(images: list, labels: list[int]) -> Dataset:
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def constant_images(values: list[int], size: int = 8) -> torch.Tensor:
    """Image i is a flat gray of `values[i]`: whatever crop, flip or resampling, it stays that gray."""
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, size, size).contiguous()


def test_images_of_one_size_are_kept_pixel_for_pixel(fashion_mnist):
    split = fashion_mnist["train"].select(range(20))
    images = decode_images(split, num_channels=1, image_size=14)  # one common size: kept at 28, not resized
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.uint8
    for i in (0, 7, 19):
        assert torch.equal(images[i, 0], torch.from_numpy(np.asarray(split[i]["image"])))


def test_modes_are_converted_and_mixed_sizes_resized_to_the_model_square():
    rgba = np.zeros((6, 10, 4), np.uint8)
    rgba[:, :5] = (200, 10, 10, 255)  # left half opaque red, right half transparent: white after compositing
    gray = PIL.Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "L")
    split = image_split([PIL.Image.fromarray(rgba, "RGBA"), gray], [0, 1])
    images = decode_images(split, num_channels=3, image_size=16)
    assert images.shape == (2, 3, 16, 16)
    for decoded, original in zip(images, split["image"]):
        expected = convert_image(original, "RGB").resize((16, 16), PIL.Image.Resampling.BICUBIC)
        assert torch.equal(decoded, torch.from_numpy(np.asarray(expected)).permute(2, 0, 1))
    assert images[0, :, 8, 15].tolist() == [255, 255, 255]  # the transparent side is white, as at inference


def test_each_index_fetches_its_own_image_and_its_partner_its_own():
    grays = [20 * i for i in range(12)]
    device_images = DeviceImages(constant_images(grays), batch_train_transform(8, [0.5], [0.5], 0.35))
    index, partner = torch.tensor([3, 0, 11, 3]), torch.tensor([5, 5, 1, 0])
    out = device_images({"image_index": index, "partner_image_index": partner, "labels": torch.tensor([0, 1, 2, 0])})
    assert set(out) == {"pixel_values", "partner_pixel_values", "labels"}
    for key, ids in (("pixel_values", index), ("partner_pixel_values", partner)):
        expected = (torch.tensor(grays)[ids] / 255 - 0.5) / 0.5  # normalised with the processor's mean and std
        assert out[key].shape == (4, 1, 8, 8)
        assert torch.allclose(out[key], expected.view(-1, 1, 1, 1).expand(-1, 1, 8, 8), atol=1e-5), key


def test_the_trainer_trains_on_indices_that_become_images_in_the_step(tmp_path):
    torch.manual_seed(0)
    labels = [0] * 6 + [1] * 4 + [2] * 2
    config = LiVTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        image_size=8, patch_size=4, num_channels=1, num_labels=3, class_counts=COUNTS)  # fmt: skip
    model = LiVTForImageClassification(config)
    before = model.head.weight.detach().clone()
    args = HfArgumentParser(FinetuningArguments).parse_args_into_dataclasses([
        "--output_dir", str(tmp_path), "--use_cpu", "1", "--per_device_train_batch_size", "4", "--max_steps", "3",
        "--learning_rate", "1e-2", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "0",
        "--report_to", "none",
    ])[0]  # fmt: skip
    transform = batch_train_transform(8, [0.5], [0.5], 0.35, auto_augment="rand-m9-mstd0.5", random_erasing=0.25)
    trainer = BalancedTrainer(
        model=model, args=args, train_dataset=IndexedImages(labels, len(labels)),
        train_sampler=build_train_sampler(labels, "sqrt", num_epochs=1, seed=0, partner_tau=0.0),
        mixer=Mixer("unimix", COUNTS), device_images=DeviceImages(constant_images(list(range(0, 240, 20))), transform),
    )  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"image_index", "labels", "partner_image_index", "partner_labels"}  # no pixels in the loader
    assert torch.equal(batch["labels"], torch.tensor(labels)[batch["image_index"]])
    loss = trainer.train().training_loss
    assert np.isfinite(loss) and not torch.equal(model.head.weight, before)


def test_a_split_that_would_crowd_the_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1500, 4000))  # free, total bytes
    check_fits_on_gpu(torch.zeros(7, 1, 10, 10, dtype=torch.uint8))  # 700 bytes ≤ half of 1500
    with pytest.raises(ValueError, match=r"\(8, 1, 10, 10\) uint8.*more than 50% of the GPU's free.*Drop --augment_on_device"):
        check_fits_on_gpu(torch.zeros(8, 1, 10, 10, dtype=torch.uint8))
