"""Every data source becomes a `DatasetDict` with an `image` (`datasets.Image`) and a `label` (`ClassLabel`) column.

Sources: Fashion-MNIST idx files (the offline default), a Hugging Face dataset (a Hub name, a folder saved with
`save_to_disk`, or a folder of data files in the Hub layout), image folders, and split lists of `relative/path label`
lines (the format ImageNet-LT, Places-LT and iNat18 are distributed in).
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, load_dataset, load_from_disk
from datasets import config as datasets_config
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format: magic, dims as big-endian int32, then uint8 data)."""
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an uint8 idx file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} values.")
    return data.reshape(shape)


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR) -> DatasetDict:
    """Fashion-MNIST train (60k) and test (10k) splits from the idx files in `root` (gzipped or not)."""
    root = Path(root)
    features = Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_CLASSES)})
    splits = {}
    for split, names in _FASHION_MNIST_FILES.items():
        paths = []
        for name in names:
            candidates = [root / name, root / name.removesuffix(".gz")]
            found = next((p for p in candidates if p.exists()), None)
            if found is None:
                raise FileNotFoundError(
                    f"Fashion-MNIST file {name} not found in {root}. Install it with "
                    "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or point --fashion_mnist_dir at a "
                    "folder holding the four idx files."
                )
            paths.append(found)
        images, labels = _read_idx(paths[0]), _read_idx(paths[1])
        if len(images) != len(labels):
            raise ValueError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels.")
        splits[split] = Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)
    return DatasetDict(splits)


def load_hub_dataset(
    name: str,
    config_name: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    cache_dir: str | None = None,
) -> DatasetDict:
    """A Hugging Face dataset, with its image and label columns renamed to `image` / `label`: a Hub name, or a local
    folder, saved with `DatasetDict.save_to_disk` (or one `Dataset.save_to_disk` folder per split) or holding data
    files in the Hub layout (`data/train-00000-of-00001.parquet`, `data/test-…`), which `load_dataset` reads."""
    saved = saved_dataset(name)
    if saved is not None:
        if config_name is not None:
            raise ValueError(
                f"--dataset_config_name {config_name!r}: {name} was saved with save_to_disk, which keeps one "
                "configuration and no names. Drop --dataset_config_name."
            )
        return standardize_columns(saved, image_column, label_column)
    try:
        dataset = load_dataset(name, config_name, cache_dir=cache_dir)
    except Exception as err:  # the hub client raises many types; all mean the same thing to the user
        if Path(name).is_dir():
            raise RuntimeError(
                f"Could not load the local folder {name} as a dataset ({type(err).__name__}: {err}). It must hold a "
                "dataset saved with DatasetDict.save_to_disk, or data files in the Hub layout (data/train-*.parquet, "
                "data/test-*.parquet; or train/ and test/ folders of files)."
            ) from err
        raise RuntimeError(
            f"Could not load the dataset {name!r} from the Hugging Face Hub ({type(err).__name__}: {err}). "
            "Check the name and your network (HF_HUB_OFFLINE=1 forbids downloads), or use local data: a dataset "
            "folder saved with save_to_disk, --train_dir/--test_dir image folders, --train_list/--test_list with "
            "--image_root, or the default Fashion-MNIST files."
        ) from err
    return standardize_columns(dataset, image_column, label_column)


def saved_dataset(folder: str) -> DatasetDict | None:
    """The dataset `save_to_disk` wrote into `folder`: a `DatasetDict`, or one saved `Dataset` per split subfolder
    (`folder/train`, `folder/test`); None when `folder` is not such a folder. A single saved `Dataset` has no splits
    to train and test on, and is refused with the fix."""
    root = Path(folder)
    if not root.is_dir():
        return None
    if (root / datasets_config.DATASETDICT_JSON_FILENAME).is_file():
        return load_from_disk(folder)
    if (root / datasets_config.DATASET_STATE_JSON_FILENAME).is_file():
        raise ValueError(
            f"{folder} holds one Dataset saved with save_to_disk, without splits; training needs a train and a test "
            "split. Save them together, DatasetDict({'train': train, 'test': test}).save_to_disk(folder), or each "
            "into its own subfolder: train.save_to_disk(f'{folder}/train'), test.save_to_disk(f'{folder}/test')."
        )
    splits = sorted(p for p in root.iterdir() if (p / datasets_config.DATASET_STATE_JSON_FILENAME).is_file())
    return DatasetDict({p.name: load_from_disk(p) for p in splits}) if splits else None


