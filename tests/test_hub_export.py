"""A saved LiVT model in HF's own tools: loaded as remote code where livt_hf is absent, pipelines, processors."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TrainingArguments

from livt_hf import BalancedTrainer, LiVTConfig, LiVTForImageClassification
from livt_hf.data import image_processor


def test_grayscale_model_reads_the_luma_of_rgb_input(tiny_mae_dir):
    encoder = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, num_labels=4, class_counts=[8, 4, 2, 1])
    encoder = encoder.vit.eval()
    gray = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        as_gray, as_rgb = (encoder(x).last_hidden_state for x in (gray, gray.expand(-1, 3, -1, -1)))
    torch.testing.assert_close(as_rgb, as_gray)


def test_rgb_processor_converts_grayscale_images():
    image = Image.fromarray(np.zeros((28, 28), dtype=np.uint8), mode="L")
    assert image_processor(28, 3)(images=image, return_tensors="pt")["pixel_values"].shape == (1, 3, 28, 28)
    assert image_processor(28, 1)(images=image, return_tensors="pt")["pixel_values"].shape == (1, 1, 28, 28)


@pytest.mark.parametrize(
    "loss, problem_type", [("bal_bce", "multi_label_classification"), ("bal_ce", "single_label_classification")]
)
def test_problem_type_follows_the_loss_family(loss, problem_type):
    assert LiVTConfig(num_labels=4, class_counts=[8, 4, 2, 1], loss=loss).problem_type == problem_type
    explicit = LiVTConfig(num_labels=4, class_counts=[8, 4, 2, 1], loss=loss, problem_type="regression")
    assert explicit.problem_type == "regression"


def test_label_smoothing_is_not_reported_dropped_for_sigmoid_losses(tiny_mae_dir, tmp_path):
    model = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, num_labels=4, class_counts=[8, 4, 2, 1])
    args = TrainingArguments(str(tmp_path), report_to="none", label_smoothing_factor=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BalancedTrainer(model=model, args=args)
    assert not [w for w in caught if "Label smoothing" in str(w.message)]

