"""LiVT classifier: a ViT encoder that loads ViTMAE weights as they are, with drop path and MAE's fine-tuning head.

The encoder reuses HF's `ViTEmbeddings` and `ViTLayer`, whose parameter names are those of `ViTMAEModel`, so a
MAE checkpoint's encoder loads key for key. The head follows MAE fine-tuning: mean of the patch tokens, a fresh
LayerNorm (`fc_norm`), a linear layer initialised near zero; the encoder's final norm is dropped.

`save_pretrained` copies this file and, recursively, the files it imports relatively into the checkpoint (remote
code, see `livt_hf/__init__.py`). transformers finds them by matching `from .name import` lines and copies them flat,
so this file and its relative imports may only import sibling modules (`from .losses import`), never a subpackage.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import stochastic_depth
from transformers import PreTrainedModel, ViTMAEForPreTraining
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, ImageClassifierOutput
from transformers.models.vit.modeling_vit import ViTEmbeddings, ViTLayer

from .configuration_livt import ENCODER_FIELDS, ENCODER_GEOMETRY, LiVTConfig
from .losses import (
    build_loss,
    model_prior,
    prior_head_bias,
    prior_shift_bias,
    resolve_test_prior,
    subtract_shift,
)
from .mae import check_geometry, has_position_embeddings, load_mae_config, sincos_like

# ITU-R 601-2 luma, PIL's RGB → 'L' weights; they sum to 1.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class LiVTLayer(ViTLayer):
    """`ViTLayer` with stochastic depth on both residual branches. Adds no parameters: state-dict keys are unchanged."""

    def __init__(self, config: LiVTConfig, drop_path: float = 0.0):
        super().__init__(config)
        self.drop_path = drop_path

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        attn, _ = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self._drop_path(self.dropout(attn))
        mlp = self.mlp(self.layernorm_after(hidden_states))
        return hidden_states + self._drop_path(self.dropout(mlp))

    def _drop_path(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.drop_path, mode="row", training=self.training)


class LiVTPreTrainedModel(PreTrainedModel):
    config_class = LiVTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTEmbeddings", "LiVTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    # the loss is computed from per-batch means: Trainer must divide by the accumulation steps itself
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, ViTEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_token, std=self.config.initializer_range)
        elif module is getattr(self, "head", None):
            c = self.config
            init.trunc_normal_(module.weight, std=c.head_init_std)
            if module.bias is not None and c.head_bias_init == "prior" and c.class_counts is not None:
                init.copy_(module.bias, prior_head_bias(c.loss, c.class_counts, c.tau, c.test_prior).float())
            elif module.bias is not None:
                init.zeros_(module.bias)


class LiVTModel(LiVTPreTrainedModel):
    """The encoder: patch + position embeddings and `num_hidden_layers` ViT layers (no final norm).

    A grayscale model (`num_channels=1`) also takes RGB pixel values and reads their luma: HF's pipelines convert
    every image to RGB and image processors have no grayscale step. The processor normalises all channels with one
    mean and std and the luma weights sum to 1, so the luma of a normalised RGB image is the normalised 'L' image.
    """

    def __init__(self, config: LiVTConfig):
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config)
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList([LiVTLayer(config, rate) for rate in rates])
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutput:
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        if self.config.num_channels == 1 and pixel_values.shape[1] == 3:
            luma = pixel_values.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
            pixel_values = (pixel_values * luma).sum(1, keepdim=True)
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        all_hidden = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if all_hidden is not None:
                all_hidden.append(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=tuple(all_hidden) if all_hidden else None)


class LiVTForImageClassification(LiVTPreTrainedModel):
    """LiVT stage 2. `forward(pixel_values, labels)` takes class ids or soft targets (N, C) and returns raw logits z;
    the training loss adds the config's prior bias to z, so argmax z predicts for the configured test prior."""

    def __init__(self, config: LiVTConfig):
        super().__init__(config)
        self.vit = LiVTModel(config)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.num_labels, bias=not config.cosine_head)
        self.loss_fn = build_loss(config.loss, config.class_counts, config.tau, config.test_prior, **config.loss_params())
        self._prior_shifts: dict[tuple, torch.Tensor] = {}  # `shift_to_test_prior`'s, by config, prior and device
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | None = None,
        test_prior: Sequence[float] | None = None,
        use_inference_test_prior: bool = True,
    ) -> ImageClassifierOutput:
        r"""
        test_prior: the label distribution to predict for (default: `config.inference_test_prior` outside
            training); the returned logits are shifted to it, the loss is computed on the unshifted ones.
        use_inference_test_prior: False leaves out the default shift to `config.inference_test_prior`: the logits
            then answer for the prior the loss was trained for (evaluation during training needs those).
        """
        outputs = self.vit(pixel_values, interpolate_pos_encoding, output_hidden_states)
        pooled = self.fc_norm(outputs.last_hidden_state[:, 1:].mean(dim=1))
        if self.config.cosine_head:
            weight = nn.functional.normalize(self.head.weight, dim=-1)
            logits = nn.functional.linear(nn.functional.normalize(pooled, dim=-1), weight)
        else:
            logits = self.head(pooled)
        loss = self.loss_fn(logits, labels) if labels is not None else None
        if test_prior is None and not self.training and use_inference_test_prior:
            test_prior = self.config.inference_test_prior
        if test_prior is not None:
            logits = self.shift_to_test_prior(logits, test_prior)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def shift_to_test_prior(self, logits: torch.Tensor, test_prior: Sequence[float]) -> torch.Tensor:
        """Logits for another label distribution, from the raw logits of this model (see `livt_hf.prior_shift`). The
        shift is worked out once per prior and device (float64 priors on the CPU, copied over), not every batch."""
        c = self.config
        key = (c.loss, c.class_counts and tuple(c.class_counts), c.tau, c.test_prior and tuple(c.test_prior),
               tuple(float(p) for p in test_prior), logits.device)  # fmt: skip
        if key not in self._prior_shifts:
            trained_for = model_prior(c.loss, c.class_counts, c.tau, c.test_prior)
            bias = prior_shift_bias(c.loss, trained_for, resolve_test_prior(c.num_labels, test_prior))
            self._prior_shifts[key] = bias.to(logits.device, torch.float32)
        return subtract_shift(logits, self._prior_shifts[key])

    @classmethod
    def from_mae_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **config_kwargs
    ) -> LiVTForImageClassification:
        """Start fine-tuning from a ViTMAE checkpoint (folder or Hub id): `from_mae` on its weights, after its config
        was checked (a missing checkpoint, another model type or a conflicting geometry fails before any weights are
        read or downloaded)."""
        mae_config = load_mae_config(
            pretrained_model_name_or_path,
            missing="Run `python run_pretrain_mae.py` first, pass --mae_checkpoint with a ViTMAE folder (or a Hub id "
            "when online), or --from_scratch for a randomly initialised ViTMAE.",
            other="Fine-tuning starts from the output of run_pretrain_mae.py (or another ViTMAEForPreTraining "
            "checkpoint); to reload a fine-tuned LiVT model use LiVTForImageClassification.from_pretrained.",
        )
        check_mae_geometry(pretrained_model_name_or_path, mae_config, config_kwargs)
        mae = ViTMAEForPreTraining.from_pretrained(pretrained_model_name_or_path)
        return cls.from_mae(mae, str(pretrained_model_name_or_path), **config_kwargs)

    @classmethod
    def from_mae(cls, mae: ViTMAEForPreTraining, source: str, **config_kwargs) -> LiVTForImageClassification:
        """A LiVT classifier with the encoder of `mae` (named `source` in messages): a pretrained one, or a new one
        (`livt_hf.mae.new_vitmae`, the `--from_scratch` start).

        Encoder geometry comes from `mae`; `config_kwargs` set the rest (`num_labels`/`id2label`, `class_counts`,
        `loss`, `tau`, `drop_path_rate`, `image_size` …) and may repeat a geometry field only with the ViTMAE's value.
        A different `image_size` resizes the position embeddings once, here. Every encoder tensor must load: anything
        missing or left over (other than MAE's decoder and final norm) is an error.
        """
        check_mae_geometry(source, mae.config, config_kwargs)
        config = LiVTConfig(**{k: getattr(mae.config, k) for k in ENCODER_FIELDS} | config_kwargs)
        model = cls(config)
        state = {k: v for k, v in mae.vit.state_dict().items() if not k.startswith("layernorm.")}
        positions = state["embeddings.position_embeddings"]
        if not has_position_embeddings(positions):  # as when continuing MGP (livt_hf.mae.mae_from_checkpoint)
            warnings.warn(
                f"The ViTMAE checkpoint {source} has all-zero position embeddings: it was "
                "pretrained without positions (transformers 5.x leaves a new ViTMAE's sin-cos embeddings at zero; "
                "livt_hf.mae.new_vitmae restores them). Fine-tuning starts from MAE's sin-cos table instead; pretrain "
                "it again with this version of run_pretrain_mae.py for a useful start.",
                stacklevel=2,
            )
            state["embeddings.position_embeddings"] = sincos_like(positions)
        state["embeddings.position_embeddings"] = resize_position_embeddings(
            state["embeddings.position_embeddings"], config.image_size // config.patch_size
        )
        missing, unexpected = model.vit.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"The ViTMAE encoder in {source} does not match LiVT's: missing "
                f"{missing}, unexpected {unexpected}. Was it saved by another version of ViTMAE?"
            )
        return model


def check_mae_geometry(source: str | os.PathLike, mae_config, config_kwargs: dict) -> None:
    """A geometry setting in `config_kwargs` may only repeat the ViTMAE's own value."""
    check_geometry(source, mae_config, config_kwargs, ENCODER_GEOMETRY, fix="drop those settings or pretrain a matching model")


def resize_position_embeddings(position_embeddings: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g², D) → (1, 1 + grid², D): bicubic resize of the patch part, the [CLS] slot kept as is."""
    cls_pos, patch_pos = position_embeddings[:, :1], position_embeddings[:, 1:]
    old = math.isqrt(patch_pos.shape[1])
    if old * old != patch_pos.shape[1]:
        raise ValueError(f"Position embeddings for {patch_pos.shape[1]} patches are not a square grid.")
    if old == grid:
        return position_embeddings
    dim = patch_pos.shape[-1]
    patch_pos = patch_pos.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    patch_pos = nn.functional.interpolate(patch_pos, size=(grid, grid), mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(position_embeddings.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


__all__ = ["LiVTForImageClassification", "LiVTModel", "LiVTPreTrainedModel", "resize_position_embeddings"]
