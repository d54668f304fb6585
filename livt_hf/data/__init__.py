"""Data sources, long-tailed splits and transforms."""

from .build import load_source, prepare_splits
from .device_images import DeviceImages, IndexedImages, device_train_data
from .image_checks import BAD_IMAGE_POLICIES, check_images, sample_image_modes
from .long_tail import (
    LongTailSplit,
    balanced_counts,
    build_long_tail_splits,
    class_counts,
    exponential_counts,
    pareto_counts,
    profile_counts,
)
from .mixing import MIXING_METHODS, Mixer
from .samplers import SAMPLERS, ClassAwareSampler, PairedDataset, PartnerSampler, build_train_sampler
from .sources import (
    FASHION_MNIST_DIR,
    load_fashion_mnist,
    load_hub_dataset,
    load_image_folders,
    load_split_lists,
)
from .transforms import (
    attach_transforms,
    auto_augment_transform,
    batch_transform,
    checkpoint_processor,
    convert_image,
    eval_transform,
    image_mode,
    image_processor,
    train_transform,
)

__all__ = [
    "BAD_IMAGE_POLICIES",
    "attach_transforms",
    "auto_augment_transform",
    "build_train_sampler",
    "ClassAwareSampler",
    "DeviceImages",
    "IndexedImages",
    "MIXING_METHODS",
    "Mixer",
    "PairedDataset",
    "PartnerSampler",
    "SAMPLERS",
    "FASHION_MNIST_DIR",
    "LongTailSplit",
    "balanced_counts",
    "batch_transform",
    "build_long_tail_splits",
    "check_images",
    "checkpoint_processor",
    "class_counts",
    "convert_image",
    "device_train_data",
    "eval_transform",
    "exponential_counts",
    "image_mode",
    "image_processor",
    "load_fashion_mnist",
    "load_hub_dataset",
    "load_image_folders",
    "load_source",
    "load_split_lists",
    "pareto_counts",
    "prepare_splits",
    "profile_counts",
    "sample_image_modes",
    "train_transform",
]
