"""Faulty data: corrupt files, odd image modes and sizes, empty or missing classes, mismatched label features,
empty splits. Each is handled as documented or stopped before training with a message naming problem and fix."""

import logging
import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from torch.utils.data import DataLoader
from transformers.image_transforms import convert_to_rgb

from livt_hf.arguments import DataArguments
from livt_hf.data import (
    PairedDataset,
    attach_transforms,
    batch_transform,
    build_long_tail_splits,
    build_train_sampler,
    eval_transform,
    image_processor,
    load_hub_dataset,
    load_image_folders,
    load_split_lists,
    prepare_splits,
    train_transform,
)
from livt_hf.data.image_checks import check_images, sample_image_modes
from livt_hf.data.samplers import class_probabilities
from livt_hf.data.transforms import convert_image
from livt_hf.losses import logit_bias
from livt_hf.modelcard import split_section
from livt_hf.runs import infer_num_channels

MODES = ("L", "RGB", "RGBA", "CMYK", "P", "I;16", "1")


def _random_image(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> PIL.Image.Image:
    """A random image of `mode` and `size` (width, height)."""
    w, h = size
    if mode == "I;16":
        return PIL.Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    rgba = PIL.Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    return rgba.convert(mode) if "A" in mode else rgba.convert("RGB").convert(mode)


def _save(image: PIL.Image.Image, path: Path) -> Path:
    """PNG, except CMYK (PNG has no CMYK: JPEG)."""
    path = path.with_suffix(".jpg" if image.mode == "CMYK" else ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _folder(root: Path, per_class: dict[str, int], mode: str = "RGB", size=(12, 10)) -> Path:
    rng = np.random.default_rng(0)
    for name, n in per_class.items():
        for i in range(n):
            _save(_random_image(rng, mode, size), root / name / str(i))
    return root


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def _folder_args(tmp_path: Path, **kwargs) -> DataArguments:
    return DataArguments(train_dir=str(tmp_path / "train"), test_dir=str(tmp_path / "test"), long_tail_profile="none",
                         **kwargs)  # fmt: skip


# ---- corrupt and truncated files -------------------------------------------------------------------------------


@pytest.fixture
def folders_with_bad_files(tmp_path):
    """train a:4, b:3, c:3 images, of which b/0 is truncated and c/garbage.png is not an image; test a, b, c: 1 each."""
    _folder(tmp_path / "train", {"a": 4, "b": 3, "c": 2})
    _folder(tmp_path / "test", {"a": 1, "b": 1, "c": 1})
    _truncate(tmp_path / "train" / "b" / "0.png")
    (tmp_path / "train" / "c" / "garbage.png").write_bytes(b"not an image at all")
    return tmp_path


def test_bad_image_files_stop_the_run_by_default_naming_them_and_the_fix(folders_with_bad_files):
    with pytest.raises(ValueError) as err:
        prepare_splits(_folder_args(folders_with_bad_files))
    message = str(err.value)
    assert message.startswith("2 of 10 train images cannot be decoded: ")
    assert "train/b/0.png (OSError: image file is truncated" in message
    assert "train/c/garbage.png (UnidentifiedImageError: cannot identify image file" in message
    assert "--bad_images skip" in message


def test_skipped_bad_images_leave_the_class_counts(folders_with_bad_files, caplog):
    args = _folder_args(folders_with_bad_files, bad_images="skip", max_bad_image_fraction=0.2, validation_split=0.25)
    with caplog.at_level(logging.WARNING):
        splits, info = prepare_splits(args)
    # left: a 4, b 2, c 2; the carve takes min(round(0.25 · n), n − 1) = 1, 0 (round(0.5) = 0), 0
    assert info.train_counts == [3, 2, 2] and info.validation_counts == [1, 0, 0]
    assert [Path(p.split(" (")[0]).name for p in info.skipped_images["train"]] == ["0.png", "garbage.png"]
    assert "test" not in info.skipped_images
    assert "leaving out 2 of 10 train images that cannot be decoded" in caplog.text and "garbage.png" in caplog.text
    for image in list(splits["train"]["image"]) + list(splits["validation"]["image"]):  # every kept row decodes
        assert image.size == (12, 10)
    text = split_section(info, "folders", "reported once")
    assert "2 images could not be decoded and were left out (train: 2; listed in lt_split.json)." in text


def test_too_many_bad_images_stop_even_when_skipping(folders_with_bad_files):
    with pytest.raises(ValueError, match=r"2 of 10 train images \(20.0%\) cannot be decoded, more than "
                                         r"--max_bad_image_fraction 0.01 allows.*raise --max_bad_image_fraction"):
        prepare_splits(_folder_args(folders_with_bad_files, bad_images="skip"))


def test_no_check_trusts_the_files(folders_with_bad_files):
    splits, info = prepare_splits(_folder_args(folders_with_bad_files, bad_images="no_check", validation_split=0.25))
    assert info.skipped_images == {} and sum(info.train_counts) + sum(info.validation_counts) == 10
    with pytest.raises(OSError):  # the failure the scan exists to move before training
        [splits[name][i]["image"] for name in ("train", "validation") for i in range(len(splits[name]))]


def test_the_scan_uses_the_workers_asked_for(folders_with_bad_files, monkeypatch):
    seen = []

    def spy(dataset, policy, max_fraction, num_proc):
        seen.append(num_proc)
        return check_images(dataset, policy, max_fraction, num_proc)

    monkeypatch.setattr("livt_hf.data.build.check_images", spy)
    args = _folder_args(folders_with_bad_files, bad_images="skip", max_bad_image_fraction=0.5, image_check_workers=2,
                        validation_split=0.25)  # fmt: skip
    _, info = prepare_splits(args)
    assert seen == [2] and len(info.skipped_images["train"]) == 2  # two processes find what one finds


def test_split_lists_with_missing_and_truncated_files(tmp_path):
    _folder(tmp_path / "img", {"a": 3, "b": 3})
    _truncate(tmp_path / "img" / "b" / "2.png")
    (tmp_path / "train.txt").write_text("a/0.png 0\na/1.png 0\nb/0.png 1\nb/1.png 1\nb/2.png 1\nb/9.png 1\n")
    (tmp_path / "test.txt").write_text("a/2.png 0\n")
    args = dict(image_root=str(tmp_path / "img"), train_list=str(tmp_path / "train.txt"),
                test_list=str(tmp_path / "test.txt"), long_tail_profile="none")  # fmt: skip
    with pytest.raises(ValueError, match=r"2 of 6 train images cannot be decoded: .*b/2.png \(OSError.*b/9.png "
                                         r"\(FileNotFoundError.* 1 of the files do not exist: check --image_root"):
        prepare_splits(DataArguments(**args))
    _, info = prepare_splits(DataArguments(**args, bad_images="skip", max_bad_image_fraction=0.5, validation_split=0.5))
    assert info.train_counts == [1, 1] and info.validation_counts == [1, 1]  # b keeps b/0 and b/1


def test_hub_style_images_held_as_bytes_are_checked_too():
    good = _random_image(np.random.default_rng(0), "RGB", (4, 4))
    features = Features({"image": Image(), "label": ClassLabel(names=["x"])})
    ds = DatasetDict({"train": Dataset.from_dict({"image": [good, {"bytes": b"\x89PNG broken", "path": None}, good],
                                                  "label": [0, 0, 0]}, features=features)})  # fmt: skip
    with pytest.raises(ValueError, match=r"1 of 3 train images cannot be decoded: train: row 1 \(Unidentified"):
        check_images(ds)
    kept, skipped = check_images(ds, "skip", max_fraction=0.5)
    assert len(kept["train"]) == 2 and list(skipped) == ["train"] and len(skipped["train"]) == 1
    assert skipped["train"][0].startswith("row 1 (UnidentifiedImageError: cannot identify image file")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bad_images="ignore"), r"Unknown --bad_images 'ignore'; choose one of \('error', 'skip', 'no_check'\)"),
        (dict(bad_images="skip", max_bad_image_fraction=1.5), r"fraction in \[0, 1\], got 1.5"),
        (dict(max_bad_image_fraction=0.1), "only applies with --bad_images skip"),
        (dict(bad_images="no_check", image_check_workers=4), r"only with a scan \(--bad_images error or skip\)"),
        (dict(image_check_workers=0), "give ≥ 1 process"),
        (dict(max_test_samples=0), "--max_test_samples must be ≥ 1"),
    ],
)
def test_bad_image_options_that_would_do_nothing_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataArguments(train_dir="tr", test_dir="te", **kwargs)


