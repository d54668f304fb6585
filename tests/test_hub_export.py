"""A saved LiVT model in HF's own tools: loaded as remote code where livt_hf is absent, pipelines, processors; and
`--push_to_hub` failing before anything runs when the Hub cannot be used."""

import json
import os
import subprocess
import sys
import warnings

import huggingface_hub
import numpy as np
import pytest
import torch
from datasets import DatasetDict
from PIL import Image
from transformers import TrainingArguments, ViTImageProcessor

from conftest import REPO
from livt_hf import BalancedTrainer, LiVTConfig, LiVTForImageClassification
from livt_hf.arguments import FinetuningArguments
from livt_hf.data import attach_transforms, image_processor
from livt_hf.data.transforms import convert_image, eval_transform
from livt_hf.runs import FINISHED_MARKER, check_hub_access, start_run

COUNTS = [round(500 * 0.6**i) for i in range(10)]  # a long tail, 500 … 5
IMAGES = 8
CODE_FILES = {"modeling_livt.py", "configuration_livt.py", "losses.py", "options.py"}

# Run with `python -I` from an empty folder: neither the repository nor PYTHONPATH is on sys.path, and an installed
# livt_hf (`pip install -e .`, as CI does) is blocked: `sys.modules[name] = None` makes every import of it fail.
REMOTE = r"""
import json, sys
sys.modules["livt_hf"] = None
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

folder, paths = sys.argv[1], sys.argv[2:]
images = [Image.open(path) for path in paths]
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder)
with torch.no_grad():
    logits = model(**processor(images=images, return_tensors="pt")).logits
classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
print(json.dumps({
    "model_class": f"{type(model).__module__}.{type(model).__name__}",
    "logits": logits.tolist(),
    "pipeline": classifier(images, top_k=model.config.num_labels),
}))
"""


@pytest.fixture(scope="module")
def saved_model(tiny_mae_dir, fashion_mnist, tmp_path_factory):
    """A tiny bal_bce model with a random head, predicting for a reversed long tail, saved as the script does."""
    names = fashion_mnist["test"].features["label"].names
    reversed_tail = torch.tensor(COUNTS[::-1], dtype=torch.float64)
    model = LiVTForImageClassification.from_mae_pretrained(
        tiny_mae_dir,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        class_counts=COUNTS,
        loss="bal_bce",
        inference_test_prior=(reversed_tail / reversed_tail.sum()).tolist(),
    )
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head.weight, std=1.0)  # MAE's near-zero head would predict one class everywhere
    folder = tmp_path_factory.mktemp("livt_saved")
    args = TrainingArguments(str(folder), report_to="none")
    BalancedTrainer(model=model, args=args, processing_class=image_processor(28, 1)).save_model()
    return folder


