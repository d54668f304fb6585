"""LiVTForImageClassification: ViTMAE weight loading, resolution change, drop path, save/load, Auto classes."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageClassification, ViTConfig, ViTForImageClassification
from transformers import ViTMAEForPreTraining

import livt_hf  # noqa: F401  (registers the Auto classes)
from livt_hf import LiVTConfig, LiVTForImageClassification
from livt_hf.modeling_livt import resize_position_embeddings

COUNTS = [40, 20, 10, 5]
HEAD = dict(num_labels=4, class_counts=COUNTS)


def test_mae_encoder_loads_tensor_for_tensor(tiny_mae_dir):
    mae = ViTMAEForPreTraining.from_pretrained(tiny_mae_dir)
    model = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, **HEAD)
    mae_state, ours = mae.vit.state_dict(), model.vit.state_dict()
    assert set(ours) == {k for k in mae_state if not k.startswith("layernorm.")}
    for name, tensor in ours.items():
        assert torch.equal(tensor, mae_state[name]), name
    assert model.config.hidden_size == mae.config.hidden_size and model.config.class_counts == COUNTS
    assert model.head.weight.std() < 1e-4 and torch.all(model.head.bias == 0)  # MAE's near-zero head


def test_geometry_mismatch_is_named(tiny_mae_dir):
    with pytest.raises(ValueError, match=r"hidden_size: asked 64, checkpoint has 32.*patch_size: asked 4"):
        LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, hidden_size=64, patch_size=4, **HEAD)


def test_non_mae_checkpoint_is_refused(tmp_path):
    ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, image_size=28, patch_size=7)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'vit' checkpoint, not a ViTMAE one"):
        LiVTForImageClassification.from_mae_pretrained(tmp_path, **HEAD)


def test_missing_checkpoint_says_to_pretrain_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_pretrain_mae.py"):
        LiVTForImageClassification.from_mae_pretrained(tmp_path / "nothing", **HEAD)


def test_other_resolution_resizes_position_embeddings_once(tiny_mae_dir):
    model = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, image_size=56, **HEAD)
    assert model.config.image_size == 56
    assert model.vit.embeddings.position_embeddings.shape == (1, 1 + 8 * 8, 32)
    assert model(torch.randn(2, 1, 56, 56)).logits.shape == (2, 4)
    mae = ViTMAEForPreTraining.from_pretrained(tiny_mae_dir)
    assert torch.equal(model.vit.embeddings.position_embeddings[:, 0], mae.vit.embeddings.position_embeddings[:, 0])


def test_resize_position_embeddings():
    pos = torch.randn(1, 17, 8)
    assert torch.equal(resize_position_embeddings(pos, 4), pos)
    # a constant field stays constant; a field linear along the rows stays monotone along the rows
    const = torch.ones(1, 17, 8)
    assert torch.allclose(resize_position_embeddings(const, 7), torch.ones(1, 50, 8))
    rows = torch.arange(4.0).repeat_interleave(4).reshape(1, 16, 1)
    up = resize_position_embeddings(torch.cat([torch.zeros(1, 1, 1), rows], 1), 8)[0, 1:, 0].reshape(8, 8)
    assert torch.all(up[1:, 0] >= up[:-1, 0]) and torch.allclose(up[:, 0], up[:, 5])


def test_drop_path_is_stochastic_in_training_only():
    config = LiVTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        image_size=28, patch_size=7, num_channels=1, drop_path_rate=0.3, **HEAD)
    model = LiVTForImageClassification(config)
    assert [layer.drop_path for layer in model.vit.layers] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    x = torch.randn(8, 1, 28, 28)
    model.train()
    torch.manual_seed(0)
    a = model(x).logits
    b = model(x).logits
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)


def test_save_and_reload_give_identical_logits(tiny_mae_dir, tmp_path):
    model = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, loss="bal_bce", tau=1.05, **HEAD).eval()
    model.save_pretrained(tmp_path)
    for loader in (LiVTForImageClassification, AutoModelForImageClassification):
        again = loader.from_pretrained(tmp_path).eval()
        x = torch.randn(3, 1, 28, 28)
        assert torch.equal(model(x).logits, again(x).logits)
        assert again.config.class_counts == COUNTS and again.config.tau == 1.05
        assert torch.allclose(again.loss_fn.bias, model.loss_fn.bias)  # the prior travels with the config
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LiVTConfig)


def test_forward_with_labels_uses_the_configured_loss(tiny_mae_dir):
    from test_losses import hand_bal_bce

    model = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, tau=0.7, **HEAD).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    out = model(x, labels=y)
    onehot = torch.nn.functional.one_hot(y, 4).float()
    assert out.loss.item() == pytest.approx(hand_bal_bce(out.logits, onehot, COUNTS, 0.7, [0.25] * 4), rel=1e-6)
    soft = torch.tensor([[0.6, 0.4, 0.0, 0.0], [0.0, 0.3, 0.7, 0.0], [0.25] * 4, [0.0, 0.0, 0.1, 0.9]])
    assert model(x, labels=soft).loss.item() == pytest.approx(hand_bal_bce(out.logits, soft, COUNTS, 0.7, [0.25] * 4),
                                                              rel=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(loss="nope"), "Unknown loss"), (dict(class_counts=[1, 2, 3]), "class_counts has 3 entries"),
     (dict(drop_path_rate=1.0), "drop_path_rate"), (dict(class_counts=[4, 0, 1, 1]), "no training images"),
     (dict(image_size=30, patch_size=7), "--image_size 30 is not a multiple of the patch_size 7: pass an --image_size that is")],
)
def test_config_validation(kwargs, message):
    with pytest.raises(Exception, match=message):
        LiVTConfig(**(HEAD | kwargs))


def test_cosine_head_gives_cosine_logits_and_ldam_requires_it():
    base = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=28,
                patch_size=7, num_channels=1, **HEAD)  # fmt: skip
    model = LiVTForImageClassification(LiVTConfig(cosine_head=True, loss="ldam", **base)).eval()
    logits = model(torch.randn(5, 1, 28, 28)).logits
    assert model.head.bias is None and logits.abs().max() <= 1 + 1e-6
    with pytest.raises(Exception, match="set cosine_head=True"):
        LiVTConfig(loss="ldam", **base)
    with pytest.raises(Exception, match="focal_gamma = 3.0 has no effect"):
        LiVTConfig(loss="bal_bce", focal_gamma=3.0, **base)


@pytest.mark.parametrize("loss", ["bal_bce", "ce"])
def test_head_bias_init_takes_effect(tiny_mae_dir, loss):
    """--head_bias_init prior: the head bias is the loss's prior start (π = 40/75 … for the 4 counts, by hand);
    'zero' keeps MAE's zero bias; --head_init_std sets the weights' spread."""
    prior = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, loss=loss, head_bias_init="prior", **HEAD)
    pi = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    expected = torch.full((4,), -torch.log(torch.tensor(3.0)).item()) if loss == "bal_bce" else pi.log()
    assert torch.allclose(prior.head.bias.double(), expected.double(), atol=1e-6)
    zero = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, loss=loss, head_bias_init="zero",
                                                          head_init_std=0.02, **HEAD)  # fmt: skip
    assert torch.all(zero.head.bias == 0) and 0.01 < zero.head.weight.std() < 0.03
    with pytest.raises(Exception, match="Unknown head_bias_init 'mean'"):  # the strict config wraps the ValueError
        LiVTConfig(head_bias_init="mean", **HEAD)


def test_gradient_checkpointing_recomputes_every_layer_and_keeps_the_gradients():
    """`--gradient_checkpointing`: each layer runs again in the backward pass, drop path drawing the same rows (the
    checkpoint restores the RNG), so the gradients are those of the plain run."""
    config = LiVTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                        image_size=28, patch_size=7, num_channels=1, drop_path_rate=0.3, **HEAD)  # fmt: skip
    model = LiVTForImageClassification(config).train()
    layer_runs = []  # seen from each layer's attention: the layer's own forward stays what transformers wraps
    for layer in model.vit.layers:
        layer.attention.register_forward_hook(lambda module, args, output: layer_runs.append(module))
    x, y = torch.randn(8, 1, 28, 28), torch.tensor([0, 1, 2, 3] * 2)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(0)
        model(x, labels=y).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert len(layer_runs) == 3
    # what Trainer's --gradient_checkpointing calls (older transformers: gradient_checkpointing_enable)
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    layer_runs.clear()
    checkpointed = gradients()
    assert len(layer_runs) == 6  # three forwards, three recomputed in backward
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)
