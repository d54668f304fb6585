"""Every source becomes `image` + `label` (ClassLabel) splits; bad sources fail with the fix in the message."""

import gzip

import logging

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

from livt_hf.arguments import DataArguments
from livt_hf.data import (
    batch_transform,
    build_long_tail_splits,
    eval_transform,
    load_fashion_mnist,
    load_hub_dataset,
    load_image_folders,
    load_source,
    load_split_lists,
    train_transform,
)
from livt_hf.data.sources import standardize_columns


def test_fashion_mnist_source(fashion_mnist):
    assert len(fashion_mnist["train"]) == 60000 and len(fashion_mnist["test"]) == 10000
    assert fashion_mnist["train"].features["label"].names[9] == "Ankle boot"
    image = fashion_mnist["train"][0]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    assert np.bincount(fashion_mnist["train"]["label"]).tolist() == [6000] * 10


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_another_folder_and_its_errors(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (6, 28, 28))
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 5]))
    ds = load_fashion_mnist(tmp_path)
    assert np.array_equal(np.asarray(ds["test"][2]["image"]), images[2])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="6 images but .* 3 labels"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "missing")


def _image_tree(root, classes, per_class, mode="RGB"):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).convert(mode).save(root / name / f"{i}.png")


def test_image_folders(tmp_path):
    _image_tree(tmp_path / "train", ["cat", "dog", "fox"], 4)
    _image_tree(tmp_path / "test", ["cat", "dog", "fox"], 2)
    ds = load_image_folders(str(tmp_path / "train"), str(tmp_path / "test"))
    assert ds["train"].features["label"].names == ["cat", "dog", "fox"]
    assert np.bincount(ds["train"]["label"]).tolist() == [4, 4, 4] and len(ds["test"]) == 6
    splits, info = build_long_tail_splits(ds, profile="none", validation_split=0.25)
    assert info.train_counts == [3, 3, 3] and info.validation_counts == [1, 1, 1]
    # class ids agree across splits; a class that only the test split has is an error, not a silent shift
    _image_tree(tmp_path / "test2", ["cat", "owl"], 1)
    ds = load_image_folders(str(tmp_path / "train"), str(tmp_path / "test2"))
    assert ds["test"].features["label"].names == ["cat", "dog", "fox", "owl"]
    assert ds["test"]["label"] == [0, 3]
    with pytest.raises(ValueError, match=r"'owl' \(in test\) have no train images"):
        build_long_tail_splits(ds, profile="none")
    with pytest.raises(FileNotFoundError, match="--train_dir"):
        load_image_folders(str(tmp_path / "nope"), str(tmp_path / "test"))


def test_split_lists(tmp_path):
    _image_tree(tmp_path / "images", ["a", "b"], 3, mode="L")
    (tmp_path / "train.txt").write_text("a/0.png 0\na/1.png 0\nb/0.png 2\n\n")
    (tmp_path / "test.txt").write_text("b/1.png 1\n")
    ds = load_split_lists(str(tmp_path / "images"), str(tmp_path / "train.txt"), str(tmp_path / "test.txt"))
    assert ds["train"]["label"] == [0, 0, 2] and ds["train"].features["label"].names == ["0", "1", "2"]
    assert ds["test"][0]["image"].size == (16, 12)
    (tmp_path / "bad.txt").write_text("a/0.png zero\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected `relative/path label`"):
        load_split_lists(str(tmp_path / "images"), str(tmp_path / "bad.txt"), str(tmp_path / "test.txt"))


def test_hub_dataset_without_network_names_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="Could not load the dataset 'someone/cifar10-lt'.*--train_dir"):
        load_hub_dataset("someone/cifar10-lt")


