"""From `DataArguments` to the train / validation / test splits both scripts train on."""

from __future__ import annotations

import logging

from datasets import DatasetDict

from .image_checks import check_images, default_check_workers
from .long_tail import LongTailSplit, build_long_tail_splits
from .sources import load_fashion_mnist, load_hub_dataset, load_image_folders, load_split_lists

logger = logging.getLogger(__name__)


def load_source(args) -> DatasetDict:
    """The source named by `args` (a `DataArguments`): Hub, image folders, split lists, else Fashion-MNIST."""
    if args.source == "hub":
        return load_hub_dataset(
            args.dataset_name, args.dataset_config_name, args.image_column_name, args.label_column_name
        )
    if args.source == "image_folders":
        return load_image_folders(args.train_dir, args.test_dir, args.validation_dir)
    if args.source == "split_lists":
        return load_split_lists(args.image_root, args.train_list, args.test_list, args.validation_list)
    return load_fashion_mnist(args.fashion_mnist_dir)


def prepare_splits(args) -> tuple[DatasetDict, LongTailSplit]:
    """Load the source, check its image files, and build the long-tailed train split, the validation carve and the
    test split. The check comes first, so that images left out by `--bad_images skip` are not in the class counts."""
    source, skipped = load_source(args), {}
    if args.source != "fashion_mnist" and args.bad_images != "no_check":
        workers = args.image_check_workers or default_check_workers()
        source, skipped = check_images(source, args.bad_images, args.max_bad_image_fraction, workers)
    splits, info = build_long_tail_splits(
        source,
        profile=args.long_tail_profile,
        imbalance_ratio=args.imbalance_ratio,
        max_per_class=args.max_per_class,
        balanced=args.balanced,
        validation_split=args.validation_split,
        max_test_samples=args.max_test_samples,
        seed=args.split_seed,
    )
    info.skipped_images = skipped
    logger.info(
        "Train split: %d images, %d classes, counts %s (head %d, tail %d); validation %d (%s); test %d.",
        sum(info.train_counts),
        len(info.class_names),
        info.train_counts,
        max(info.train_counts),
        min(info.train_counts),
        sum(info.validation_counts),
        info.validation_source,
        sum(info.test_counts),
    )
    return splits, info
