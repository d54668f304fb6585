"""ViTMAE checkpoints: a new ViTMAE initialised as MAE is (stage 1 starts from it), or one read from a checkpoint
(folder or Hub id) with its geometry checked, to continue MGP from or to fine-tune.

Imported by `modeling_livt` and so saved with every fine-tuned model's code: it imports only torch and transformers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import torch
from transformers import AutoConfig, PretrainedConfig, ViTMAEConfig, ViTMAEForPreTraining

logger = logging.getLogger(__name__)

# a new ViTMAE's geometry by default: a small ViT for 28-px Fashion-MNIST (the CPU demo, docs/DEMO_RECIPE.md)
NEW_MAE_GEOMETRY = dict(
    image_size=28, patch_size=7, hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
    decoder_hidden_size=96, decoder_num_hidden_layers=2, decoder_num_attention_heads=3, decoder_intermediate_size=384,
)  # fmt: skip
# the fields that shape a ViTMAE's weights: a checkpoint's decide them (image_size aside: position tables are fixed)
MAE_GEOMETRY = (*(name for name in NEW_MAE_GEOMETRY if name != "image_size"), "num_channels")
OBJECTIVE = ("mask_ratio", "norm_pix_loss")
POSITION_TABLES = {"vit.embeddings.position_embeddings", "decoder.decoder_pos_embed"}


def check_patch_grid(image_size: int, patch_size: int, fix: str) -> None:
    """A ViT's patch grid would silently drop the pixels past the last whole patch: such a size is refused."""
    if image_size % patch_size:
        raise ValueError(f"--image_size {image_size} is not a multiple of the patch_size {patch_size}: {fix}.")


def new_vitmae(config: ViTMAEConfig) -> ViTMAEForPreTraining:
    """`ViTMAEForPreTraining(config)` with MAE's initialisation restored.

    In transformers 5.x (seen in 5.24) a new ViTMAE comes out with its fixed sin-cos position embeddings (encoder and
    decoder), its [CLS] token and its mask token all zero, and the patch projection not Xavier-initialised:
    `ViTMAEEmbeddings.initialize_weights` returns at once when `post_init` has already marked the projection as
    initialised, and `ViTMAEPreTrainedModel._init_weights` zeros the decoder's. With no position embeddings neither
    the encoder nor the decoder knows where a patch sits, so MGP can only learn a bag of patches: on
    Fashion-MNIST-LT its norm-pix loss stayed at 0.79, above the 0.67 of predicting each position's mean patch
    (docs/DEMO_RECIPE.md). This re-runs HF's own initialisers, which set what MAE sets.
    """
    model = ViTMAEForPreTraining(config)
    embeddings = model.vit.embeddings
    embeddings.patch_embeddings.projection._is_hf_initialized = False
    embeddings.initialize_weights()
    model.decoder.initialize_weights(embeddings.patch_embeddings.num_patches)
    if not (has_position_embeddings(embeddings.position_embeddings)
            and has_position_embeddings(model.decoder.decoder_pos_embed)):  # fmt: skip
        raise RuntimeError(
            "ViTMAE's sin-cos position embeddings are still zero after initialisation: this transformers version "
            "initialises ViTMAE in a way livt_hf.mae.new_vitmae does not know. Please report it with your version."
        )
    return model


def new_vitmae_config(args, num_channels: int) -> ViTMAEConfig:
    """The config of a new ViTMAE: the geometry and the MGP objective of `args` (a `PretrainModelArguments`)."""
    return ViTMAEConfig(**{name: getattr(args, name) for name in (*NEW_MAE_GEOMETRY, *OBJECTIVE)},
                        num_channels=num_channels)  # fmt: skip


def scratch_vitmae_config(image_size: int | None, num_channels: int) -> ViTMAEConfig:
    """The ViTMAE that `run_finetune_balanced.py --from_scratch` starts from: `NEW_MAE_GEOMETRY`, at `image_size` (a
    multiple of its patch size: `LiVTConfig` checks it for every fine-tuning start)."""
    geometry = NEW_MAE_GEOMETRY | ({"image_size": image_size} if image_size else {})
    return ViTMAEConfig(**geometry, num_channels=num_channels)


def has_position_embeddings(position_embeddings: torch.Tensor) -> bool:
    """False for the all-zero embeddings of an affected ViTMAE (the [CLS] slot is zero in MAE anyway)."""
    return bool(position_embeddings[:, 1:].abs().sum() > 0)


def load_mae_config(name_or_path: str | os.PathLike, missing: str, other: str) -> PretrainedConfig:
    """The config of the ViTMAE checkpoint at `name_or_path` (folder or Hub id); `missing` and `other` say what to do
    when there is no checkpoint there, or one of another model type."""
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        raise FileNotFoundError(f"No ViTMAE checkpoint at {name_or_path} ({err}). {missing}") from err
    if config.model_type != "vit_mae":
        raise ValueError(f"{name_or_path} is a {config.model_type!r} checkpoint, not a ViTMAE one. {other}")
    return config


def check_geometry(
    name_or_path: str | os.PathLike, config: PretrainedConfig, asked: Mapping, fields: Sequence[str], fix: str
) -> None:
    """Refuse the `fields` of `asked` (settings; None: not set) that differ from the checkpoint's `config`, naming both
    values: the checkpoint's weights have its shapes. `fix` says what to do instead."""
    mismatched = {
        k: (asked[k], getattr(config, k)) for k in fields if asked.get(k) is not None and asked[k] != getattr(config, k)
    }
    if mismatched:
        detail = ", ".join(f"{k}: asked {a}, checkpoint has {b}" for k, (a, b) in mismatched.items())
        raise ValueError(
            f"The checkpoint {name_or_path} has another geometry ({detail}). Its weights cannot be loaded into that "
            f"shape: {fix}."
        )