def test_fashion_mnist_refuses_the_image_file_options():
    with pytest.raises(ValueError, match="the Fashion-MNIST source has none"):
        DataArguments(bad_images="skip")
    assert DataArguments().source == "fashion_mnist"


# ---- image modes and sizes -------------------------------------------------------------------------------------


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 255, 256, 1000, 30000, 65535]], dtype=np.uint16)
    image = PIL.Image.fromarray(values)
    assert image.mode == "I;16" and np.asarray(image.convert("L")).tolist() == [[0, 255, 255, 255, 255, 255]]  # PIL
    # round(v / 257): 0.99 → 1, 3.89 → 4, 116.7 → 117, 255
    assert np.asarray(convert_image(image, "L")).tolist() == [[0, 1, 1, 4, 117, 255]]
    assert np.asarray(convert_image(image, "RGB"))[0, :, 1].tolist() == [0, 1, 1, 4, 117, 255]
    big_endian = PIL.Image.frombytes("I;16B", (6, 1), values.astype(">u2").tobytes())
    assert np.asarray(convert_image(big_endian, "L")).tolist() == [[0, 1, 1, 4, 117, 255]]
    # through the eval transform: a flat 28-px 30000 is 117 / 255, normalised with mean = std = 0.5
    flat = PIL.Image.fromarray(np.full((28, 28), 30000, dtype=np.uint16))
    out = batch_transform(eval_transform(28, [0.5], [0.5]), 1)({"image": [flat], "label": [0]})["pixel_values"][0]
    assert torch.allclose(out, torch.full((1, 28, 28), (117 / 255 - 0.5) / 0.5))


