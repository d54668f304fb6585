"""Mixing in the training step: mixup / cutmix, Remix, UniMix, label smoothing, and their options, each checked
against hand computations; and that BalancedTrainer mixes in training only."""

import pytest
import torch
from datasets import Dataset

from livt_hf import BalancedTrainer
from livt_hf.data.mixing import (
    Mixer,
    cutmix_images,
    mix_targets,
    mixup_images,
    remix_label_weight,
    smooth_targets,
)

COUNTS = [300, 100, 30, 10]


def batch(n=8, size=8):
    """Image k is the constant k + 1, so every output pixel tells which images it came from."""
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, size, size).clone()
    return {"pixel_values": x, "labels": torch.tensor([0, 0, 1, 2, 3, 0, 1, 3])[:n]}


def test_mixup_and_targets_by_hand():
    x, partner = torch.full((2, 1, 2, 2), 1.0), torch.full((2, 1, 2, 2), 5.0)
    assert torch.allclose(mixup_images(x, partner, 0.25), torch.full((2, 1, 2, 2), 4.0))
    per_image = mixup_images(x, partner, torch.tensor([1.0, 0.5]))
    assert per_image[0].unique().item() == 1.0 and per_image[1].unique().item() == 3.0
    targets = mix_targets(torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([0.25, 0.6]), num_classes=3)
    assert torch.allclose(targets, torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]))


def test_cutmix_lambda_is_the_area_kept():
    torch.manual_seed(0)
    x, partner = torch.zeros(3, 1, 10, 10), torch.ones(3, 1, 10, 10)
    for lam in (0.1, 0.5, 0.9):
        mixed, kept = cutmix_images(x, partner, lam)
        assert kept == pytest.approx(1 - mixed[0].mean().item())  # corrected to the box actually pasted
        rows, cols = torch.nonzero(mixed[0, 0], as_tuple=True)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)  # one rectangle


def test_remix_gives_the_label_to_the_minority_class():
    """Chou et al. 2020 with κ = 3, τ = 0.5."""
    lam = torch.tensor([0.3, 0.7, 0.3, 0.7, 0.3])
    n_i = torch.tensor([300.0, 300.0, 10.0, 10.0, 100.0])
    n_j = torch.tensor([10.0, 10.0, 300.0, 300.0, 90.0])
    weight = remix_label_weight(lam, n_i, n_j, kappa=3.0, tau=0.5)
    # head i mostly replaced by tail j → all to j; head i dominant → λ; tail i dominant → all to i; similar counts → λ
    assert torch.allclose(weight, torch.tensor([0.0, 0.7, 0.3, 1.0, 0.3]))


def test_mixup_cutmix_targets_match_the_pixels():
    torch.manual_seed(0)
    for switch_prob, expect_cutmix in ((0.0, False), (1.0, True)):
        mixer = Mixer("mixup_cutmix", COUNTS, mix_switch_prob=switch_prob)
        for _ in range(5):
            inputs = batch()
            out = mixer(dict(inputs), epoch=0)
            x, own, partner = out["pixel_values"], inputs["pixel_values"], inputs["pixel_values"].flip(0)
            lam = out["labels"][0, 0].item() if inputs["labels"][0] != inputs["labels"][-1] else None
            from_own = (x == own).float().mean().item()
            is_box = bool(((x == own) | (x == partner)).all())
            assert is_box == expect_cutmix
            if expect_cutmix and lam is not None:
                assert from_own == pytest.approx(lam)
            if not expect_cutmix:
                lam_pixels = ((x - partner) / (own - partner))[0].mean().item()  # image 0 = λ·1 + (1 − λ)·8
                assert out["labels"][0, 0].item() == pytest.approx(lam_pixels, abs=1e-5)
            assert torch.allclose(out["labels"].sum(1), torch.ones(8))


def test_alphas_take_effect():
    """α → 0 puts λ at 0 or 1; mixup_alpha = 0 leaves cutmix alone; cutmix_alpha = 0 leaves mixup alone."""
    torch.manual_seed(0)
    mixer = Mixer("mixup_cutmix", COUNTS, mixup_alpha=0.01, cutmix_alpha=0.0)
    lams = torch.tensor([mixer(batch(), 0)["labels"][1, 0].item() for _ in range(100)])  # image 1 (class 0) + 6 (1)
    assert (torch.minimum(lams, 1 - lams) < 0.05).float().mean() > 0.9  # Beta(0.01, 0.01): 97 %
    mixer = Mixer("mixup_cutmix", COUNTS, mixup_alpha=4.0, cutmix_alpha=0.0)
    lams = torch.tensor([mixer(batch(), 0)["labels"][1, 0].item() for _ in range(200)])
    assert lams.std() < 0.2 and abs(lams.mean() - 0.5) < 0.05  # Beta(4, 4): std 0.17
    cutmix_only = Mixer("mixup_cutmix", COUNTS, mixup_alpha=0.0, mix_switch_prob=0.0)
    x = cutmix_only(batch(), 0)["pixel_values"]
    assert bool(((x == batch()["pixel_values"]) | (x == batch()["pixel_values"].flip(0))).all())


