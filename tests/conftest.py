import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any HF import: tests never reach the network
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest-xdist (setup.cfg: -n auto): each worker its share of the cores
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import ViTMAEConfig  # noqa: E402

from livt_hf.data import FASHION_MNIST_DIR, load_fashion_mnist  # noqa: E402
from livt_hf.mae import new_vitmae  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_two_processes(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 ARGS`: gloo on the CPU, one thread per process, the repository
    importable, a free port (tests run in parallel workers)."""
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=cwd)

TINY_MAE = dict(
    image_size=28,
    patch_size=7,
    num_channels=1,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
    norm_pix_loss=True,
)


@pytest.fixture(scope="session")
def fashion_mnist():
    if not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing: `apt-get install dataset-fashion-mnist` (the README's test command does).")
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def tiny_mae_dir(tmp_path_factory):
    """A randomly initialised, tiny ViTMAE checkpoint (28 px, 1 channel, patch 7), the same in every session: from
    whatever RNG state the tests before it left, 6 in 40 initialisations gave tests/test_hub_export.py's saved model
    one class for all its images (a flaky failure)."""
    return save_tiny_mae(tmp_path_factory.mktemp("tiny_mae"), seed=0)


def save_tiny_mae(path: Path, seed: int | None = None) -> Path:
    """A new tiny ViTMAE (TINY_MAE) saved at `path`; from `seed` where a test needs one known initialisation."""
    if seed is not None:
        torch.manual_seed(seed)
    new_vitmae(ViTMAEConfig(**TINY_MAE)).save_pretrained(path)
    return path
