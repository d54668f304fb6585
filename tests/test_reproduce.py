"""benchmarks/reproduce.py: the table it plans for the GPU (checked without running it), and a tiny CPU run of every
kind of cell through the real scripts."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from reproduce import plan  # noqa: E402


def test_the_gpu_recipe_plans_the_issue_table():
    recipe = json.loads((REPO / "recipes/reproduce/fmnist_lt_h100.json").read_text())
    runs = plan(recipe, None)
    stages = Counter(r.stage for r in runs)
    # 3 seeds × (2 ρ × 2 starts × 4 losses + τ 0.9, 1.1 + mixing none, UniMix + balanced MGP) fine-tunes, started from
    # 3 random checkpoints and 3 × (2 LT + 1 balanced) MGP runs
    assert stages == {"finetune": 3 * (16 + 5), "scratch": 3, "pretrain": 9}
    cells = Counter(r.cell for r in runs if r.stage == "finetune")
    assert len(cells) == 16 + 5 and set(cells.values()) == {3}  # every cell over the 3 seeds
    assert ("main", "scratch", 500, "bal_ce", 1.0, "mixup_cutmix") in cells
    assert ("ablations", "balanced", 100, "bal_bce", 1.0, "mixup_cutmix") in cells
    names = {r.name for r in runs}
    assert all(r.needs in names for r in runs if r.stage == "finetune")  # every start is planned
    assert {r.needs for r in runs if r.cell and r.cell[0] == "main" and r.cell[1] == "lt"} == {
        f"mgp-lt-rho{rho}-s{s}" for rho in (100, 500) for s in (0, 1, 2)
    }
    unimix = next(r for r in runs if r.cell and r.cell[5] == "unimix")
    assert unimix.flags["unimix_tau"] == -1.0 and unimix.flags["mix_until_epoch"] == 30
    balanced = next(r for r in runs if r.name == "mgp-balanced-rho100-s1")
    assert balanced.flags["balanced"] and balanced.flags["seed"] == 1 and balanced.flags["imbalance_ratio"] == 100
    assert {r.cell[0] for r in plan(recipe, "ablations") if r.stage == "finetune"} == {"ablations"}
    assert all(not r.name.startswith("mgp-lt-rho500") for r in plan(recipe, "ablations"))
    after_mgp = plan(recipe, "main", ["lt"])
    assert {r.cell[1] for r in after_mgp if r.stage == "finetune"} == {"lt"} and len(after_mgp) == 3 * (8 + 2)
    assert {r.stage for r in after_mgp} == {"finetune", "pretrain"}  # no scratch checkpoints, no balanced MGP


def test_a_tiny_reproduction_runs_every_kind_of_cell(tmp_path):
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, str(REPO / "benchmarks/reproduce.py"), str(REPO / "recipes/reproduce/cpu_smoke.json"),
               "--work_dir", str(tmp_path / "work"), "--output", str(results)]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    run = json.loads((tmp_path / "work/bft-lt-rho10-bal_bce-tau1.1-mixup_cutmix-s0/results.json").read_text())
    # the table's cell is that run's numbers (one seed: no ± part)
    row = next(line for line in text.splitlines() if line.startswith("| lt | 1.1 | mixup_cutmix |"))
    assert row.split(" | ")[3] == f"{100 * run['metrics']['accuracy']:.2f}"
    assert "| scratch | 10 | bal_bce |" in text and "| balanced | 1.0 | mixup_cutmix |" in text
    assert "ρ = 10: train [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]" in text
    config = json.loads((tmp_path / "work/bft-lt-rho10-bal_bce-tau1.1-mixup_cutmix-s0/config.json").read_text())
    assert config["tau"] == 1.1 and config["loss"] == "bal_bce"
    pretrain = json.loads((tmp_path / "work/mgp-balanced-rho10-s0/lt_split.json").read_text())
    assert pretrain["balanced"] and len(set(pretrain["train_counts"])) <= 2  # the same size, spread evenly
    # finished runs are reused: a second invocation trains nothing
    before = {p: p.stat().st_mtime for p in (tmp_path / "work").glob("*/model.safetensors")}
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and {p: p.stat().st_mtime for p in before} == before
