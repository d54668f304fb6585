"""Dataclass arguments for both scripts (HfArgumentParser): flags, or one JSON recipe as the only argument."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

from .configuration_livt import HEAD_BIAS_INITS, LiVTConfig
from .data.batch_augment import check_batched_auto_augment
from .data.image_checks import BAD_IMAGE_POLICIES, MAX_BAD_IMAGE_FRACTION
from .data.long_tail import PROFILES, check_imbalance_ratio
from .data.mixing import MIXING_DEFAULTS, MIXING_METHODS, Mixer
from .data.samplers import SAMPLERS
from .data.transforms import auto_augment_transform, check_crop_and_erasing
from .data.sources import FASHION_MNIST_DIR
from .losses import LOSS_DEFAULTS, LOSSES, PRIOR_AWARE_LOSSES, resolve_test_prior
from .mae import NEW_MAE_GEOMETRY, check_patch_grid
from .optim import check_layer_decay

logger = logging.getLogger("livt_hf")
TRANSLATE_FROM_EPOCHS = 100  # the default --random_translate is on from this many step-floor epochs


@dataclass
class DataArguments:
    """Where the images come from and how the long-tailed split is built (default: Fashion-MNIST-LT, ρ = 100)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hugging Face dataset: a Hub name (needs network), a local folder saved with save_to_disk, "
                  "or a local folder of data files in the Hub layout (data/train-*.parquet, data/test-*.parquet)."},
    )  # fmt: skip
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    image_column_name: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    label_column_name: str = field(
        default="label",
        metadata={"help": "Label column of --dataset_name: a ClassLabel, or integers / strings (classes sorted)."},
    )
    train_dir: str | None = field(default=None, metadata={"help": "Image folder `class_name/*.jpg` for training."})
    validation_dir: str | None = field(default=None, metadata={"help": "Optional image folder for validation."})
    test_dir: str | None = field(default=None, metadata={"help": "Image folder for the reported test split."})
    image_root: str | None = field(default=None, metadata={"help": "Root the split lists' paths are relative to."})
    train_list: str | None = field(default=None, metadata={"help": "`relative/path label` lines (ImageNet-LT style)."})
    validation_list: str | None = field(default=None, metadata={"help": "Optional validation split list."})
    test_list: str | None = field(default=None, metadata={"help": "Test split list."})
    fashion_mnist_dir: str = field(
        default=FASHION_MNIST_DIR, metadata={"help": "Folder with the Fashion-MNIST idx files (the default source)."}
    )
    long_tail_profile: str = field(
        default="exponential",
        metadata={"help": f"One of {PROFILES}: subsample train to a long tail, or 'none' to use it as it is."},
    )
    imbalance_ratio: float = field(default=100.0, metadata={"help": "ρ = n_max / n_min of the train split (≥ 1)."})
    max_per_class: int = field(default=5000, metadata={"help": "n_max, images of the head class (CIFAR-10-LT: 5000)."})
    balanced: bool = field(
        default=False, metadata={"help": "Same number of images as the profile's split, spread evenly (LiVT's BAL)."}
    )
    validation_split: float | None = field(
        default=None,
        metadata={
            "help": "Validation carved from train: round(v · n_max) left-out images per class when subsampling, "
            "a stratified fraction v with profile 'none'. Default 0.02, raised to reach 500 images where the data allows "
            "(left-out images; at most 0.1 of train for a carve); not allowed when a validation split is given."
        },
    )
    max_test_samples: int | None = field(default=None, metadata={"help": "Evaluate on a seeded random test subset."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the long-tailed subsampling and validation carve."})
    crop_min_scale: float = field(default=0.2, metadata={"help": "RandomResizedCrop's smallest area fraction."})
    bad_images: str = field(
        default="error",
        metadata={
            "help": "Image files (folders, split lists, Hub datasets) are fully decoded once before training, every "
            "split and every image (ImageNet-LT's 115k JPEGs: minutes). 'error': stop if any cannot be decoded, naming "
            "them; 'skip': leave them out with a warning, class counts without them (at most "
            "--max_bad_image_fraction of a split); 'no_check': no scan (a bad file then crashes training when loaded)."
        },
    )
    max_bad_image_fraction: float = field(
        default=MAX_BAD_IMAGE_FRACTION,
        metadata={"help": "With --bad_images skip: the largest fraction of a split that may be left out."},
    )
    image_check_workers: int | None = field(
        default=None,
        metadata={"help": "Processes decoding images in the check (default: this process's share of the cores)."},
    )
    augment_on_device: bool = field(
        default=False,
        metadata={
            "help": "Decode the train split once into a uint8 tensor on the training device and augment whole "
            "batches there (same augmentation, per-sample parameters), instead of per image in DataLoader workers: "
            "for small images (28–64 px), where CPU workers cannot keep a GPU busy. The split must fit in half the "
            "GPU's free memory."
        },
    )

    @property
    def source(self) -> str:
        """'hub', 'image_folders', 'split_lists' or 'fashion_mnist' (the default)."""
        if self.dataset_name is not None:
            return "hub"
        if self.train_dir is not None:
            return "image_folders"
        return "split_lists" if self.train_list is not None else "fashion_mnist"

    def __post_init__(self):
        if self.long_tail_profile not in PROFILES:
            raise ValueError(f"Unknown --long_tail_profile {self.long_tail_profile!r}; choose one of {PROFILES}.")
        sources = {
            "--dataset_name": self.dataset_name is not None,
            "--train_dir/--test_dir": self.train_dir is not None or self.test_dir is not None,
            "--train_list/--test_list": self.train_list is not None or self.test_list is not None,
        }
        chosen = [name for name, used in sources.items() if used]
        if len(chosen) > 1:
            raise ValueError(f"Choose one data source, got {chosen}.")
        if (self.train_dir is None) != (self.test_dir is None) or (self.validation_dir and not self.train_dir):
            raise ValueError("Image folders need both --train_dir and --test_dir (--validation_dir is optional).")
        if (self.train_list is None) != (self.test_list is None) or (self.validation_list and not self.train_list):
            raise ValueError("Split lists need --train_list and --test_list (--validation_list is optional).")
        if self.train_list is not None and self.image_root is None:
            raise ValueError("Split lists need --image_root, the folder their paths are relative to.")
        if self.image_root is not None and self.train_list is None:
            raise ValueError("--image_root is only used with --train_list/--test_list.")
        if self.balanced and self.long_tail_profile == "none":
            raise ValueError("--balanced needs a profile to match in size; it cannot be used with profile 'none'.")
        if self.long_tail_profile != "none":
            check_imbalance_ratio(self.imbalance_ratio)
        if self.max_per_class < 1:
            raise ValueError(f"--max_per_class (n_max, images of the head class) must be ≥ 1, got {self.max_per_class}.")
        if self.validation_split is not None and not 0 < self.validation_split < 1:
            raise ValueError(f"--validation_split is a fraction in (0, 1), got {self.validation_split}.")
        if self.max_test_samples is not None and self.max_test_samples < 1:
            raise ValueError(
                f"--max_test_samples must be ≥ 1 (leave it out for the whole test split), got {self.max_test_samples}."
            )
        check_crop_and_erasing(self.crop_min_scale)
        self._check_bad_image_options()

    def _check_bad_image_options(self) -> None:
        """Every bad-image option must act: each is refused where the run would ignore it."""
        if self.bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"Unknown --bad_images {self.bad_images!r}; choose one of {BAD_IMAGE_POLICIES}.")
        if not 0 <= self.max_bad_image_fraction <= 1:
            raise ValueError(f"--max_bad_image_fraction is a fraction in [0, 1], got {self.max_bad_image_fraction}.")
        if self.max_bad_image_fraction != MAX_BAD_IMAGE_FRACTION and self.bad_images != "skip":
            raise ValueError("--max_bad_image_fraction only applies with --bad_images skip; pass both or neither.")
        if self.image_check_workers is not None and (self.image_check_workers < 1 or self.bad_images == "no_check"):
            raise ValueError(
                f"--image_check_workers {self.image_check_workers}: give ≥ 1 process, and only with a scan "
                "(--bad_images error or skip)."
            )
        if self.source == "fashion_mnist" and (self.bad_images != "error" or self.image_check_workers is not None):
            raise ValueError(
                "--bad_images / --image_check_workers act on image files; the Fashion-MNIST source has none (its "
                "images come from the checked idx arrays). Drop them, or choose an image source."
            )


@dataclass
class PretrainDataArguments(DataArguments):
    crop_min_scale: float = field(default=0.2, metadata={"help": "RandomResizedCrop's smallest area (MAE: 0.2)."})


@dataclass
class FinetuneDataArguments(DataArguments):
    """BFT adds LiVT Table 9's fine-tuning augmentation (off by default, crop included: the 12-epoch CPU demo on 28-px
    images loses accuracy with it, docs/DEMO_RECIPE.md; recipes/ switch it on) and a class-aware sampler."""

    crop_min_scale: float = field(
        default=1.0, metadata={"help": "RandomResizedCrop's smallest area (1: flip only; LiVT: 0.08, recipes/)."}
    )
    auto_augment: str = field(
        default="none",
        metadata={
            "help": "'none', 'autoaugment', or RandAugment 'rand-m<0-10>[-n<ops>][-mstd<std>]' (LiVT: rand-m9-mstd0.5)."
        },
    )
    random_erasing: float = field(default=0.0, metadata={"help": "RandomErasing probability (LiVT: 0.25)."})
    random_translate: int | None = field(
        default=None,
        metadata={"help": "Shift each training image by up to this many pixels along each axis, black shifted in "
                  "(the CIFAR recipe's pad-and-crop; 0: off). Default: off, or a ninth of the image side on a split "
                  f"so small that --min_train_steps gives it ≥ {TRANSLATE_FROM_EPOCHS} epochs (logged)."},
    )  # fmt: skip
    train_sampler: str = field(
        default="instance",
        metadata={"help": f"One of {SAMPLERS}: class probability ∝ n, 1, √n, or instance → class-balanced over training."},
    )
    many_threshold: int = field(default=100, metadata={"help": "Many-shot classes have more train images than this."})
    few_threshold: int = field(default=20, metadata={"help": "Few-shot classes have fewer train images than this."})

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.few_threshold <= self.many_threshold:
            raise ValueError(
                f"Shot groups need 0 < --few_threshold ≤ --many_threshold, got few {self.few_threshold}, many "
                f"{self.many_threshold} (LiVT: few < 20 ≤ medium ≤ 100 < many)."
            )
        if self.train_sampler not in SAMPLERS:
            raise ValueError(f"Unknown --train_sampler {self.train_sampler!r}; choose one of {SAMPLERS}.")
        check_crop_and_erasing(self.crop_min_scale, self.random_erasing, self.random_translate or 0)  # run early
        auto_augment_transform(self.auto_augment)  # a bad spec fails here, before any data is loaded
        if self.augment_on_device:
            check_batched_auto_augment(self.auto_augment)

    def resolve_random_translate(self, image_size: int, num_train_epochs: float, epochs_raised: bool) -> None:
        """Give the default (`None`) its value once the schedule is known. Translation pays where each image is seen
        hundreds of times and costs where it is seen a few dozen: on 1,116 Fashion-MNIST-LT images trained 4000 steps
        (223 epochs) 3 px lift validation by 1.8 points, on the 12,406 of the 18-epoch demo 2 px cost 6.5
        (docs/DEMO_RECIPE.md). So it is on where --min_train_steps raised the epochs to `TRANSLATE_FROM_EPOCHS` or
        more: a split far too small for the recipe's epochs."""
        if self.random_translate is not None:
            return
        small = epochs_raised and num_train_epochs >= TRANSLATE_FROM_EPOCHS
        self.random_translate = round(image_size / 9) if small else 0
        logger.info("--random_translate %d (default: %s).", self.random_translate,
                    f"{num_train_epochs:g} epochs from --min_train_steps, a small split" if small
                    else "off: the split is not small enough to need it")  # fmt: skip


DEFAULT_MAE_CHECKPOINT = "outputs/mae-fmnist-lt"  # PretrainingArguments' output_dir


def _geometry_flag(name: str):
    """A ViTMAE shape flag: unset (None) unless given, so that a checkpoint's geometry is only checked against flags
    the user passed; a new model takes `NEW_MAE_GEOMETRY`'s value."""
    return field(default=None, metadata={"help": f"Default {NEW_MAE_GEOMETRY[name]}, or the checkpoint's."})


@dataclass
class PretrainModelArguments:
    """The ViTMAE to train: a new one (geometry defaults: a small ViT for 28-px Fashion-MNIST) or a checkpoint whose
    weights MGP continues from (its geometry then; a geometry flag may only repeat it), and the MGP objective."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue MGP from this ViTMAE checkpoint (folder or Hub id, e.g. facebook/vit-mae-base): "
                  "its weights, geometry and image processor. Default: a new, randomly initialised ViTMAE."},
    )  # fmt: skip
    image_size: int | None = field(
        default=None,
        metadata={"help": "Input resolution (square). New model: default 28. Checkpoint: default its own; another size "
                  "recomputes MAE's fixed sin-cos position embeddings for the new patch grid."},
    )  # fmt: skip
    patch_size: int | None = _geometry_flag("patch_size")
    num_channels: int | None = field(
        default=None, metadata={"help": "1 or 3; default: the checkpoint's, or chosen from the training images."}
    )
    hidden_size: int | None = _geometry_flag("hidden_size")
    num_hidden_layers: int | None = _geometry_flag("num_hidden_layers")
    num_attention_heads: int | None = _geometry_flag("num_attention_heads")
    intermediate_size: int | None = _geometry_flag("intermediate_size")
    decoder_hidden_size: int | None = _geometry_flag("decoder_hidden_size")
    decoder_num_hidden_layers: int | None = _geometry_flag("decoder_num_hidden_layers")
    decoder_num_attention_heads: int | None = _geometry_flag("decoder_num_attention_heads")
    decoder_intermediate_size: int | None = _geometry_flag("decoder_intermediate_size")
    mask_ratio: float = field(default=0.75, metadata={"help": "Fraction of patches masked (LiVT: 0.75)."})
    norm_pix_loss: bool = field(
        default=True, metadata={"help": "Reconstruct per-patch normalised pixels (LiVT; also when a checkpoint was not)."}
    )

    def __post_init__(self):
        if self.num_channels not in (None, 1, 3):
            raise ValueError(
                f"--num_channels must be 1 (grayscale) or 3 (RGB), got {self.num_channels}; leave it out to choose "
                "from the training images (or to take the checkpoint's)."
            )
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"--mask_ratio must be in (0, 1), got {self.mask_ratio}.")
        if self.model_name_or_path is not None:
            return  # the geometry is the checkpoint's, checked against these flags when it is loaded
        for name, value in NEW_MAE_GEOMETRY.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check_patch_grid(self.image_size, self.patch_size, "change --image_size or --patch_size")


@dataclass
class FinetuneModelArguments:
    """The MGP checkpoint to start from and the balanced fine-tuning head, loss and optimizer shape."""

    mae_checkpoint: str | None = field(
        default=None,
        metadata={"help": f"ViTMAE checkpoint (folder or Hub id) from stage 1; default {DEFAULT_MAE_CHECKPOINT}, where "
                  "run_pretrain_mae.py writes by default."},
    )  # fmt: skip
    from_scratch: bool = field(
        default=False,
        metadata={"help": "Start from a new, randomly initialised ViTMAE encoder (MAE's initialisation, "
                  "run_pretrain_mae.py's default geometry, --image_size if given) instead of a checkpoint: the CPU "
                  "demo's start, ahead of 12 MGP epochs at its budget (docs/DEMO_RECIPE.md)."},
    )  # fmt: skip
    image_size: int | None = field(
        default=None, metadata={"help": "Fine-tuning resolution; default: the checkpoint's. Position embeddings resize."}
    )
    loss: str = field(default="bal_bce", metadata={"help": f"One of {LOSSES}."})
    tau: float = field(default=1.0, metadata={"help": f"τ of the prior bias ({', '.join(PRIOR_AWARE_LOSSES)})."})
    test_prior: list[float] | None = field(
        default=None, metadata={"help": "Test label distribution the prior-aware losses train for (default uniform)."}
    )
    inference_test_prior: list[float] | None = field(
        default=None, metadata={"help": "Shift the model's predictions to this label distribution (no retraining)."}
    )
    cosine_head: bool = field(default=False, metadata={"help": "Cosine-similarity logits (needed by ldam)."})
    head_init_std: float = field(
        default=0.02, metadata={"help": "Std of the head's initial weights (MAE: 2e-5, for a well-pretrained encoder)."}
    )
    head_bias_init: str = field(
        default="prior",
        metadata={"help": f"One of {HEAD_BIAS_INITS}: 'prior' starts the head bias where training predicts the train "
                  "prior (livt_hf.losses.prior_head_bias), 'zero' at 0."},
    )
    focal_gamma: float = field(default=LOSS_DEFAULTS["focal_gamma"], metadata={"help": "γ of focal."})
    cb_beta: float = field(default=LOSS_DEFAULTS["cb_beta"], metadata={"help": "β of cb and of DRW's weights."})
    ldam_max_margin: float = field(default=LOSS_DEFAULTS["ldam_max_margin"], metadata={"help": "LDAM's largest Δ."})
    ldam_scale: float = field(default=LOSS_DEFAULTS["ldam_scale"], metadata={"help": "LDAM's logit scale s."})
    drw_epoch: int | None = field(
        default=LOSS_DEFAULTS["drw_epoch"], metadata={"help": "Deferred re-weighting from this epoch (0-based)."}
    )
    negative_tolerance: float = field(
        default=LOSS_DEFAULTS["negative_tolerance"], metadata={"help": "λ of nt_bce / nt_bce_bal."}
    )
    drop_path_rate: float = field(default=0.0, metadata={"help": "Stochastic depth of the last layer (LiVT: 0.1)."})
    layer_decay: float = field(default=1.0, metadata={"help": "Layer-wise LR decay (1: none; LiVT: 0.75)."})

    def __post_init__(self):
        if self.from_scratch and self.mae_checkpoint is not None:
            raise ValueError(
                f"--from_scratch starts from a new, randomly initialised ViTMAE; --mae_checkpoint {self.mae_checkpoint} "
                "names one to start from. Pass one of them."
            )
        if not self.from_scratch and self.mae_checkpoint is None:
            self.mae_checkpoint = DEFAULT_MAE_CHECKPOINT
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown --loss {self.loss!r}; choose one of {LOSSES}.")
        for flag, prior in (("--test_prior", self.test_prior), ("--inference_test_prior", self.inference_test_prior)):
            if prior is not None:
                try:
                    resolve_test_prior(len(prior), prior)
                except ValueError as err:
                    raise ValueError(f"{flag}: {err}") from None
        # the config's own checks (τ ≥ 0, drop path in [0, 1), LDAM's cosine head, no option the loss does not use,
        # --test_prior included) on stand-in classes, one per --test_prior entry, before any data is loaded
        classes = len(self.test_prior) if self.test_prior is not None else 2
        try:
            LiVTConfig(loss=self.loss, tau=self.tau, drop_path_rate=self.drop_path_rate, cosine_head=self.cosine_head,
                       head_init_std=self.head_init_std, head_bias_init=self.head_bias_init, num_labels=classes,
                       class_counts=[1] * classes, test_prior=self.test_prior,
                       **{name: getattr(self, name) for name in LOSS_DEFAULTS})  # fmt: skip
        except Exception as err:  # the strict dataclass wraps the ValueError that names the option
            raise ValueError(str(err.__cause__ or err)) from None
        check_layer_decay(self.layer_decay)


@dataclass
class MixingArguments:
    """Batch mixing in BFT (livt_hf/data/mixing.py). A parameter changed for a method that does not use it is an error."""

    mixing: str = field(
        default="mixup_cutmix", metadata={"help": f"One of {MIXING_METHODS} (LiVT's mixup_cutmix; none: off)."}
    )
    mixup_alpha: float = field(default=MIXING_DEFAULTS["mixup_alpha"], metadata={"help": "Mixup's Beta α (0: off)."})
    cutmix_alpha: float = field(default=MIXING_DEFAULTS["cutmix_alpha"], metadata={"help": "CutMix's Beta α (0: off)."})
    mix_switch_prob: float = field(
        default=MIXING_DEFAULTS["mix_switch_prob"], metadata={"help": "Probability a batch uses cutmix, not mixup."}
    )
    remix_kappa: float = field(default=MIXING_DEFAULTS["remix_kappa"], metadata={"help": "Remix's count ratio κ."})
    remix_tau: float = field(default=MIXING_DEFAULTS["remix_tau"], metadata={"help": "Remix's mixing threshold τ."})
    unimix_alpha: float = field(
        default=MIXING_DEFAULTS["unimix_alpha"], metadata={"help": "α of the UniMix factor's Beta (paper: 0.5)."}
    )
    unimix_tau: float = field(
        default=MIXING_DEFAULTS["unimix_tau"],
        metadata={"help": "UniMix sampler: partner class ∝ π^τ (1: random; paper: −1 for 10 classes, 0 for 100)."},
    )
    mix_until_epoch: int | None = field(
        default=MIXING_DEFAULTS["mix_until_epoch"],
        metadata={"help": "Stop mixing from this epoch on (UniMix Alg. 1's T1; paper: 120 of 200). Default: never."},
    )

    def __post_init__(self):
        Mixer(self.mixing, [1, 1], **self.mixer_params())  # validates names and values before any data is loaded

    def mixer_params(self) -> dict:
        return {name: getattr(self, name) for name in MIXING_DEFAULTS}


@dataclass
class ScaledLRTrainingArguments(TrainingArguments):
    """`TrainingArguments` with MAE's learning-rate rule.

    Rule: `--learning_rate` is the absolute peak LR; when it is not given, the LR is `--base_learning_rate` ×
    total batch / 256 (total batch = per-device batch × accumulation steps × processes). Giving both is an error.
    """

    default_base_learning_rate = 1e-3  # class attribute, not a field: each stage sets its own

    learning_rate: float | None = field(
        default=None, metadata={"help": "Absolute peak LR. Default: base_learning_rate × total batch / 256."}
    )
    base_learning_rate: float | None = field(
        default=None, metadata={"help": "LR per 256 images of total batch (default: the stage's recipe value)."}
    )
    min_train_steps: int = field(
        default=0,
        metadata={
            "help": "Train for at least this many optimizer steps: on a small train split --num_train_epochs is raised "
            "until it gives them (logged). 0: train exactly --num_train_epochs. --max_steps, when given, fixes the steps."
        },
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Delete an earlier run in output_dir first."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: transforms read `image`."})
    logging_steps: float = field(default=20)
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={"help": "Trainer's filter hides non-finite losses and syncs the GPU every step; off here."},
    )
    dataloader_num_workers: int = field(
        default_factory=lambda: min(8, (os.cpu_count() or 1) // 2) if torch.cuda.is_available() else 0,
        metadata={"help": "Image-decoding workers (default: half the cores, at most 8, with a GPU; none on CPU)."},
    )
    dataloader_pin_memory: bool = field(
        default_factory=torch.cuda.is_available, metadata={"help": "Pin host memory (default: when CUDA is there)."}
    )

    def __post_init__(self):
        explicit_lr = self.learning_rate
        if explicit_lr is not None and self.base_learning_rate is not None:
            raise ValueError(
                f"Both --learning_rate ({explicit_lr}) and --base_learning_rate ({self.base_learning_rate}) given. "
                "Pass one: the absolute LR, or the LR per 256 images that is scaled by the total batch size."
            )
        self.learning_rate = explicit_lr if explicit_lr is not None else 0.0
        super().__post_init__()
        if self.remove_unused_columns:
            raise ValueError(
                "--remove_unused_columns True would drop the `image` and `label` columns (and --augment_on_device's "
                "image indices) before our transforms read them: the model's inputs are made from them. Leave it "
                "False (the default here)."
            )
        if self.min_train_steps < 0:
            raise ValueError(f"--min_train_steps must be ≥ 0 (0: no minimum), got {self.min_train_steps}.")
        default_floor = type(self).__dataclass_fields__["min_train_steps"].default
        if self.max_steps > 0 and self.min_train_steps not in (0, default_floor):
            raise ValueError(
                f"--max_steps {self.max_steps} fixes the number of steps; --min_train_steps {self.min_train_steps} would "
                "not act. Pass one of them."
            )
        for flag in ("per_device_train_batch_size", "per_device_eval_batch_size"):
            if getattr(self, flag) < 1:
                raise ValueError(f"--{flag} must be ≥ 1 (images per process and step), got {getattr(self, flag)}.")
        if self.fsdp_plugin_args is not None and (self.use_cpu or not torch.accelerator.is_available()):
            raise ValueError(
                "--fsdp shards the model across GPUs (or other accelerators); accelerate runs CPU processes as plain "
                "DDP and would ignore it. Drop --fsdp here: torchrun / accelerate launch give DDP without it."
            )
        if explicit_lr is None:
            blr = self.base_learning_rate if self.base_learning_rate is not None else self.default_base_learning_rate
            self.learning_rate = blr * self.total_train_batch_size / 256
            self.lr_rule = f"learning_rate {self.learning_rate:.3g} = base_learning_rate {blr:g} × {self.total_train_batch_size} / 256"
        else:
            self.lr_rule = f"learning_rate {explicit_lr:g} as given (--learning_rate wins; base_learning_rate unused)"

    @property
    def total_train_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.world_size


@dataclass
class PretrainingArguments(ScaledLRTrainingArguments):
    """MGP defaults: LiVT Table 10's optimizer (AdamW(0.9, 0.95), wd 0.05, cosine to 0, warmup 5 %), sized for the
    CPU demo (12 epochs, base LR 1.5e-3: 5 epochs fine-tune 9 points worse on validation; at least 2000 steps: on
    1,116 images 2000 steps fine-tune 7 points better than 500, docs/DEMO_RECIPE.md; LiVT trains 800 epochs at
    1.5e-4 × 4096 / 256: recipes/)."""

    default_base_learning_rate = 1.5e-3

    output_dir: str = field(default=DEFAULT_MAE_CHECKPOINT)
    num_train_epochs: float = field(default=12)
    min_train_steps: int = field(default=2000, metadata={"help": "At least this many steps (epochs raised; 0: off)."})
    per_device_train_batch_size: int = field(default=256)
    per_device_eval_batch_size: int = field(default=256)
    weight_decay: float = field(default=0.05)
    adam_beta2: float = field(default=0.95)
    lr_scheduler_type: str = field(default="cosine")
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a fraction of training if < 1."})
    eval_strategy: str = field(default="epoch")
    save_strategy: str = field(default="epoch")
    save_total_limit: int | None = field(default=2)


@dataclass
class FinetuningArguments(ScaledLRTrainingArguments):
    """BFT defaults: LiVT Table 10's optimizer (AdamW(0.9, 0.99), wd 0.05, cosine to 1e-6, warmup 10 %), sized for
    the CPU demo (18 epochs at batch 64, base LR 4e-3 → peak 1e-3: more updates suit a short run; batch 32 or 128,
    base LR 2e-3 or 8e-3 were no better, docs/DEMO_RECIPE.md; LiVT: 100 epochs, base LR 1e-3 at batch 1024:
    recipes/); at least 3400 steps, about the demo's 18 epochs (3,492 steps), so that a smaller split trains as long:
    on 1,116 images with translation, 3400 steps score 1.7 validation points above 2000 and level with 4000,
    docs/DEMO_RECIPE.md). The best epoch is chosen on the validation split."""

    default_base_learning_rate = 4e-3

    output_dir: str = field(default="outputs/livt-fmnist-lt")
    num_train_epochs: float = field(default=18)
    min_train_steps: int = field(default=3400, metadata={"help": "At least this many steps (epochs raised; 0: off)."})
    per_device_train_batch_size: int = field(default=64)
    per_device_eval_batch_size: int = field(default=256)
    weight_decay: float = field(default=0.05)
    adam_beta2: float = field(default=0.99)
    lr_scheduler_type: str = field(default="cosine_with_min_lr")
    lr_scheduler_kwargs: dict | str | None = field(default_factory=lambda: {"min_lr": 1e-6})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warmup steps, or a fraction of training if < 1."})
    eval_strategy: str = field(default="epoch")
    save_strategy: str = field(default="epoch")
    save_total_limit: int | None = field(default=2)
    load_best_model_at_end: bool = field(default=True)
    metric_for_best_model: str = field(default="accuracy")


def parse_args(*dataclass_types: type) -> tuple:
    """Parse flags, or a single `.json` recipe given as the only argument.

    Recipe keys starting with `_` are notes (where the numbers come from) and are not arguments.
    """
    parser = HfArgumentParser(dataclass_types)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        recipe = json.loads(Path(sys.argv[1]).read_text())
        return parser.parse_dict({k: v for k, v in recipe.items() if not k.startswith("_")})
    return parser.parse_args_into_dataclasses()