def test_remix_mixer_uses_class_counts():
    torch.manual_seed(0)
    mixer = Mixer("remix", COUNTS, mix_switch_prob=0.0)
    inputs = {"pixel_values": torch.rand(2, 1, 4, 4), "labels": torch.tensor([0, 3])}  # 300 vs 10 images
    moved = 0
    for _ in range(20):
        targets = mixer(dict(inputs), 0)["labels"]
        head, tail = targets[0, 0].item(), targets[1, 3].item()  # each row's weight on its own label
        if head == 0.0:  # the head image holds < τ of the mix: its label goes wholly to the tail partner
            assert tail < 0.5 and tail == pytest.approx(1 - targets[1, 0].item())
            moved += 1
        else:  # the tail image holds > 1 − τ: the tail keeps the whole label
            assert head >= 0.5 and tail == 1.0
    assert 0 < moved < 20


def test_unimix_mixes_with_sampled_partners_and_favours_the_rarer_class():
    torch.manual_seed(0)
    mixer = Mixer("unimix", COUNTS, unimix_alpha=0.01)  # ξ* ≈ π_j / (π_i + π_j)
    n = 64
    inputs = {"pixel_values": torch.zeros(n, 1, 4, 4), "labels": torch.zeros(n, dtype=torch.long),
              "partner_pixel_values": torch.ones(n, 1, 4, 4), "partner_labels": torch.full((n,), 3)}  # fmt: skip
    out = mixer(inputs, 0)
    assert "partner_pixel_values" not in out and "partner_labels" not in out
    weight_head = out["labels"][:, 0]
    assert torch.allclose(out["pixel_values"].mean((1, 2, 3)), 1 - weight_head)  # ξ on the head image, 1 − ξ on the tail
    assert (weight_head - 10 / 310).abs().median() < 0.01
    with pytest.raises(ValueError, match="partner images"):
        mixer(batch(), 0)


def test_mixing_stops_at_mix_until_epoch():
    mixer = Mixer("mixup_cutmix", COUNTS, mix_until_epoch=3)
    assert mixer(batch(), epoch=2.99)["labels"].ndim == 2
    stopped = mixer(batch(), epoch=3.0)
    assert stopped["labels"].ndim == 1 and torch.equal(stopped["pixel_values"], batch()["pixel_values"])
    assert Mixer("none", COUNTS)(batch(), 0)["labels"].ndim == 1