def test_data_arguments_choose_one_source():
    with pytest.raises(ValueError, match="Choose one data source"):
        DataArguments(dataset_name="x", train_dir="a", test_dir="b")
    with pytest.raises(ValueError, match="both --train_dir and --test_dir"):
        DataArguments(train_dir="a")
    with pytest.raises(ValueError, match="--image_root"):
        DataArguments(train_list="a", test_list="b")
    with pytest.raises(ValueError, match="Unknown --long_tail_profile"):
        DataArguments(long_tail_profile="zipf")
    with pytest.raises(ValueError, match="imbalance_ratio must be ≥ 1"):
        build_long_tail_splits(load_source(DataArguments()), imbalance_ratio=0.9)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3), ("RGBA", 3), ("CMYK", 3), ("L", 3), ("RGB", 1)])
def test_transforms_give_the_model_its_channels_and_size(mode, channels):
    image = Image.new(mode, (40, 30))
    for transform in (train_transform(28, [0.5] * channels, [0.5] * channels, 0.2),
                      eval_transform(28, [0.5] * channels, [0.5] * channels)):
        out = batch_transform(transform, channels)({"image": [image], "label": [3]})
        assert out["pixel_values"][0].shape == (channels, 28, 28) and out["labels"] == [3]


def test_eval_transform_is_deterministic_and_train_transform_is_not():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (28, 28), dtype=np.uint8))
    ev = eval_transform(28, [0.5], [0.5])
    assert torch.equal(ev(image), ev(image))
    assert ev(image).min() >= -1 and ev(image).max() <= 1
    tr = train_transform(28, [0.5], [0.5], 0.2)
    torch.manual_seed(0)
    assert not all(torch.equal(tr(image), tr(image)) for _ in range(3))
    with pytest.raises(ValueError, match="crop_min_scale"):
        train_transform(28, [0.5], [0.5], 0.0)


def test_hub_style_columns_are_renamed_and_labels_encoded_consistently():
    img = Image.new("RGB", (4, 4))
    raw = DatasetDict({
        "train": Dataset.from_dict({"img": [img] * 3, "fine_label": ["owl", "cat", "owl"], "extra": [1, 2, 3]}),
        "test": Dataset.from_dict({"img": [img] * 2, "fine_label": ["dog", "cat"], "extra": [4, 5]}),
    })  # fmt: skip
    ds = standardize_columns(raw, "img", "fine_label")
    assert ds["train"].column_names == ["image", "label"]
    assert ds["train"].features["label"].names == ["cat", "dog", "owl"]
    assert ds["train"]["label"] == [2, 0, 2] and ds["test"]["label"] == [1, 0]
    with pytest.raises(ValueError, match="--label_column_name"):
        standardize_columns(raw, "img", "label")


def test_data_arguments_pick_the_source(tmp_path, monkeypatch):
    _image_tree(tmp_path / "train", ["a", "b"], 2)
    _image_tree(tmp_path / "test", ["a", "b"], 1)
    folders = load_source(DataArguments(train_dir=str(tmp_path / "train"), test_dir=str(tmp_path / "test")))
    assert len(folders["train"]) == 4 and folders["train"].features["label"].names == ["a", "b"]
    (tmp_path / "tr.txt").write_text("train/a/0.png 1\n")
    (tmp_path / "te.txt").write_text("test/b/0.png 0\n")
    lists = load_source(DataArguments(image_root=str(tmp_path), train_list=str(tmp_path / "tr.txt"),
                                      test_list=str(tmp_path / "te.txt")))  # fmt: skip
    assert lists["train"]["label"] == [1] and lists["test"]["label"] == [0]
    with pytest.raises(FileNotFoundError, match="not found in"):
        load_source(DataArguments(fashion_mnist_dir=str(tmp_path)))
    seen = {}

    def fake_load_dataset(name, config_name, cache_dir=None):
        seen.update(name=name, config=config_name)
        raise ConnectionError("offline")

    monkeypatch.setattr("livt_hf.data.sources.load_dataset", fake_load_dataset)
    with pytest.raises(RuntimeError, match="Could not load the dataset 'user/data'"):
        load_source(DataArguments(dataset_name="user/data", dataset_config_name="fine"))
    assert seen == {"name": "user/data", "config": "fine"}


