import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any HF import: tests never reach the network

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from transformers import ViTMAEConfig  # noqa: E402

from livt_hf.data import FASHION_MNIST_DIR, load_fashion_mnist  # noqa: E402
from livt_hf.mae import new_vitmae  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_two_processes(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 ARGS`: gloo on the CPU, one thread per process, the repository importable."""
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *map(str, args)]
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
    """A randomly initialised, tiny ViTMAE checkpoint (28 px, 1 channel, patch 7)."""
    path = tmp_path_factory.mktemp("tiny_mae")
    new_vitmae(ViTMAEConfig(**TINY_MAE)).save_pretrained(path)
    return path
