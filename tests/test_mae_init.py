"""A new ViTMAE must carry MAE's sin-cos position embeddings: transformers 5.x leaves them at zero (livt_hf.mae)."""

import warnings

import numpy as np
import pytest
import torch
from conftest import TINY_MAE
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from livt_hf import LiVTForImageClassification
from livt_hf.mae import new_vitmae


def mae_sincos(grid: int, dim: int) -> np.ndarray:
    """MAE's 2-D sin-cos table, written out from its definition: for the patch in row r, column c, the first half
    encodes c and the second r (MAE's meshgrid puts the width coordinate first), each half as [sin(p·ω), cos(p·ω)]
    with ω_i = 10000^(−i / (dim/4)); the [CLS] slot is zero."""
    omega = 10000.0 ** (-np.arange(dim // 4) / (dim // 4))
    rows = [np.zeros(dim)]
    for r in range(grid):
        for c in range(grid):
            rows.append(np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)]))
    return np.stack(rows)[None]


def test_position_embeddings_are_mae_sincos_in_encoder_and_decoder():
    config = ViTMAEConfig(**TINY_MAE)
    model = new_vitmae(config)
    grid = config.image_size // config.patch_size
    encoder = model.vit.embeddings.position_embeddings.detach().numpy()
    decoder = model.decoder.decoder_pos_embed.detach().numpy()
    np.testing.assert_allclose(encoder, mae_sincos(grid, config.hidden_size), atol=1e-6)
    np.testing.assert_allclose(decoder, mae_sincos(grid, config.decoder_hidden_size), atol=1e-6)
    assert not model.vit.embeddings.position_embeddings.requires_grad  # fixed, as in MAE


def test_tokens_and_patch_projection_are_initialised_as_in_mae():
    torch.manual_seed(0)
    model = new_vitmae(ViTMAEConfig(**TINY_MAE | {"hidden_size": 64, "patch_size": 7}))
    # MAE: normal(std 0.02) [CLS] and mask tokens; the projection Xavier-uniform as a (64, 49) linear layer
    assert model.vit.embeddings.cls_token.std().item() == pytest.approx(0.02, rel=0.35)
    assert model.decoder.mask_token.std().item() == pytest.approx(0.02, rel=0.35)
    weight = model.vit.embeddings.patch_embeddings.projection.weight
    bound = (6 / (64 + 49)) ** 0.5
    assert weight.abs().max().item() <= bound
    assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)


def test_finetuning_from_a_checkpoint_without_positions_warns_and_starts_from_sincos(tmp_path):
    config = ViTMAEConfig(**TINY_MAE)
    ViTMAEForPreTraining(config).save_pretrained(tmp_path)  # the zeros transformers leaves
    with pytest.warns(UserWarning, match="all-zero position embeddings"):
        model = LiVTForImageClassification.from_mae_pretrained(tmp_path, num_labels=3, loss="ce")
    grid = config.image_size // config.patch_size
    np.testing.assert_allclose(model.vit.embeddings.position_embeddings.detach().numpy(),
                               mae_sincos(grid, config.hidden_size), atol=1e-6)  # fmt: skip


def test_a_good_checkpoint_loads_without_that_warning_and_keeps_its_positions(tiny_mae_dir):
    mae = ViTMAEForPreTraining.from_pretrained(tiny_mae_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, num_labels=3, loss="ce")
    assert not [w for w in caught if "position embeddings" in str(w.message)]
    assert torch.equal(model.vit.embeddings.position_embeddings, mae.vit.embeddings.position_embeddings)