def _image_dataset(labels: list, features: Features | None = None) -> Dataset:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)) for _ in labels]
    return Dataset.from_dict({"img": images, "y": labels}, features=features)


def test_dataset_name_takes_a_folder_saved_with_save_to_disk(tmp_path):
    features = Features({"img": ImageFeature(), "y": ClassLabel(names=["owl", "cat"])})
    train, test = _image_dataset([0, 1, 1], features), _image_dataset([1, 0], features)
    DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "dict")
    ds = load_source(DataArguments(dataset_name=str(tmp_path / "dict"), image_column_name="img", label_column_name="y"))
    assert ds["train"].features["label"].names == ["owl", "cat"] and ds["test"]["label"] == [1, 0]
    assert np.array_equal(np.asarray(ds["train"][2]["image"]), np.asarray(train[2]["img"]))
    # one Dataset.save_to_disk folder per split
    train.save_to_disk(tmp_path / "splits" / "train")
    test.save_to_disk(tmp_path / "splits" / "test")
    ds = load_source(DataArguments(dataset_name=str(tmp_path / "splits"), image_column_name="img", label_column_name="y"))
    assert sorted(ds) == ["test", "train"] and ds["train"]["label"] == [0, 1, 1]
    with pytest.raises(ValueError, match=r"holds one Dataset saved with save_to_disk, without splits.*DatasetDict\("):
        load_hub_dataset(str(tmp_path / "splits" / "train"))
    with pytest.raises(ValueError, match="--dataset_config_name 'fine': .* saved with save_to_disk"):
        load_hub_dataset(str(tmp_path / "dict"), "fine", "img", "y")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="Could not load the local folder .*empty as a dataset.*save_to_disk"):
        load_hub_dataset(str(tmp_path / "empty"))


def test_dataset_name_takes_a_folder_of_parquet_files_in_the_hub_layout(tmp_path):
    features = Features({"img": ImageFeature(), "y": ClassLabel(names=["owl", "cat", "dog"])})
    (tmp_path / "data").mkdir()
    for split, labels in {"train": [0, 1, 2, 2], "test": [2, 0]}.items():
        _image_dataset(labels, features).to_parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    ds = load_source(DataArguments(dataset_name=str(tmp_path), image_column_name="img", label_column_name="y"))
    assert ds["train"].features["label"].names == ["owl", "cat", "dog"] and ds["test"]["label"] == [2, 0]
    assert ds["train"][0]["image"].size == (6, 6)


def test_plain_integer_and_string_labels_become_sorted_classes(caplog):
    raw = DatasetDict({"train": _image_dataset([10, 3, 7, 3]), "test": _image_dataset([7, -1])})
    with caplog.at_level(logging.INFO, logger="livt_hf"):
        ds = standardize_columns(raw, "img", "y")
    assert ds["train"].features["label"].names == ["3", "7", "10"]  # numeric order, not '10' < '3'
    assert ds["train"]["label"] == [2, 0, 1, 0] and ds["test"]["label"] == [1, -1]  # -1 stays unlabelled
    assert "The label column 'y' holds plain integer values, not a ClassLabel: its 3 classes get the ids of their " \
           "sorted order (numeric): 0 = '3', 1 = '7', 2 = '10'." in caplog.text  # fmt: skip
    strings = DatasetDict({"train": _image_dataset(["b", "a", None]), "test": _image_dataset(["a"])})
    ds = standardize_columns(strings, "img", "y")
    assert ds["train"].features["label"].names == ["a", "b"] and ds["train"]["label"] == [1, 0, -1]
    for bad, message in (
        (DatasetDict({"train": _image_dataset([0.5, 1.0]), "test": _image_dataset([1.0])}),
         r"The label column 'y' of split 'train' holds Value\('float64'\), not class labels.*cast_column\('y', ClassLabel"),
        (DatasetDict({"train": _image_dataset([1, 2]), "test": _image_dataset(["1"])}),
         r"The label column 'y' holds integers in some splits and strings in others"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            standardize_columns(bad, "img", "y")