def test_transparency_is_composited_on_white_as_the_processor_does():
    half_red = PIL.Image.new("RGBA", (1, 1), (255, 0, 0, 128))
    # 255 · (1 − 128/255) = 127 for G and B; luma 0.299 · 255 + 0.587 · 127 + 0.114 · 127 = 165.3
    assert np.asarray(convert_image(half_red, "RGB")).tolist() == [[[255, 127, 127]]]
    assert np.asarray(convert_image(half_red, "L")).tolist() == [[165]]
    assert np.asarray(half_red.convert("RGB")).tolist() == [[[255, 0, 0]]]  # what PIL alone gives
    rng = np.random.default_rng(3)
    palette = _random_image(rng, "P", (5, 4))
    palette.info["transparency"] = 7
    for image in [_random_image(rng, m, (5, 4)) for m in ("RGBA", "LA", "PA", "CMYK", "1", "L")] + [palette]:
        assert np.array_equal(np.asarray(convert_image(image, "RGB")), convert_to_rgb(image, return_numpy=True))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_and_shape_reaches_the_model_shape(mode, channels):
    rng = np.random.default_rng(MODES.index(mode))
    mean = std = [0.5] * channels
    transforms = {
        "train": train_transform(28, mean, std, 0.35, "rand-m9-mstd0.5", random_erasing=1.0),
        "eval": eval_transform(28, mean, std),
    }
    torch.manual_seed(0)
    for size in [(1, 1), (1, 80), (64, 1), (64, 80), (3, 7)]:
        image = _random_image(rng, mode, size)
        assert image.mode == mode
        for name, transform in transforms.items():
            out = batch_transform(transform, channels)({"image": [image], "label": [1]})["pixel_values"][0]
            assert out.shape == (channels, 28, 28) and torch.isfinite(out).all(), (name, size)


def test_channels_come_from_the_modes_of_the_whole_split_not_its_first_image(caplog):
    rng = np.random.default_rng(0)

    def split(modes):
        images = [_random_image(rng, m, (4, 4)) for m in modes]
        return Dataset.from_dict({"image": images}, features=Features({"image": Image()}))

    with caplog.at_level(logging.INFO, logger="livt_hf"):
        assert infer_num_channels(split(["L"] + ["RGB"] * 5)) == 3  # the first image alone said 1
    assert "{'L': 1, 'RGB': 5} in 6 sampled images: mixed, grayscale becomes RGB, 3 channel(s)" in caplog.text
    assert infer_num_channels(split(["L", "I;16", "1", "L"])) == 1
    assert infer_num_channels(split(["RGB", "CMYK", "P"])) == 3
    # evenly spread: linspace(0, 9, 3) = 0, 4.5, 9 → rows 0, 4, 9 (round half to even), so the last is seen
    modes = sample_image_modes(split(["L"] * 9 + ["RGB"]), sample_size=3)
    assert modes == {"L": 2, "RGB": 1}


# ---- classes: empty, single-image, out of range, mismatched between splits ----------------------------------------