def sincos_position_embeddings(grid: int, dim: int) -> torch.Tensor:
    """MAE's fixed position embeddings of a `grid` × `grid` patch grid: (1, 1 + grid², dim), the [CLS] slot zero.

    Channels [0, dim/2) encode a patch's column and [dim/2, dim) its row, each as the sines then the cosines of dim/4
    frequencies 10000^(−k / (dim/4)): the layout of MAE's code, and so of the ViTMAE checkpoints on the Hub.
    """
    if dim % 4:
        raise ValueError(f"MAE's sin-cos position embeddings need a width divisible by 4, got {dim}.")
    quarter = dim // 4
    frequencies = 10000.0 ** -(torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")  # fmt: skip
    angles = [position.flatten()[:, None] * frequencies for position in (cols, rows)]
    table = torch.cat([wave for angle in angles for wave in (angle.sin(), angle.cos())], dim=1)
    return torch.cat([table.new_zeros(1, dim), table]).unsqueeze(0).float()


def sincos_like(table: torch.Tensor) -> torch.Tensor:
    """MAE's sin-cos table in the shape and dtype of a (1, 1 + grid², dim) position-embedding `table`."""
    return sincos_position_embeddings(math.isqrt(table.shape[1] - 1), table.shape[-1]).to(table.dtype)


def set_sincos_position_embeddings(model: ViTMAEForPreTraining) -> None:
    """Write MAE's sin-cos tables, for the model's own patch grid, into its encoder and decoder."""
    with torch.no_grad():
        for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
            table.copy_(sincos_like(table))


def mae_from_checkpoint(args) -> ViTMAEForPreTraining:
    """The ViTMAE checkpoint `args.model_name_or_path`, to continue MGP from, with this run's objective (`args`'
    mask_ratio and norm_pix_loss); `args`' geometry fields are then filled in with the checkpoint's, so that the run
    records what it trained.

    A geometry flag that differs from the checkpoint's is an error. Another `args.image_size` keeps every weight and
    recomputes MAE's fixed sin-cos position tables for the new patch grid; so does a checkpoint whose tables are all
    zero (a ViTMAE that transformers 5.x built without `new_vitmae`, as run_pretrain_mae.py did before), with a
    warning.
    """
    name = args.model_name_or_path
    config = load_mae_config(
        name,
        missing="Pass --model_name_or_path a ViTMAE folder (or a Hub id when online), or leave it out to pretrain a "
        "new model.",
        other="MGP continues a ViTMAEForPreTraining checkpoint (such as facebook/vit-mae-base or run_pretrain_mae.py's "
        "output); leave out --model_name_or_path to pretrain a new model.",
    )
    check_geometry(name, config, {field: getattr(args, field) for field in MAE_GEOMETRY}, MAE_GEOMETRY,
                   fix="drop those flags (the checkpoint's geometry is used), or leave out --model_name_or_path to "
                   "pretrain a new model of that shape")  # fmt: skip
    image_size = args.image_size or config.image_size
    check_patch_grid(image_size, config.patch_size, "pass an --image_size that is (the checkpoint's patch size)")
    model, loading = ViTMAEForPreTraining.from_pretrained(
        name, image_size=image_size, **{field: getattr(args, field) for field in OBJECTIVE},
        ignore_mismatched_sizes=True, output_loading_info=True,  # the position tables, when the grid changes
    )  # fmt: skip
    resized = {key for key, *_ in loading["mismatched_keys"]}
    if loading["missing_keys"] or loading["unexpected_keys"] or resized - POSITION_TABLES:
        raise ValueError(
            f"The ViTMAE checkpoint {name} does not load into ViTMAEForPreTraining: missing {loading['missing_keys']}, "
            f"unexpected {loading['unexpected_keys']}, other shapes {resized - POSITION_TABLES}."
        )
    blank = not (has_position_embeddings(model.vit.embeddings.position_embeddings)
                 and has_position_embeddings(model.decoder.decoder_pos_embed))  # fmt: skip
    if resized:
        logger.info("--image_size %d: the checkpoint's position embeddings (%d px) are recomputed for the %d × %d "
                    "patch grid (MAE's fixed sin-cos); every other weight is the checkpoint's.", image_size,
                    config.image_size, image_size // config.patch_size, image_size // config.patch_size)  # fmt: skip
    elif blank:
        logger.warning("The position embeddings of %s are all zero (it was pretrained without positions: transformers "
                       "5.x leaves a new ViTMAE's at zero): MAE's sin-cos tables are written in.", name)  # fmt: skip
    if resized or blank:
        set_sincos_position_embeddings(model)
    for field in (*MAE_GEOMETRY, "image_size"):
        setattr(args, field, getattr(model.config, field))
    logger.info(
        "Continuing MGP from %s: %d px, patch %d, %d channel(s), width %d, %d layers; mask_ratio %g, norm_pix_loss %s "
        "(the checkpoint's config: %g, %s).", name, image_size, config.patch_size, config.num_channels,
        config.hidden_size, config.num_hidden_layers, args.mask_ratio, args.norm_pix_loss, config.mask_ratio,
        config.norm_pix_loss,
    )  # fmt: skip
    return model


__all__ = [
    "MAE_GEOMETRY",
    "NEW_MAE_GEOMETRY",
    "check_geometry",
    "has_position_embeddings",
    "load_mae_config",
    "mae_from_checkpoint",
    "new_vitmae",
    "new_vitmae_config",
    "set_sincos_position_embeddings",
    "sincos_like",
    "sincos_position_embeddings",
]
