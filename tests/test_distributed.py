"""Two processes (torchrun, gloo, CPU) fine-tune through the real script: DDP keeps the ranks' weights identical and
the gathered evaluation counts every test image exactly once, although the split does not divide into the batches."""

import json

import pytest
import torch
from transformers import HfArgumentParser

from conftest import REPO, TINY_MAE, run_two_processes
from helpers.threads import GLOO_THREADS

from livt_hf.arguments import FinetuneDataArguments
from livt_hf.data import prepare_splits

SPLIT = ["--max_per_class", "50", "--imbalance_ratio", "10", "--validation_split", "0.1", "--max_test_samples", "301"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_mae_dir):
    tmp = tmp_path_factory.mktemp("ddp")
    flags = [*SPLIT, "--mae_checkpoint", str(tiny_mae_dir), "--output_dir", str(tmp / "run"), "--use_cpu", "1",
             "--num_train_epochs", "2", "--min_train_steps", "0", "--per_device_train_batch_size", "8",
             "--per_device_eval_batch_size", "16",
             "--train_sampler", "sqrt", "--mixing", "mixup_cutmix", "--report_to", "none"]  # fmt: skip
    result = run_two_processes(REPO / "tests/helpers/distributed_finetune.py", tmp, *flags, cwd=tmp)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return ranks, tmp / "run", result.stdout


def test_both_ranks_end_with_identical_weights(two_ranks):
    ranks, _, log = two_ranks
    assert [r["world"] for r in ranks] == [2, 2]
    assert "Total train batch 16" in log  # 8 per process × 2 processes
    first, second = (r["weights"] for r in ranks)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_evaluation_counts_each_test_image_once(two_ranks, tiny_mae_dir):
    ranks, run_dir, _ = two_ranks
    # 301 images in batches of 16 over 2 processes: the last round is padded with repeated images, which must be
    # dropped again when the predictions are gathered
    (data_args,) = HfArgumentParser(FinetuneDataArguments).parse_args_into_dataclasses(SPLIT)
    splits, _ = prepare_splits(data_args)
    test_labels = torch.tensor(splits["test"]["label"])
    assert len(test_labels) == 301
    for rank in ranks:
        assert rank["predictions"].shape == (301, 10)
        assert torch.equal(rank["label_ids"], test_labels)  # every image once, in the split's order
    assert torch.equal(ranks[0]["predictions"], ranks[1]["predictions"])
    results = json.loads((run_dir / "results.json").read_text())
    assert sum(c["eval_count"] for c in results["classes"]) == 301
    assert [c["eval_count"] for c in results["classes"]] == torch.bincount(test_labels, minlength=10).tolist()


def test_no_gloo_thread_outlives_the_finetuning_run(two_ranks):
    """Issue 15: gloo's threads, which could abort a finished process at interpreter shutdown (SIGABRT), are joined
    by `end_training`, on both ranks."""
    ranks, _, _ = two_ranks
    for rank in ranks:
        assert "python" in rank["threads_at_exit"] and not GLOO_THREADS & set(rank["threads_at_exit"])


def test_pretraining_script_ends_with_no_gloo_thread_left(tmp_path):
    """run_pretrain_mae.py's own ending (its `__main__`, as torchrun runs it) frees the process group."""
    tiny = [item for name, value in TINY_MAE.items() for item in (f"--{name}", str(value))]
    flags = [*SPLIT, *tiny, "--output_dir", tmp_path / "mae", "--use_cpu", "1", "--num_train_epochs", "1",
             "--min_train_steps", "0", "--per_device_train_batch_size", "16", "--report_to", "none"]  # fmt: skip
    result = run_two_processes(REPO / "tests/helpers/threads.py", REPO / "run_pretrain_mae.py", tmp_path, *flags,
                               cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "mae" / "model.safetensors").exists()
    for rank in (0, 1):
        names = json.loads((tmp_path / f"threads_rank{rank}.json").read_text())
        assert "python" in names and not GLOO_THREADS & set(names)