def _toy(train_counts, test_labels=(0,), names=None):
    names = names or [f"c{i}" for i in range(len(train_counts))]
    features = Features({"image": Value("int32"), "label": ClassLabel(names=names)})
    labels = [c for c, n in enumerate(train_counts) for _ in range(n)]
    return DatasetDict({
        "train": Dataset.from_dict({"image": list(range(len(labels))), "label": labels}, features=features),
        "test": Dataset.from_dict({"image": list(range(len(test_labels))), "label": list(test_labels)}, features=features),
    })  # fmt: skip


def test_a_subsampling_profile_that_empties_a_class_fails_before_the_split():
    # n_i = ⌊5 · 10^(−i/2)⌋ = 5, 1, 0
    with pytest.raises(ValueError, match=r"zero images \(counts \[5, 1, 0\]\). Lower --imbalance_ratio or raise "
                                         r"--max_per_class"):
        build_long_tail_splits(_toy([12, 12, 12]), max_per_class=5, imbalance_ratio=10)


def test_a_class_with_one_training_image_trains():
    # subsampled: ⌊10 · 10^(−i/2)⌋ = 10, 3, 1; validation round(0.02 · 10) → 1 per class, raised to the 2 images the
    # head class has left over (the default aims at 500 validation images)
    splits, info = build_long_tail_splits(_toy([12, 12, 12]), max_per_class=10, imbalance_ratio=10)
    assert info.train_counts == [10, 3, 1] and info.validation_counts == [2, 2, 2]
    # given as it is: the carve min(round(0.5 · n), n − 1) takes 2 (round half to even), 2, and never the last image
    splits, info = build_long_tail_splits(_toy([5, 5, 1]), profile="none", validation_split=0.5)
    assert info.train_counts == [3, 3, 1] and info.validation_counts == [2, 2, 0]
    assert torch.isfinite(logit_bias("bal_bce", info.train_counts)).all()
    labels = torch.tensor(splits["train"]["label"])
    sampler = build_train_sampler(labels, "class_balanced", num_epochs=1, seed=0)
    # class-balanced: weight 1 / n_c per image, so the single image (row 6) weighs 1 and each class gets 1/3
    assert sampler.weights(0)[6] == pytest.approx(1.0) and sampler.weights(0)[0] == pytest.approx(1 / 3)
    assert class_probabilities(labels, sampler.weights(0)).tolist() == pytest.approx([1 / 3] * 3)


def test_split_list_labels_beyond_the_train_classes_are_named(tmp_path):
    _folder(tmp_path / "img", {"a": 3})
    (tmp_path / "train.txt").write_text("".join(f"a/{i % 3}.png {i % 10}\n" for i in range(20)))  # labels 0 … 9
    (tmp_path / "test.txt").write_text("a/0.png 3\na/1.png 12\n")
    ds = load_split_lists(str(tmp_path / "img"), str(tmp_path / "train.txt"), str(tmp_path / "test.txt"))
    assert ds["train"].features["label"].names == [str(i) for i in range(13)]  # the union of the lists' labels
    with pytest.raises(ValueError, match=r"Classes '10' \(in no split: a gap in the ids\), '11' \(in no split: a gap "
                                         r"in the ids\), '12' \(in test\) have no train images.*renumber the labels"):
        build_long_tail_splits(ds, profile="none")


def test_image_folders_match_classes_by_name_whatever_each_split_holds(tmp_path):
    _folder(tmp_path / "train", {"fox": 3, "cat": 3, "dog": 3})
    _folder(tmp_path / "test", {"fox": 2, "cat": 1})
    ds = load_image_folders(str(tmp_path / "train"), str(tmp_path / "test"))
    names = ds["train"].features["label"].names
    assert names == ["cat", "dog", "fox"] == ds["test"].features["label"].names
    assert sorted(names[y] for y in ds["test"]["label"]) == ["cat", "fox", "fox"]
    _, info = build_long_tail_splits(ds, profile="none", validation_split=0.34)
    assert info.train_counts == [2, 2, 2] and info.test_counts == [1, 0, 2]


def _hub(monkeypatch, dataset: DatasetDict) -> None:
    monkeypatch.setattr("livt_hf.data.sources.load_dataset", lambda name, config, cache_dir=None: dataset)