def test_bad_or_unused_mixing_options_are_errors():
    with pytest.raises(ValueError, match="choose one of"):
        Mixer("cutout", COUNTS)
    with pytest.raises(ValueError, match="unimix_tau = 0.0 has no effect with --mixing mixup_cutmix"):
        Mixer("mixup_cutmix", COUNTS, unimix_tau=0.0)
    with pytest.raises(ValueError, match="mixup_alpha = 0.2 has no effect with --mixing none"):
        Mixer("none", COUNTS, mixup_alpha=0.2)
    with pytest.raises(ValueError, match="use --mixing none"):
        Mixer("mixup_cutmix", COUNTS, mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(ValueError, match="≤ 1"):
        Mixer("unimix", COUNTS, unimix_tau=2.0)
    with pytest.raises(ValueError, match="mix_switch_prob"):
        Mixer("remix", COUNTS, mix_switch_prob=1.5)


def test_smoothing_commutes_with_mixing():
    ids = torch.tensor([0, 2])
    assert torch.allclose(smooth_targets(ids, 4, 0.1), torch.tensor([[0.925, 0.025, 0.025, 0.025],
                                                                     [0.025, 0.025, 0.925, 0.025]]))  # fmt: skip
    soft = mix_targets(ids, torch.tensor([1, 1]), torch.tensor([0.3, 0.3]), 4)
    assert torch.allclose(smooth_targets(soft, 4, 0.2), 0.8 * soft + 0.05)


class Capture:
    """A loss that records the targets it was given."""

    def __init__(self):
        self.targets = []

    def __call__(self, logits, targets):
        self.targets.append(targets)
        return logits.sum() * 0


def test_trainer_mixes_and_smooths_in_training_only(tmp_path):
    from test_trainer import parse, tiny_model

    from livt_hf.arguments import FinetuningArguments

    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--load_best_model_at_end", "0", "--label_smoothing_factor", "0.1")  # fmt: skip
    capture = Capture()
    trainer = BalancedTrainer(model=tiny_model(), args=args, loss_fn=capture,
                              mixer=Mixer("mixup_cutmix", [40, 20, 10, 5], mix_switch_prob=0.0))  # fmt: skip
    inputs = {"pixel_values": torch.randn(4, 1, 28, 28), "labels": torch.tensor([0, 1, 2, 3])}
    trainer.model.train()
    trainer.compute_loss(trainer.model, dict(inputs))
    targets = capture.targets[-1]
    assert targets.shape == (4, 4) and torch.allclose(targets.sum(1), torch.ones(4))
    # smoothed, (1 − ε)·t + ε / C, from mixup's t = λ·e_y + (1 − λ)·e_partner, the partner the batch reversed
    mixed = (targets - 0.1 / 4) / 0.9
    lam = mixed[0, 0].item()
    assert 0 < lam < 1
    eye = torch.eye(4)
    assert torch.allclose(mixed, lam * eye + (1 - lam) * eye.flip(0), atol=1e-6)
    trainer.model.eval()
    trainer.compute_loss(trainer.model, dict(inputs))
    assert torch.equal(capture.targets[-1], inputs["labels"])  # evaluation: class ids, neither mixed nor smoothed


def test_trainer_refuses_two_sampler_choices(tmp_path):
    from test_trainer import parse, tiny_model

    from livt_hf.arguments import FinetuningArguments
    from livt_hf.data import ClassAwareSampler

    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--load_best_model_at_end", "0", "--train_sampling_strategy", "group_by_length")  # fmt: skip
    data = Dataset.from_dict({"labels": [0, 1]})
    with pytest.raises(ValueError, match="drop --train_sampling_strategy"):
        BalancedTrainer(model=tiny_model(), args=args, train_dataset=data,
                        train_sampler=ClassAwareSampler([0, 1]))  # fmt: skip


@pytest.fixture(scope="module")
def meta_dirichlet():
    """torch has no meta kernel for the Beta distribution's sampler (`_sample_dirichlet`): a shape-only stand-in."""
    library = torch.library.Library("aten", "IMPL")
    library.impl("_sample_dirichlet", lambda concentration, generator=None: torch.empty_like(concentration), "Meta")
    yield
    del library  # unregisters the kernel


@pytest.mark.parametrize(
    "method, params",
    [("none", {}), ("mixup_cutmix", {"mix_switch_prob": 0.0}), ("mixup_cutmix", {"mix_switch_prob": 1.0}),
     ("remix", {}), ("unimix", {})],
)  # fmt: skip
def test_the_training_batch_is_built_without_reading_a_device_value_on_the_host(tmp_path, meta_dirichlet, method,
                                                                               params):
    """Meta tensors have shapes but no values, so any host read of one (`.item()`, a Python branch on a value, an
    argument check, masked indexing) raises: each would stall a GPU every training step. Indices of device images
    become augmented pixels, are mixed and smoothed, as `BalancedTrainer.training_inputs` does in every step."""
    from test_trainer import parse, tiny_model

    from livt_hf.arguments import FinetuningArguments
    from livt_hf.data.batch_augment import batch_train_transform
    from livt_hf.data.device_images import DeviceImages

    meta = torch.device("meta")
    args = parse(FinetuningArguments, "--output_dir", str(tmp_path), "--eval_strategy", "no",
                 "--load_best_model_at_end", "0", "--label_smoothing_factor", "0.1")  # fmt: skip
    transform = batch_train_transform(28, [0.5], [0.5], 0.35, "rand-m9-mstd0.5", random_erasing=0.25)
    images = DeviceImages(torch.empty(50, 1, 32, 32, dtype=torch.uint8, device=meta), transform)
    trainer = BalancedTrainer(model=tiny_model(), args=args, mixer=Mixer(method, [40, 20, 10, 5], **params),
                              device_images=images)  # fmt: skip
    ids = {key: torch.empty(8, dtype=torch.long, device=meta) for key in ("image_index", "labels")}
    inputs = ids | {f"partner_{key}": value.clone() for key, value in ids.items()}
    out = trainer.training_inputs(inputs)
    assert out.keys() == {"pixel_values", "labels"}
    assert out["pixel_values"].device == meta and out["pixel_values"].shape == (8, 1, 28, 28)
    assert out["labels"].device == meta and out["labels"].shape == (8, 4)