def load_image_folders(train_dir: str, test_dir: str, validation_dir: str | None = None) -> DatasetDict:
    """Image folders laid out as `split_dir/class_name/*.png`.

    The `imagefolder` builder sorts class folders as strings, so folders named `0 … 10` get the order
    `0, 1, 10, 2, …`: the `ClassLabel` names always say which id is which class.
    """
    data_files = {"train": train_dir, "test": test_dir} | ({"validation": validation_dir} if validation_dir else {})
    for split, folder in data_files.items():
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--{split}_dir {folder} is not a directory.")
        _check_image_folder(folder, f"--{split}_dir")
    # One builder call for all splits: the class list is the union of their folders, so ids agree across splits
    # (a class with no train folder then fails the split's empty-class check).
    return load_dataset("imagefolder", data_files={k: f"{v}/**" for k, v in data_files.items()})


def _check_image_folder(folder: str, option: str) -> None:
    """Fail on what `imagefolder` would get wrong silently or explain badly: no images at all ("corresponds to no
    data"), or images outside a class folder (it then drops the labels of the whole split); warn about files it
    skips because they are not images. Hidden files are skipped, as `datasets` does."""
    images, loose, others = 0, [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() not in ImageFolder.EXTENSIONS:
                others.append(os.path.relpath(os.path.join(root, name), folder))
            elif Path(root) == Path(folder):
                loose.append(name)
            else:
                images += 1
    if loose:
        raise ValueError(
            f"{option} {folder} holds images outside a class folder ({', '.join(sorted(loose)[:5])}"
            f"{', …' if len(loose) > 5 else ''}; {len(loose)} in all): every image must sit in "
            f"{option.removeprefix('--')}/class_name/. Move them into their class's folder, or remove them."
        )
    if images == 0:
        raise ValueError(
            f"{option} {folder} holds no images in class folders (it needs {option.removeprefix('--')}/class_name/"
            f"*.png, .jpg, …; found {len(others)} other files). Point {option} at the folder of class folders."
        )
    if others:
        logger.warning(
            "%s %s: %d files are not images and are not read: %s%s",
            option, folder, len(others), ", ".join(sorted(others)[:5]), ", …" if len(others) > 5 else "",
        )


def read_split_list(list_file: str, image_root: str) -> tuple[list[str], list[int]]:
    """Parse a `relative/path label` file (ImageNet-LT style) into absolute paths and integer labels."""
    paths, labels = [], []
    for line_no, line in enumerate(Path(list_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{line_no}: expected `relative/path label`, got {line!r}.")
        paths.append(str(Path(image_root) / parts[0]))
        labels.append(int(parts[1]))
    if not paths:
        raise ValueError(f"{list_file} lists no images: a split list needs `relative/path label` lines.")
    return paths, labels


def load_split_lists(
    image_root: str, train_list: str, test_list: str, validation_list: str | None = None
) -> DatasetDict:
    """Split lists over one image root; classes are the integer ids `0 … max label` found in the lists."""
    lists = {"train": train_list, "test": test_list} | ({"validation": validation_list} if validation_list else {})
    parsed = {split: read_split_list(path, image_root) for split, path in lists.items()}
    all_labels = [label for _, labels in parsed.values() for label in labels]
    if min(all_labels) < 0:
        raise ValueError(f"Split lists hold a negative label ({min(all_labels)}); labels must be 0 … C-1.")
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(max(all_labels) + 1)])})
    return DatasetDict(
        {split: Dataset.from_dict({"image": p, "label": y}, features=features) for split, (p, y) in parsed.items()}
    )


def standardize_columns(dataset: DatasetDict, image_column: str, label_column: str) -> DatasetDict:
    """Rename the user's columns to `image` / `label`, check the images are images, and give every split one
    `ClassLabel` (`_shared_class_label`)."""
    for split, ds in dataset.items():
        missing = [c for c in (image_column, label_column) if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"Split {split!r} has no column {missing}; its columns are {ds.column_names}. "
                "Set --image_column_name / --label_column_name."
            )
        if not isinstance(ds.features[image_column], Image):
            raise ValueError(
                f"Column {image_column!r} of split {split!r} holds {ds.features[image_column]}, not images "
                "(a `datasets.Image` feature). Set --image_column_name to the image column."
            )
    renames = {k: v for k, v in {image_column: "image", label_column: "label"}.items() if k != v}
    dataset = dataset.rename_columns(renames) if renames else dataset
    return _shared_class_label(dataset.select_columns(["image", "label"]), label_column)