def test_hub_label_features_in_another_order_are_matched_by_name(monkeypatch, caplog):
    img = PIL.Image.new("RGB", (4, 4))
    train = Dataset.from_dict({"img": [img] * 3, "y": [0, 1, 2]},
                              features=Features({"img": Image(), "y": ClassLabel(names=["cat", "dog", "owl"])}))
    test = Dataset.from_dict({"img": [img] * 3, "y": [0, 1, 1]},
                             features=Features({"img": Image(), "y": ClassLabel(names=["owl", "cat", "dog"])}))
    _hub(monkeypatch, DatasetDict({"train": train, "test": test}))
    with caplog.at_level(logging.WARNING):
        ds = load_hub_dataset("user/data", image_column="img", label_column="y")
    assert ds["test"].features["label"].names == ["cat", "dog", "owl"]
    assert ds["test"]["label"] == [2, 0, 0]  # owl, cat, cat
    assert "The label features of ['test'] list other classes or another order than the train split's; ids are " \
           "matched by class name (3 classes: cat, dog, owl)." in caplog.text
    # a class only the test split has is appended, then refused by name
    test = test.cast_column("y", ClassLabel(names=["emu", "cat", "dog"]))
    _hub(monkeypatch, DatasetDict({"train": train, "test": test}))
    ds = load_hub_dataset("user/data", image_column="img", label_column="y")
    assert ds["test"].features["label"].names == ["cat", "dog", "owl", "emu"] and ds["test"]["label"] == [3, 0, 0]
    with pytest.raises(ValueError, match=r"Classes 'emu' \(in test\) have no train images"):
        build_long_tail_splits(ds, profile="none")


def test_hub_label_features_that_cannot_be_matched_are_refused(monkeypatch):
    img = PIL.Image.new("RGB", (4, 4))
    named = Dataset.from_dict({"image": [img], "label": [0]},
                              features=Features({"image": Image(), "label": ClassLabel(names=["cat"])}))
    plain = Dataset.from_dict({"image": [img], "label": [0]}, features=Features({"image": Image(), "label": Value("int64")}))
    _hub(monkeypatch, DatasetDict({"train": named, "test": plain}))
    with pytest.raises(ValueError, match=r"ClassLabel in \['train'\] but holds plain values in \['test'\].*cast_column"):
        load_hub_dataset("user/data")
    arrays = Dataset.from_dict({"image": [[1, 2]], "label": [0]})
    _hub(monkeypatch, DatasetDict({"train": arrays, "test": arrays}))
    with pytest.raises(ValueError, match=r"Column 'image' of split 'train' holds List.*not images.*--image_column_name"):
        load_hub_dataset("user/data")


def test_unlabelled_hub_test_split_is_refused():
    with pytest.raises(ValueError, match=r"2 images of the test split have no label \(-1; Hub test splits"):
        build_long_tail_splits(_toy([5, 5], test_labels=(-1, 0, -1)), profile="none", validation_split=0.5)


# ---- empty splits ------------------------------------------------------------------------------------------------


def test_empty_or_misfilled_image_folders(tmp_path, caplog):
    _folder(tmp_path / "train", {"a": 2, "b": 2})
    (tmp_path / "test").mkdir()
    with pytest.raises(ValueError, match=r"--test_dir \S+ holds no images in class folders .*found 0 other files"):
        prepare_splits(_folder_args(tmp_path))
    (tmp_path / "test" / "a").mkdir()
    (tmp_path / "test" / "a" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="found 1 other files"):
        prepare_splits(_folder_args(tmp_path))
    _folder(tmp_path / "test", {"a": 1})
    _save(PIL.Image.new("L", (3, 3)), tmp_path / "train" / "stray")  # imagefolder would drop every label
    with pytest.raises(ValueError, match=r"--train_dir \S+ holds images outside a class folder \(stray.png; 1 in all\)"):
        prepare_splits(_folder_args(tmp_path))
    (tmp_path / "train" / "stray.png").unlink()
    with caplog.at_level(logging.WARNING):
        prepare_splits(_folder_args(tmp_path, validation_split=0.5))
    assert "1 files are not images and are not read: a/notes.txt" in caplog.text


def test_empty_split_lists_and_splits(tmp_path):
    _folder(tmp_path / "img", {"a": 2})
    (tmp_path / "train.txt").write_text("a/0.png 0\na/1.png 0\n")
    (tmp_path / "empty.txt").write_text("\n  \n")
    for option in ("test_list", "validation_list"):
        files = {"train_list": "train.txt", "test_list": "train.txt"} | {option: "empty.txt"}
        with pytest.raises(ValueError, match=r"empty.txt lists no images: a split list needs `relative/path label`"):
            load_split_lists(str(tmp_path / "img"), **{k: str(tmp_path / v) for k, v in files.items()})
    empty = _toy([3, 3])
    empty["validation"] = empty["test"].select([])
    with pytest.raises(ValueError, match=r"The validation split has no images. Check its source \(--validation_dir"):
        build_long_tail_splits(empty, profile="none")