def test_saved_folder_holds_weights_processor_and_code(saved_model):
    config = json.loads((saved_model / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_livt.LiVTConfig",
        "AutoModelForImageClassification": "modeling_livt.LiVTForImageClassification",
    }
    assert config["class_counts"] == COUNTS and config["problem_type"] == "multi_label_classification"
    assert {"model.safetensors", "preprocessor_config.json", *CODE_FILES} <= {p.name for p in saved_model.iterdir()}


def test_loads_and_predicts_without_livt_hf(saved_model, fashion_mnist, tmp_path):
    test = DatasetDict({"test": fashion_mnist["test"].select(range(IMAGES))})
    paths = [str(tmp_path / f"{i}.png") for i in range(IMAGES)]
    for image, path in zip(test["test"]["image"], paths):
        image.save(path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run = subprocess.run(
        [sys.executable, "-I", "-c", REMOTE, str(saved_model), *paths],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    remote = json.loads(run.stdout.strip().splitlines()[-1])
    assert remote["model_class"].startswith("transformers_modules.")

    # the library's own path (run_evaluate_test_priors.py): its eval transform on the 'L' images
    model = LiVTForImageClassification.from_pretrained(saved_model).eval()
    attach_transforms(test, ViTImageProcessor.from_pretrained(saved_model), crop_min_scale=1.0)
    with torch.no_grad():
        expected = model(torch.stack(test["test"][:]["pixel_values"])).logits.numpy()
    top1 = [model.config.id2label[i] for i in expected.argmax(1)]
    assert len(set(top1)) > 1, "a constant prediction would not test much"

    np.testing.assert_allclose(remote["logits"], expected, atol=1e-5)
    # the pipeline got RGB (it converts every image) and scored with a sigmoid, per problem_type
    assert [scores[0]["label"] for scores in remote["pipeline"]] == top1
    for scores, z in zip(remote["pipeline"], expected):
        by_label = {s["label"]: s["score"] for s in scores}
        sigmoid = 1 / (1 + np.exp(-z))
        np.testing.assert_allclose([by_label[model.config.id2label[i]] for i in range(10)], sigmoid, atol=1e-5)


def test_grayscale_model_reads_the_luma_of_rgb_input(tiny_mae_dir):
    encoder = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, num_labels=4, class_counts=[8, 4, 2, 1])
    encoder = encoder.vit.eval()
    gray = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        as_gray, as_rgb = (encoder(x).last_hidden_state for x in (gray, gray.expand(-1, 3, -1, -1)))
    torch.testing.assert_close(as_rgb, as_gray)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA"])
def test_the_processor_feeds_a_grayscale_model_what_training_fed_it(tiny_mae_dir, mode):
    # training: convert_image(…, "L") + our eval transform; inference: the saved processor (RGB) + the model's luma.
    # Compared where the encoder takes them in, pixel for pixel (MAE's near-zero head makes any two logits agree).
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (28, 28, 4), dtype=np.uint8), mode="RGBA").convert(mode)
    model = LiVTForImageClassification.from_mae_pretrained(tiny_mae_dir, num_labels=4, class_counts=[8, 4, 2, 1]).eval()
    seen = []
    model.vit.embeddings.patch_embeddings.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    pixel_values = image_processor(28, 1)(images=image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 28, 28)
    trained_on = eval_transform(28, [0.5], [0.5])(convert_image(image, "L")).unsqueeze(0)
    with torch.no_grad():
        model(pixel_values), model(trained_on)
    at_inference, in_training = seen
    assert at_inference.shape == in_training.shape == (1, 1, 28, 28) and in_training.std() > 0.3  # an image
    # 'L' rounds the luma to a grey level (≤ 1/2 of 1/255 off), which normalising by std 0.5 doubles
    torch.testing.assert_close(at_inference, in_training, atol=1 / 255 + 1e-6, rtol=0)


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


def push_args(tmp_path, **kwargs) -> FinetuningArguments:
    return FinetuningArguments(output_dir=str(tmp_path / "out"), push_to_hub=True, report_to="none", **kwargs)


def test_push_to_hub_offline_fails_before_the_run_touches_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    finished = tmp_path / "out" / FINISHED_MARKER
    finished.parent.mkdir()
    finished.write_text("{}")
    message = r"--push_to_hub: offline mode is on.*unset HF_HUB_OFFLINE.*drop --push_to_hub"
    with pytest.raises(ValueError, match=message):
        start_run(push_args(tmp_path, overwrite_output_dir=True))
    assert finished.exists()  # --overwrite_output_dir deleted nothing


def test_push_to_hub_without_a_token_fails_early(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read from the environment at import
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    assert huggingface_hub.get_token() is None
    message = r"--push_to_hub: no Hugging Face token found.*`hf auth login`.*--hub_token.*drop --push_to_hub"
    with pytest.raises(ValueError, match=message):
        start_run(push_args(tmp_path))
    check_hub_access(push_args(tmp_path, hub_token="hf_not_a_real_token"))  # a token given as a flag is enough


def test_script_with_push_to_hub_offline_stops_before_loading_data(tmp_path):
    missing = str(tmp_path / "missing")  # loading the data or the checkpoint would fail on these
    run = subprocess.run(
        [sys.executable, str(REPO / "run_finetune_balanced.py"), "--push_to_hub", "--fashion_mnist_dir", missing,
         "--mae_checkpoint", missing, "--output_dir", str(tmp_path / "out"), "--use_cpu", "1"],
        cwd=tmp_path, env=os.environ | {"HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0
    assert "ValueError: --push_to_hub: offline mode is on" in run.stderr, run.stderr[-3000:]