# plain label values that name classes: integers and strings (floats, booleans, lists do not)
CLASS_VALUE_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "string", "large_string")
UNLABELLED = -1


def _shared_class_label(dataset: DatasetDict, label_column: str) -> DatasetDict:
    """One `ClassLabel` for all splits, so that an id means the same class in train and test.

    Each Hub split carries its own label feature, and two `ClassLabel`s may list the classes in different orders or
    sets: ids are then matched by class name, keeping the train split's order and appending the classes only other
    splits have (the split builder refuses those: they have no train images). Plain label values (integers or strings)
    become the sorted union of all splits' values (integers in numeric order, strings as strings), logged; -1 and
    missing values stay unlabelled (-1), which the split builder refuses by name. Other plain values, and a split with
    a `ClassLabel` beside one without, cannot be matched and are refused.
    """
    features = {split: ds.features["label"] for split, ds in dataset.items()}
    named = [split for split, feature in features.items() if isinstance(feature, ClassLabel)]
    if named and len(named) < len(features):
        plain = [split for split in features if split not in named]
        raise ValueError(
            f"The label column is a ClassLabel in {named} but holds plain values in {plain} "
            f"({features[plain[0]]}), so their ids cannot be matched. Cast every split to one ClassLabel "
            "(`Dataset.cast_column`) before training, or use image folders / split lists."
        )
    if named:
        first = features.get("train", features[named[0]])
        names = list(dict.fromkeys(name for feature in (first, *features.values()) for name in feature.names))
        if all(feature.names == names for feature in features.values()):
            return dataset
        index = {name: i for i, name in enumerate(names)}
        # -1 (no label) stays -1: the split builder names the unlabelled split
        lookups = {split: {-1: -1} | {i: index[n] for i, n in enumerate(f.names)} for split, f in features.items()}
        differ = [split for split, feature in features.items() if feature.names != names]
        logger.warning(
            "The label features of %s list other classes or another order than the train split's; ids are matched by "
            "class name (%d classes: %s).",
            differ, len(names), ", ".join(names[:10]) + (", …" if len(names) > 10 else ""),
        )
    else:
        kind = _class_value_kind(features, label_column)
        values = sorted({v for ds in dataset.values() for v in ds.unique("label")} - {None, UNLABELLED})
        names = [str(v) for v in values]
        lookup = {None: UNLABELLED, UNLABELLED: UNLABELLED} | {v: i for i, v in enumerate(values)}
        lookups = dict.fromkeys(features, lookup)
        logger.info(
            "The label column %r holds plain %s values, not a ClassLabel: its %d classes get the ids of their sorted "
            "order (%s): %s. The names are recorded in the model's config and lt_split.json.",
            label_column, kind, len(names),
            "numeric" if kind == "integer" else "as strings: 'class10' comes before 'class2'",
            ", ".join(f"{i} = {n!r}" for i, n in enumerate(names[:10])) + (", …" if len(names) > 10 else ""),
        )  # fmt: skip
    label = ClassLabel(names=names)
    return DatasetDict({split: _relabel(ds, lookups[split], label) for split, ds in dataset.items()})


def _class_value_kind(features: dict, label_column: str) -> str:
    """'integer' or 'string': what a plain label column holds, the same in every split; anything else is refused."""
    for split, feature in features.items():
        if not (isinstance(feature, Value) and feature.dtype in CLASS_VALUE_TYPES):
            raise ValueError(
                f"The label column {label_column!r} of split {split!r} holds {feature}, not class labels (a ClassLabel, "
                "integers or strings). Point --label_column_name at the class column, or cast this one first: "
                f"dataset.cast_column({label_column!r}, ClassLabel(names=[...]))."
            )
    kinds = {split: "string" if "string" in feature.dtype else "integer" for split, feature in features.items()}
    if len(set(kinds.values())) > 1:
        raise ValueError(
            f"The label column {label_column!r} holds integers in some splits and strings in others ({kinds}), so "
            "their classes cannot be matched. Cast every split to one ClassLabel (`Dataset.cast_column`) first."
        )
    return next(iter(kinds.values()))


def _relabel(dataset: Dataset, lookup: dict, label: ClassLabel) -> Dataset:
    features = dataset.features.copy()
    features["label"] = label
    return dataset.map(
        lambda labels: {"label": [lookup[v] for v in labels]}, input_columns="label", batched=True, features=features
    )