def test_a_carve_too_small_for_any_validation_image_is_refused():
    # round(0.02 · 24) = 0: no class gives an image
    with pytest.raises(ValueError, match=r"--validation_split 0.02 carves no validation images.*raise "
                                         r"--validation_split above 0.0208 \(0.5 / the largest class's 24 images\)"):
        build_long_tail_splits(_toy([24, 3]), profile="none", validation_split=0.02)
    # the default takes up to 0.1 of train to reach 500 images: round(0.1 · 4) = 0 still carves nothing
    with pytest.raises(ValueError, match=r"--validation_split 0.1 carves no validation images"):
        build_long_tail_splits(_toy([4, 3]), profile="none")
    with pytest.raises(ValueError, match="every class has one train image, which it keeps"):
        build_long_tail_splits(_toy([1, 1]), profile="none", validation_split=0.5)


# ---- fuzz: random modes, sizes and labels through the whole data path -----------------------------------------


def _fuzz_source(root: Path, seed: int, num_classes: int = 4) -> dict[str, dict]:
    """Random images written as image folders and as split lists over the same files; DataArguments for both."""
    rng, pyrng = np.random.default_rng(seed), random.Random(seed)
    lines = {"train": [], "test": []}
    for split, n in (("train", 40), ("test", 12)):
        # every class gets 3 train images (so the carve leaves it one), the rest of the labels are random
        labels = [c for c in range(num_classes) for _ in range(3)] if split == "train" else []
        labels += [pyrng.randrange(num_classes) for _ in range(n - len(labels))]
        for i, label in enumerate(labels):
            image = _random_image(rng, pyrng.choice(MODES), (pyrng.randint(1, 64), pyrng.randint(1, 80)))
            path = _save(image, root / split / f"class{label}" / f"{i}")
            lines[split].append(f"{path.relative_to(root)} {label}\n")
    for split, text in lines.items():
        (root / f"{split}.txt").write_text("".join(text))
    common = dict(long_tail_profile="none", validation_split=0.4)
    return {
        "image_folders": common | dict(train_dir=str(root / "train"), test_dir=str(root / "test")),
        "split_lists": common | dict(image_root=str(root), train_list=str(root / "train.txt"),
                                     test_list=str(root / "test.txt")),  # fmt: skip
    }


@pytest.mark.parametrize("source", ["image_folders", "split_lists"])
def test_fuzz_random_images_through_the_whole_data_path(tmp_path, source):
    seed = 7
    splits, info = prepare_splits(DataArguments(**_fuzz_source(tmp_path, seed)[source]))
    num_classes = len(info.class_names)
    assert num_classes == 4 and sum(info.train_counts) + sum(info.validation_counts) == 40
    assert min(info.train_counts) >= 1 and sum(info.validation_counts) >= 4
    train_labels = list(splits["train"]["label"])  # read before the transforms replace `label` by `labels`
    torch.manual_seed(seed)
    for channels in (1, 3):
        attach_transforms(splits, image_processor(28, channels), 0.35, auto_augment="rand-m9-mstd0.5",
                          random_erasing=0.25)  # fmt: skip
        sampler = build_train_sampler(train_labels, "class_balanced", num_epochs=1, seed=seed, partner_tau=-1.0)
        loaders = {
            "train": DataLoader(PairedDataset(splits["train"]), batch_size=8, sampler=sampler),
            "validation": DataLoader(splits["validation"], batch_size=8),
            "test": DataLoader(splits["test"], batch_size=8),
        }
        seen = dict.fromkeys(loaders, 0)
        for name, loader in loaders.items():
            for batch in loader:
                keys = ["pixel_values", "partner_pixel_values"] if name == "train" else ["pixel_values"]
                for key in keys:
                    pixels = batch[key]
                    assert pixels.shape[1:] == (channels, 28, 28) and pixels.dtype == torch.float32
                    assert torch.isfinite(pixels).all()
                labels = batch["labels"]
                assert ((labels >= 0) & (labels < num_classes)).all()
                seen[name] += len(labels)
        # every image once per epoch: the 12 test images, and the 40 train images between train and validation
        assert seen["test"] == 12 and seen["train"] + seen["validation"] == 40
