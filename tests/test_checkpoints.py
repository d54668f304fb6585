"""Starting from a public checkpoint: a tiny 3-channel ViTMAE saved with ImageNet's mean and std (as the Hub's are)
stands in for facebook/vit-mae-base. MGP continues from its weights, fine-tuning starts from it, and its processor's
mean and std reach the pixel values of both stages (per image and batched), the saved processors and the cards."""

import functools
import json
import logging
import math
import sys
from contextlib import contextmanager

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import ViTMAEConfig, ViTMAEForPreTraining
from transformers.models.vit_mae.modeling_vit_mae import ViTMAEDecoder

from conftest import REPO, TINY_MAE
from livt_hf import LiVTForImageClassification
from livt_hf.arguments import PretrainModelArguments
from livt_hf.data import checkpoint_processor, image_processor
from livt_hf.mae import mae_from_checkpoint, new_vitmae, sincos_position_embeddings
from test_mae_init import mae_sincos

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
COLOUR = (200, 100, 50)  # every image is this one colour: any crop, flip or resize of it normalises to EXPECTED
EXPECTED = torch.tensor([(c / 255 - m) / s for c, m, s in zip(COLOUR, IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
RUN = ["--dataset_name", None, "--long_tail_profile", "none", "--validation_split", "0.2", "--use_cpu", "1",
       "--min_train_steps", "0", "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--report_to", "none"]


def save_mae(folder, **config) -> ViTMAEForPreTraining:
    model = new_vitmae(ViTMAEConfig(**TINY_MAE | config))
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def hub_mae(tmp_path_factory):
    """The stand-in for a Hub ViTMAE: 3 channels, ImageNet's mean and std, norm_pix_loss off (facebook/vit-mae-*)."""
    folder = tmp_path_factory.mktemp("vit-mae-tiny")
    save_mae(folder, num_channels=3, norm_pix_loss=False)
    image_processor(28, 3, IMAGENET_MEAN, IMAGENET_STD).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rgb_dataset(tmp_path_factory):
    """A DatasetDict saved with save_to_disk: one-colour RGB images, string labels (no ClassLabel)."""
    folder = tmp_path_factory.mktemp("rgb-data")
    image = PIL.Image.fromarray(np.full((28, 28, 3), COLOUR, np.uint8))
    train = ["owl"] * 6 + ["cat"] * 5 + ["dog"] * 4
    DatasetDict({
        "train": Dataset.from_dict({"image": [image] * len(train), "label": train}),
        "test": Dataset.from_dict({"image": [image] * 6, "label": ["cat", "dog", "owl"] * 2}),
    }).save_to_disk(folder)  # fmt: skip
    return folder


@contextmanager
def recorded(*model_classes):
    """Every `pixel_values` the models' forward sees, and the `livt_hf` log."""
    seen, messages = [], []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    with pytest.MonkeyPatch.context() as patch:
        for cls in model_classes:
            @functools.wraps(cls.forward)  # Trainer reads the label names from forward's signature
            def spy(self, pixel_values, *args, _forward=cls.forward, **kwargs):
                seen.append(pixel_values.detach().clone())
                return _forward(self, pixel_values, *args, **kwargs)

            patch.setattr(cls, "forward", spy)
        logging.getLogger("livt_hf").addHandler(handler)
        try:
            yield seen, messages
        finally:
            logging.getLogger("livt_hf").removeHandler(handler)


def run_script(name: str, *flags) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO))
        patch.setattr(sys, "argv", [f"{name}.py", *map(str, flags)])
        __import__(name).main()


@pytest.fixture(scope="module")
def runs(hub_mae, rgb_dataset, tmp_path_factory):
    """Continued MGP (learning rate 0: its weights must stay the checkpoint's; batched augmentation on the device) and
    fine-tuning from the checkpoint (per-image augmentation), each with what its model saw and logged."""
    out = tmp_path_factory.mktemp("runs")
    flags = [str(rgb_dataset) if f is None else f for f in RUN]
    with recorded(ViTMAEForPreTraining) as (mgp_pixels, mgp_log):
        run_script("run_pretrain_mae", "--model_name_or_path", hub_mae, *flags, "--learning_rate", 0,
                   "--augment_on_device", "--output_dir", out / "mae")  # fmt: skip
    with recorded(LiVTForImageClassification) as (bft_pixels, bft_log):
        run_script("run_finetune_balanced", "--mae_checkpoint", hub_mae, *flags, "--output_dir", out / "livt")
    return {"mae": (out / "mae", mgp_pixels, mgp_log), "livt": (out / "livt", bft_pixels, bft_log)}


def test_continued_mgp_trains_the_checkpoints_weights(runs, hub_mae):
    folder, _, log = runs["mae"]
    start, end = load_file(hub_mae / "model.safetensors"), load_file(folder / "model.safetensors")
    assert start.keys() == end.keys() and all(torch.equal(start[k], end[k]) for k in start)  # learning rate 0
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_channels"], config["image_size"]) == (32, 3, 28)
    assert config["norm_pix_loss"] is True  # this run's objective (LiVT's), not the checkpoint's
    recorded_args = json.loads((folder / "run_config.json").read_text())["PretrainModelArguments"]
    assert recorded_args["hidden_size"] == 32 and recorded_args["model_name_or_path"] == str(hub_mae)
    assert f"Continuing MGP from {hub_mae}: 28 px, patch 7, 3 channel(s), width 32, 2 layers; mask_ratio 0.75, " \
           "norm_pix_loss True (the checkpoint's config: 0.75, False)." in log  # fmt: skip


@pytest.mark.parametrize("stage", ["mae", "livt"])
def test_the_checkpoints_processor_reaches_pixels_saved_processor_and_card(runs, hub_mae, stage):
    folder, pixels, log = runs[stage]
    # training (MGP: batched on the device; BFT: per image), evaluation and the reconstructions plot
    assert len(pixels) >= 3 and all(p.shape[1:] == (3, 28, 28) for p in pixels)
    for p in pixels:
        torch.testing.assert_close(p, EXPECTED.expand_as(p), atol=1e-4, rtol=0)
    saved = json.loads((folder / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == IMAGENET_MEAN and saved["image_std"] == IMAGENET_STD
    assert saved["size"] == {"height": 28, "width": 28}
    inputs = f"28 × 28 px, mean {IMAGENET_MEAN}, std {IMAGENET_STD}: the image processor saved with {hub_mae}"
    assert f"Image processor: {inputs}." in log
    assert f"Inputs: {inputs} (`preprocessor_config.json`)." in (folder / "README.md").read_text()


def test_the_default_translation_shifts_black_into_a_split_the_step_floor_stretches(hub_mae, rgb_dataset, tmp_path):
    """12 train images at batch 8 are 2 steps an epoch: a floor of 200 steps makes 100 epochs, so the default
    `--random_translate` is a ninth of 28 px, 3 px, and black comes in at the borders of the one-colour images (the
    `runs` fixture's single epoch keeps it off: every pixel there is the colour's)."""
    flags = [str(rgb_dataset) if f is None else f for f in RUN]
    with recorded(LiVTForImageClassification) as (pixels, log):
        run_script("run_finetune_balanced", "--mae_checkpoint", hub_mae, *flags, "--min_train_steps", 200,
                   "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", 100, "--save_steps", 100,
                   "--output_dir", tmp_path / "livt")  # fmt: skip
    assert "--random_translate 3 (default: 100 epochs from --min_train_steps, a small split)." in log
    assert json.loads((tmp_path / "livt" / "run_config.json").read_text())["FinetuneDataArguments"]["random_translate"] == 3
    black = ((0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1)
    training = [p for p in pixels if p.shape[0] == 8]  # full training batches (evaluation sees the 3 validation images)
    shifted = sum(bool(torch.isclose(p, black.expand_as(p), atol=1e-4).all(1).any()) for p in training)
    assert len(training) >= 100 and shifted > len(training) / 2  # P(no shift in a batch of 8) = (1/49)^8


def test_string_labels_of_a_saved_dataset_are_sorted_and_recorded(runs):
    folder, _, log = runs["livt"]
    assert json.loads((folder / "lt_split.json").read_text())["class_names"] == ["cat", "dog", "owl"]
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "owl"}
    assert any("The label column 'label' holds plain string values, not a ClassLabel: its 3 classes get the ids of "
               "their sorted order (as strings" in m and "0 = 'cat', 1 = 'dog', 2 = 'owl'" in m for m in log)  # fmt: skip
    assert "the local Hugging Face dataset `" in (folder / "README.md").read_text()


def test_sincos_tables_follow_maes_formula_and_hfs_layout():
    torch.testing.assert_close(sincos_position_embeddings(4, 24), torch.from_numpy(mae_sincos(4, 24)).float())
    # HF's decoder computes its table when it is built (no weight init zeroes a module built on its own)
    reference = ViTMAEDecoder(ViTMAEConfig(**TINY_MAE | {"decoder_hidden_size": 24}), num_patches=16).decoder_pos_embed
    torch.testing.assert_close(sincos_position_embeddings(4, 24), reference)


def mae_args(checkpoint, **flags) -> PretrainModelArguments:
    return PretrainModelArguments(model_name_or_path=str(checkpoint), **flags)


def test_the_checkpoint_loads_with_this_runs_objective(hub_mae):
    args = mae_args(hub_mae, mask_ratio=0.6, hidden_size=32)  # a geometry flag may repeat the checkpoint's value
    model = mae_from_checkpoint(args)
    reference = ViTMAEForPreTraining.from_pretrained(hub_mae).state_dict()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in model.state_dict().items())
    assert (model.config.mask_ratio, model.config.norm_pix_loss) == (0.6, True)
    assert (args.image_size, args.patch_size, args.num_channels, args.decoder_hidden_size) == (28, 7, 3, 16)


def test_another_image_size_recomputes_the_position_tables_only(hub_mae, caplog):
    with caplog.at_level(logging.INFO, logger="livt_hf"):
        model = mae_from_checkpoint(mae_args(hub_mae, image_size=56))
    assert model.config.image_size == 56
    torch.testing.assert_close(model.vit.embeddings.position_embeddings, sincos_position_embeddings(8, 32))
    torch.testing.assert_close(model.decoder.decoder_pos_embed, sincos_position_embeddings(8, 16))
    reference = ViTMAEForPreTraining.from_pretrained(hub_mae).state_dict()
    kept = {k: v for k, v in model.state_dict().items() if "pos" not in k}
    assert len(kept) == len(reference) - 2 and all(torch.equal(v, reference[k]) for k, v in kept.items())
    assert model(torch.randn(2, 3, 56, 56)).loss.isfinite()
    assert "--image_size 56: the checkpoint's position embeddings (28 px) are recomputed for the 8 × 8 patch grid" \
        in caplog.text  # fmt: skip
    with pytest.raises(ValueError, match="--image_size 30 is not a multiple of the patch_size 7: pass an --image_size that is \\(the checkpoint's"):
        mae_from_checkpoint(mae_args(hub_mae, image_size=30))


def test_zero_position_tables_of_an_earlier_checkpoint_are_written_in(tmp_path, caplog):
    model = save_mae(tmp_path)
    torch.nn.init.zeros_(model.vit.embeddings.position_embeddings)
    torch.nn.init.zeros_(model.decoder.decoder_pos_embed)
    model.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="livt_hf"):
        continued = mae_from_checkpoint(mae_args(tmp_path))
    torch.testing.assert_close(continued.vit.embeddings.position_embeddings, sincos_position_embeddings(4, 32))
    torch.testing.assert_close(continued.decoder.decoder_pos_embed, sincos_position_embeddings(4, 16))
    assert "are all zero (it was pretrained without positions" in caplog.text


def test_a_conflicting_geometry_flag_is_refused_before_any_data(hub_mae, tmp_path):
    flags = ["--model_name_or_path", hub_mae, "--hidden_size", 64, "--num_channels", 1, "--patch_size", 7,
             "--fashion_mnist_dir", tmp_path / "missing", "--output_dir", tmp_path / "out", "--use_cpu", 1]  # fmt: skip
    message = (rf"The checkpoint {hub_mae} has another geometry \(hidden_size: asked 64, checkpoint has 32, "
               r"num_channels: asked 1, checkpoint has 3\).*drop those flags.*leave out --model_name_or_path")
    with pytest.raises(ValueError, match=message):
        run_script("run_pretrain_mae", *flags)
    with pytest.raises(FileNotFoundError, match="No ViTMAE checkpoint at .*Pass --model_name_or_path a ViTMAE folder"):
        mae_from_checkpoint(mae_args(tmp_path / "none"))


def test_the_processor_comes_from_the_checkpoint_or_falls_back_with_a_warning(hub_mae, tmp_path, caplog):
    processor, inputs = checkpoint_processor(str(hub_mae), 56, 3)  # fine-tuning at --image_size 56
    assert list(processor.image_mean) == IMAGENET_MEAN and processor.size["height"] == 56
    assert inputs.endswith(f"the image processor saved with {hub_mae} (its 28 × 28 px become the model's 56 × 56)")
    # the Hub's ViTMAE files: the older feature-extractor format, one int size
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3, "size": 224}))  # fmt: skip
    processor, _ = checkpoint_processor(str(tmp_path), 224, 3)
    assert list(processor.image_std) == IMAGENET_STD and processor.size["height"] == 224
    with pytest.raises(ValueError, match=r"image_mean \[0.485, 0.456, 0.406\] for a 1-channel model"):
        checkpoint_processor(str(tmp_path), 224, 1)
    # a grayscale model saved with one value repeated for RGB (what HF's processors default to) gets that value
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4] * 3, "image_std": [0.3] * 3}))
    processor, _ = checkpoint_processor(str(tmp_path), 28, 1)
    assert list(processor.image_mean) == [0.4] and list(processor.image_std) == [0.3]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    with pytest.raises(ValueError, match="do_normalize False; the training transforms scale pixels"):
        checkpoint_processor(str(tmp_path), 224, 3)
    (tmp_path / "preprocessor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="livt_hf"):
        processor, inputs = checkpoint_processor(str(tmp_path), 28, 1)
    assert list(processor.image_mean) == [0.5] and list(processor.image_std) == [0.5]
    assert f"{tmp_path} has no saved image processor" in caplog.text and "mean = std = 0.5" in caplog.text
    assert inputs.endswith(f"mean = std = 0.5, the default ({tmp_path} has no saved image processor)")


def test_from_scratch_starts_from_a_new_vitmae_with_maes_initialisation(rgb_dataset, tmp_path):
    """--from_scratch: the encoder is `new_vitmae`'s in run_pretrain_mae.py's default geometry (MAE's sin-cos table,
    not transformers' zeros), drawn from --seed, with the channels of the images and mean = std = 0.5; the saved
    config, run record and card say so. Learning rate 0: the saved weights are the start."""
    flags = [str(rgb_dataset) if f is None else f for f in RUN]
    flags += ["--learning_rate", 0, "--lr_scheduler_type", "constant", "--lr_scheduler_kwargs", "{}", "--from_scratch"]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        with recorded() as (_, log):
            run_script("run_finetune_balanced", *flags, "--seed", seed, "--output_dir", tmp_path / name)
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in "abc"}
    positions = weights["a"]["vit.embeddings.position_embeddings"].numpy()
    np.testing.assert_allclose(positions, mae_sincos(4, 192), atol=1e-6)  # 28 / 7 = 4 × 4 patches, width 192
    projection = "vit.embeddings.patch_embeddings.projection.weight"
    assert weights["a"][projection].shape == (192, 3, 7, 7)  # RGB images: 3 channels
    bound = math.sqrt(6 / (3 * 7 * 7 + 192))  # MAE: Xavier-uniform on the projection seen as a (192, 147) matrix
    assert 0.99 * bound < weights["a"][projection].abs().max() <= bound  # torch's default conv init: 1 / √147 = 0.082
    assert 0.015 < weights["a"]["vit.embeddings.cls_token"].std() < 0.025  # MAE: normal(0, 0.02); transformers: zeros
    assert torch.equal(weights["a"][projection], weights["b"][projection])  # the seed decides the start
    assert not torch.equal(weights["a"][projection], weights["c"][projection])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["patch_size"]) == (192, 4, 7)
    assert json.loads((tmp_path / "a" / "preprocessor_config.json").read_text())["image_mean"] == [0.5] * 3
    assert any("mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]: mean = std = 0.5, for a new model" in m for m in log)
    record = json.loads((tmp_path / "a" / "run_config.json").read_text())["FinetuneModelArguments"]
    assert record["from_scratch"] is True and record["mae_checkpoint"] is None
    card = (tmp_path / "a" / "README.md").read_text()
    assert "from a randomly initialised ViT (`--from_scratch`)" in card and "Stage 1" not in card
