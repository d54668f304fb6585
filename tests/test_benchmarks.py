"""The throughput benchmark's FLOP count against published and measured figures, and a CPU run of the script."""

import json
import os
import subprocess
import sys
import weakref

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from throughput import Geometry, training_flops_per_image  # noqa: E402


def test_vit_b16_flops_match_the_published_count():
    # ViT-B/16 at 224 px: 17.6 G multiply-adds per forward (timm / fvcore tables), i.e. 35.2 GFLOPs
    forward = training_flops_per_image("bft", Geometry("vit-b", 224, 16, 3)) / 3
    assert forward == pytest.approx(35.2e9, rel=0.01)


def test_flops_agree_with_the_issue_measurements():
    # issue 5's starting point: stock ViT-B/16 2,364 img/s ≈ 248 TFLOP/s; stock ViTMAE (mask 0.75) 3,116 img/s ≈ 179
    assert training_flops_per_image("bft", Geometry("vit-b", 224, 16, 3)) == pytest.approx(248e12 / 2364, rel=0.01)
    assert training_flops_per_image("mgp", Geometry("vit-b", 224, 16, 3)) == pytest.approx(179e12 / 3116, rel=0.03)


def test_the_benchmark_runs_every_pipeline_on_the_cpu(tmp_path):
    out = tmp_path / "results.json"
    command = [sys.executable, str(REPO / "benchmarks/throughput.py"), "--use_cpu", "--model", "tiny", "--image_size",
               "32", "--patch_size", "8", "--batch_size", "8", "--steps", "2", "--warmup", "1", "--workers", "0",
               "--num_images", "120", "--data_root", str(tmp_path / "data"), "--output", str(out)]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert {(r["stage"], r["pipeline"]) for r in rows} == {(s, p) for s in ("mgp", "bft") for p in ("stock", "ours", "device", "synthetic")}
    assert all(r["images_per_s"] > 0 and r["tflops"] > 0 for r in rows)
    assert "| bft | tiny | 32 | ours |" in result.stdout
    # the JPEG folder holds the requested images at the benchmark's resolution
    jpegs = list((tmp_path / "data").rglob("*.jpg"))
    assert len(jpegs) == 120
    from PIL import Image

    with Image.open(jpegs[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"


def test_an_out_of_memory_attempt_is_freed_before_the_retry(monkeypatch, capsys):
    """The retry with activation checkpointing must run after the failed attempt is gone: while the `except` block
    runs, the traceback holds its frames, and with them its trainer and activations on the GPU."""
    import throughput

    class Activations:
        pass

    failed = []

    def run_case(pipeline, stage, geo, folder, opts):
        if not opts.checkpointing:
            activations = Activations()  # noqa: F841  (held by this frame, as the trainer's tensors are)
            failed.append(weakref.ref(activations))
            raise throughput.torch.OutOfMemoryError("CUDA out of memory")
        assert failed[0]() is None, "the failed attempt's objects are still alive during the retry"
        return {"pipeline": pipeline, "stage": stage, "model": geo.model, "image_size": geo.image_size,
                "batch_size": 8, "images_per_s": 1.0, "tflops": 1.0, "peak_memory_gib": 1.0, "warmup_s": 0.0,
                "checkpointing": True}  # fmt: skip

    monkeypatch.setattr(throughput, "run_case", run_case)
    monkeypatch.setattr(sys, "argv", ["throughput.py", "--use_cpu", "--model", "tiny", "--pipelines", "synthetic",
                                      "--stages", "mgp"])  # fmt: skip
    throughput.main()
    assert len(failed) == 1 and "| mgp | tiny | 224 | synthetic + ckpt |" in capsys.readouterr().out
