"""LiVT configuration: ViT geometry plus everything the balanced fine-tuning head and loss need."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import ViTConfig

from .losses import LOSS_DEFAULTS, LOSSES, SIGMOID_LOSSES, build_loss, resolve_test_prior
from .mae import check_patch_grid

HEAD_BIAS_INITS = ("prior", "zero")

# Fields that define the encoder's weights: a ViTMAE checkpoint must agree on all of them.
ENCODER_GEOMETRY = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "num_channels",
    "qkv_bias",
)
# Fields copied from a ViTMAE checkpoint's config into the classifier's.
ENCODER_FIELDS = (*ENCODER_GEOMETRY, "hidden_act", "layer_norm_eps", "image_size")


@strict
class LiVTConfig(ViTConfig):
    r"""
    ViT encoder + mean-pool / fc_norm / linear head, trained with a prior-aware loss (LiVT stage 2).

    The train class counts live here, so `from_pretrained` rebuilds the same loss and the same prior.

    class_counts (`list[int]`): training images per class (the train prior π_s); required by `bal_ce` / `bal_bce`.
    test_prior (`list[float]`, *optional*): π_t the model is trained for; None means a balanced test set.
    inference_test_prior (`list[float]`, *optional*): outside training, logits are shifted to this label
        distribution (no retraining; `livt_hf.prior_shift`). None: the logits answer for `test_prior`.
    loss (`str`): one of `livt_hf.losses.LOSSES`.
    tau (`float`): τ, the scale of the prior bias (LiVT Table 10: 1.0, Places-LT 1.05).
    drop_path_rate (`float`): stochastic depth, rising linearly from 0 to this over the layers.
    head_init_std (`float`): std of the classifier weights at init (MAE fine-tuning: 2e-5, a near-zero head).
    head_bias_init (`str`): 'prior': the head bias starts where training predicts the train prior
        (`livt_hf.losses.prior_head_bias`; needs `class_counts`); 'zero': at 0 (MAE).
    cosine_head (`bool`): logits are cosines between the pooled feature and each class weight (needed by `ldam`).
    focal_gamma, cb_beta, ldam_max_margin, ldam_scale, drw_epoch, negative_tolerance: loss parameters, see
        `livt_hf.losses` (each may differ from its default only for a loss that uses it).

    `problem_type` defaults to the loss family: `multi_label_classification` for the sigmoid losses (one binary
    problem per class), `single_label_classification` for the softmax ones. HF's image-classification pipeline
    reads it to score with a sigmoid or a softmax; the loss itself is always the configured one.
    """

    model_type = "livt"

    class_counts: list[int] | None = None
    test_prior: list[float] | None = None
    inference_test_prior: list[float] | None = None
    loss: str = "bal_bce"
    tau: float = 1.0
    drop_path_rate: float = 0.1
    head_init_std: float = 2e-5
    head_bias_init: str = "zero"
    cosine_head: bool = False
    focal_gamma: float = LOSS_DEFAULTS["focal_gamma"]
    cb_beta: float = LOSS_DEFAULTS["cb_beta"]
    ldam_max_margin: float = LOSS_DEFAULTS["ldam_max_margin"]
    ldam_scale: float = LOSS_DEFAULTS["ldam_scale"]
    drw_epoch: int | None = LOSS_DEFAULTS["drw_epoch"]
    negative_tolerance: float = LOSS_DEFAULTS["negative_tolerance"]

    def __post_init__(self, **kwargs):
        if self.problem_type is None:
            sigmoid = self.loss in SIGMOID_LOSSES
            self.problem_type = "multi_label_classification" if sigmoid else "single_label_classification"
        super().__post_init__(**kwargs)

    def loss_params(self) -> dict:
        """The `LOSS_DEFAULTS` parameters as this config sets them."""
        return {name: getattr(self, name) for name in LOSS_DEFAULTS}

    def validate_livt(self):
        check_patch_grid(self.image_size, self.patch_size, "pass an --image_size that is (the encoder's patch size)")
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}; choose one of {LOSSES}.")
        if self.head_bias_init not in HEAD_BIAS_INITS:
            raise ValueError(f"Unknown head_bias_init {self.head_bias_init!r}; choose one of {HEAD_BIAS_INITS}.")
        if not self.head_init_std >= 0:
            raise ValueError(f"head_init_std must be ≥ 0, got {self.head_init_std}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}.")
        if not self.tau >= 0:
            raise ValueError(f"tau must be ≥ 0, got {self.tau}.")
        if self.class_counts is not None and len(self.class_counts) != self.num_labels:
            raise ValueError(f"class_counts has {len(self.class_counts)} entries but the model has {self.num_labels} labels.")
        if self.loss == "ldam" and not self.cosine_head:
            raise ValueError("LDAM's scale multiplies cosine logits: set cosine_head=True (--cosine_head) with loss 'ldam'.")
        if self.class_counts is not None:  # without counts (a bare config) the loss is checked when it is built
            build_loss(self.loss, self.class_counts, self.tau, self.test_prior, **self.loss_params())
        if self.inference_test_prior is not None:
            resolve_test_prior(self.num_labels, self.inference_test_prior)  # raises on a bad distribution


__all__ = ["ENCODER_FIELDS", "ENCODER_GEOMETRY", "HEAD_BIAS_INITS", "LiVTConfig"]
