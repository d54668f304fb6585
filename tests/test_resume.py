"""A fine-tune killed mid-epoch (SIGKILL) and restarted with `--resume_from_checkpoint last` ends with exactly the
weights and metrics of an uninterrupted run with the same seed: optimizer, scheduler, sampler, augmentation and mixing
state all continue."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, save_tiny_mae

# 199 training images in batches of 16: 13 steps per epoch; checkpoints every 4 steps, the kill at step 18 falls in
# the second epoch, 2 steps after checkpoint-16
FLAGS = ["--max_per_class", "50", "--imbalance_ratio", "10", "--validation_split", "0.1", "--max_test_samples", "100",
         "--use_cpu", "1", "--num_train_epochs", "3", "--min_train_steps", "0", "--per_device_train_batch_size", "16",
         "--learning_rate", "3e-3",
         "--report_to", "none", "--save_strategy", "steps", "--save_steps", "4", "--eval_strategy", "steps",
         "--eval_steps", "4", "--train_sampler", "sqrt", "--mixing", "unimix", "--mix_until_epoch", "2",
         "--auto_augment", "rand-m9-mstd0.5", "--random_erasing", "0.25"]  # fmt: skip


def finetune(mae_dir, out_dir, *extra, env=None):
    env = os.environ | {"OMP_NUM_THREADS": "1"} | (env or {})
    command = [sys.executable, str(REPO / "tests/helpers/killed_finetune.py"), *FLAGS, "--mae_checkpoint", str(mae_dir),
               "--output_dir", str(out_dir), *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def resume_mae_dir(tmp_path_factory):
    return save_tiny_mae(tmp_path_factory.mktemp("resume_mae"), seed=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, resume_mae_dir):
    out = tmp_path_factory.mktemp("resume") / "whole"
    result = finetune(resume_mae_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def assert_same_run(first, second):
    """The same final (best) model and report, and, since the best checkpoint may predate the kill, the same last
    checkpoint (step 39, after the resume) and the same evaluations at every step."""
    for name in ("model.safetensors", "checkpoint-39/model.safetensors"):
        weights = [load_file(run / name) for run in (first, second)]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), name
    histories = [[(entry["step"], entry["eval_loss"]) for entry in json.loads((run / "checkpoint-39/trainer_state.json")
                  .read_text())["log_history"] if "eval_loss" in entry] for run in (first, second)]  # fmt: skip
    assert len(histories[0]) == 10 and histories[0] == histories[1]  # evaluated every 4 steps of 39, and at the end
    results = [json.loads((run / "results.json").read_text()) for run in (first, second)]
    assert results[0] == results[1]
    assert results[0]["metrics"]["accuracy"] == pytest.approx(sum(c["eval_count"] * c["accuracy"] for c in
                                                                   results[0]["classes"]) / 100)  # fmt: skip


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, resume_mae_dir, uninterrupted):
    killed = finetune(resume_mae_dir, tmp_path / "killed", env={"KILL_AT_STEP": "18"})
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "results.json").exists()
    # restarting without saying what to do with the unfinished run is an error, not a silent fresh start
    again = finetune(resume_mae_dir, tmp_path / "killed")
    assert again.returncode != 0 and "--resume_from_checkpoint last" in again.stdout + again.stderr

    resumed = finetune(resume_mae_dir, tmp_path / "killed", "--resume_from_checkpoint", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout and "checkpoint-16" in resumed.stdout
    assert_same_run(uninterrupted, tmp_path / "killed")


@pytest.fixture(scope="module")
def uninterrupted_on_device(tmp_path_factory, resume_mae_dir):
    out = tmp_path_factory.mktemp("resume") / "whole-on-device"
    result = finetune(resume_mae_dir, out, "--augment_on_device")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_killed_run_augmenting_on_the_device_resumes_to_the_uninterrupted_result(
    tmp_path, resume_mae_dir, uninterrupted, uninterrupted_on_device
):
    killed = finetune(resume_mae_dir, tmp_path / "killed", "--augment_on_device", env={"KILL_AT_STEP": "18"})
    assert killed.returncode == -signal.SIGKILL
    resumed = finetune(resume_mae_dir, tmp_path / "killed", "--augment_on_device", "--resume_from_checkpoint", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--augment_on_device: 199 train images decoded" in resumed.stdout
    assert_same_run(uninterrupted_on_device, tmp_path / "killed")
    # the option acts: the same seed gives other augmentations, hence other weights, than the per-image path
    on_device, per_image = (load_file(run / "model.safetensors") for run in (uninterrupted_on_device, uninterrupted))
    assert not torch.equal(on_device["head.weight"], per_image["head.weight"])


def test_a_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(tmp_path, resume_mae_dir, uninterrupted):
    out = tmp_path / "killed"
    killed = finetune(resume_mae_dir, out, env={"KILL_WHILE_SAVING_STEP": "16"})
    assert killed.returncode == -signal.SIGKILL
    half = out / "checkpoint-16"
    assert (half / "model.safetensors").exists() and not (half / "trainer_state.json").exists()  # half-written
    named = finetune(resume_mae_dir, out, "--resume_from_checkpoint", str(half))
    assert named.returncode != 0 and "was not completely written" in named.stderr

    resumed = finetune(resume_mae_dir, out, "--resume_from_checkpoint", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Deleting" in resumed.stdout and "Resuming from" in resumed.stdout and "checkpoint-12" in resumed.stdout
    assert_same_run(uninterrupted, out)


def test_a_killed_run_from_another_initialisation_resumes_to_the_uninterrupted_result(tmp_path):
    """Before each batch drew its augmentation from its own seed, the per-image path resumed to another run (its first
    resumed batches were loaded before Trainer restored the RNG state); with seed 0's model the best checkpoint
    predated the kill and hid it, with seed 1's it did not."""
    mae = save_tiny_mae(tmp_path / "mae", seed=1)
    whole = finetune(mae, tmp_path / "whole")
    killed = finetune(mae, tmp_path / "killed", env={"KILL_AT_STEP": "18"})
    resumed = finetune(mae, tmp_path / "killed", "--resume_from_checkpoint", "last")
    assert whole.returncode == 0 and killed.returncode == -signal.SIGKILL and resumed.returncode == 0
    assert_same_run(tmp_path / "whole", tmp_path / "killed")
