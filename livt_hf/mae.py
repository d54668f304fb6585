"""A randomly initialised ViTMAE, initialised as MAE is (stage 1 starts from it)."""

from __future__ import annotations

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining


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


def has_position_embeddings(position_embeddings: torch.Tensor) -> bool:
    """False for the all-zero embeddings of an affected ViTMAE (the [CLS] slot is zero in MAE anyway)."""
    return bool(position_embeddings[:, 1:].abs().sum() > 0)
