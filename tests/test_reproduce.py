"""benchmarks/reproduce.py: the tables it plans (checked without running them), its scheduling, resuming and verdicts,
and a tiny CPU run of every kind of cell through the real scripts."""

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import reproduce  # noqa: E402
from reproduce import Run, plan, run_command, verdict  # noqa: E402

from livt_hf.runs import COMPLETE_MARKER  # noqa: E402


def recipe(name):
    return json.loads((REPO / f"recipes/reproduce/{name}.json").read_text())


def test_the_gpu_recipe_plans_the_issue_table():
    runs = plan(recipe("fmnist_lt_h100"))
    stages = Counter(r.stage for r in runs)
    # 3 seeds × (2 ρ × 2 starts × 4 losses + 6 ablations) fine-tunes, started from 3 random checkpoints and
    # 3 × (2 LT + 1 balanced) MGP runs; one baselines run per ρ and seed
    assert stages == {"finetune": 3 * (16 + 6), "scratch": 3, "pretrain": 9, "baselines": 6}
    cells = Counter(r.cell for r in runs if r.stage == "finetune")
    assert len(cells) == 16 + 6 and set(cells.values()) == {3}  # every cell over the 3 seeds
    assert ("main", "scratch", 500, "bal_ce") in cells and ("ablations", "balanced", 100, "balanced_mgp") in cells
    names = {r.name for r in runs}
    assert all(r.needs in names for r in runs if r.stage == "finetune")  # every start is planned …
    position = {r.name: i for i, r in enumerate(runs)}
    assert all(position[r.needs] < position[r.name] for r in runs if r.needs)  # … before the runs that need it
    assert {r.needs for r in runs if r.cell[:2] == ("main", "lt")} == {
        f"mgp-lt-rho{rho}-s{s}" for rho in (100, 500) for s in (0, 1, 2)
    }
    unimix = next(r for r in runs if r.cell[-1:] == ("unimix_stop_30",))
    assert unimix.flags | {"mixing": "unimix", "unimix_tau": -1.0, "mix_until_epoch": 30} == unimix.flags
    assert unimix.flags["loss"] == "bal_bce" and unimix.flags["imbalance_ratio"] == 100
    nt = next(r for r in runs if r.cell[-1:] == ("nt_bce_star_2",))
    assert nt.flags["loss"] == "nt_bce_bal" and nt.flags["negative_tolerance"] == 2.0
    balanced = next(r for r in runs if r.name == "mgp-balanced-rho100-s1")
    assert balanced.flags["balanced"] and balanced.flags["seed"] == 1 and balanced.flags["imbalance_ratio"] == 100
    ablations = plan(recipe("fmnist_lt_h100"), "ablations")
    # the ablations and, as their reference row, the main cell they change
    assert {r.cell[0] for r in ablations if r.stage == "finetune"} == {"ablations", "main"}
    assert {r.cell for r in ablations if r.cell[:1] == ("main",)} == {("main", "lt", 100, "bal_bce")}
    assert all(not r.name.startswith("mgp-lt-rho500") for r in ablations)
    after_mgp = plan(recipe("fmnist_lt_h100"), "main", ["lt"])
    assert {r.cell[1] for r in after_mgp if r.stage == "finetune"} == {"lt"} and len(after_mgp) == 3 * (8 + 2)
    assert {r.stage for r in after_mgp} == {"finetune", "pretrain"}  # no scratch, no balanced MGP, no baselines


def test_the_cpu_recipe_plans_the_main_table_at_three_seeds_and_the_ablations_at_one():
    runs = plan(recipe("fmnist_lt_cpu"))
    main = Counter(r.cell for r in runs if r.cell[:1] == ("main",))
    assert len(main) == 16 and set(main.values()) == {3}
    ablations = [r for r in runs if r.cell[:1] == ("ablations",)]
    assert len(ablations) == 7 and {r.seed for r in ablations} == {0}
    assert Counter(r.stage for r in runs) == {"finetune": 48 + 7, "pretrain": 3 * 2 + 1, "scratch": 3, "baselines": 6}
    baselines = [r for r in runs if r.stage == "baselines"]
    assert [(r.cell, r.seed, r.flags["seeds"]) for r in baselines] == [
        (("baselines", rho), seed, [seed]) for seed in (0, 1, 2) for rho in (100, 500)
    ]  # one run per split and seed, so a table run seed by seed reuses each seed's baselines
    assert runs[:2] == baselines[:2] and baselines[1].name == "baselines-rho500-s0"
    assert baselines[1].flags | {"max_per_class": 5000, "imbalance_ratio": 500} == baselines[1].flags
    # run in parts: one seed at a time, seed by seed, with the same run names as the whole table
    seed0 = plan(recipe("fmnist_lt_cpu"), seeds=[0])
    assert {r.seed for r in seed0} == {0} and {r.name for r in seed0} <= {r.name for r in runs}
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)


def test_runs_start_after_what_they_need_and_run_jobs_at_once(tmp_path, monkeypatch):
    log, lock = [], threading.Lock()

    def fake_execute(run, work):
        with lock:
            log.append(("start", run.name))
        time.sleep(0.05 if run.stage == "finetune" else 0.3)
        with lock:
            log.append(("end", run.name))

    monkeypatch.setattr(reproduce, "execute", fake_execute)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs = [Run("pretrain", "mgp-a", {}), Run("finetune", "bft-a1", {}, needs="mgp-a"),
            Run("finetune", "bft-a2", {}, needs="mgp-a"), Run("pretrain", "mgp-b", {}),
            Run("finetune", "bft-b1", {}, needs="mgp-b")]  # fmt: skip
    reproduce.execute_all(runs, tmp_path, jobs=2)
    at = {event: i for i, event in enumerate(log)}
    for run in runs:
        if run.needs:
            assert at[("end", run.needs)] < at[("start", run.name)]
    # the two MGP runs overlap: mgp-b starts while mgp-a runs (its fine-tunes cannot start yet)
    assert at[("start", "mgp-b")] < at[("end", "mgp-a")]
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, os.cpu_count() // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # a budget already set is shared between the jobs
    reproduce.execute_all(runs[:1], tmp_path, jobs=3)
    assert os.environ["OMP_NUM_THREADS"] == "2"


def test_a_stopped_run_continues_from_its_last_complete_checkpoint(tmp_path):
    run = Run("finetune", "bft-x", {"loss": "bal_bce"}, needs="mgp-x")
    fresh = run_command(run, tmp_path)
    assert "--overwrite_output_dir" in fresh and "--resume_from_checkpoint" not in fresh
    assert fresh[fresh.index("--mae_checkpoint") + 1] == str(tmp_path / "mgp-x")
    (tmp_path / "bft-x/checkpoint-8").mkdir(parents=True)  # a kill while saving: not complete, start again
    assert "--overwrite_output_dir" in run_command(run, tmp_path)
    (tmp_path / "bft-x/checkpoint-4").mkdir()
    (tmp_path / "bft-x/checkpoint-4" / COMPLETE_MARKER).touch()
    resumed = run_command(run, tmp_path)
    assert resumed[resumed.index("--resume_from_checkpoint") + 1] == "last" and "--overwrite_output_dir" not in resumed


def test_verdicts_against_hand_worked_differences():
    def cell(*overall):
        return {"overall": list(overall)}

    # d = 82 − 79 = 3; variances 4 and 1, pooled 2.5; 2 SE = 2·√(2.5/3 + 2.5/3) = 2.58 < 3
    line = verdict("x", cell(80, 82, 84), cell(78, 79, 80), "overall", "higher", "paper")
    assert "+3.00 (2 SE = 2.58): **holds**" in line
    assert "**does not hold**" in verdict("x", cell(80, 82, 84), cell(78, 79, 80), "overall", "lower", "paper")
    # d = 2 ≤ 2.58: within noise
    assert "+2.00 (2 SE = 2.58): **within noise**" in verdict("x", cell(80, 82, 84), cell(79, 80, 81), "overall",
                                                             "higher", "paper")  # fmt: skip
    # one seed against three: the three seeds' variance (4) stands for both sides: 2·√(4/1 + 4/3) = 4.62 ≥ 3
    assert "+3.00 (2 SE = 4.62): **within noise: holds**" in verdict("x", cell(85), cell(80, 82, 84), "overall",
                                                                    "close", "paper")  # fmt: skip
    assert "**one seed: not judged**" in verdict("x", cell(85), cell(80), "overall", "close", "paper")
    assert "not measured" in verdict("x", cell(85), None, "overall", "higher", "paper")
    assert "not measured" in verdict("x", {"few": []}, {"few": []}, "few", "higher", "paper")


def test_the_report_averages_each_splits_baselines_over_their_per_seed_runs(tmp_path):
    machine = {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1, "device": "cpu"}
    split = {"train_counts": [50, 5], "validation_counts": [10, 10], "test_counts": [100, 100]}

    def baselines_run(rho, seed, overall):
        name = f"baselines-rho{rho}-s{seed}"
        rows = [{"model": "linear", "loss": "la", "tau": 1.0, "seed": seed, "epochs": 12, "train_wall_s": 2.0,
                 "test": {"accuracy": overall, "tail_accuracy": overall / 2}}]  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "baselines.json").write_text(json.dumps({"split": split, "machine": machine, "rows": rows}))
        (tmp_path / f"{name}.run.json").write_text(json.dumps({"wall_s": 60.0, "commit": "abc", "command": "x",
                                                                "torch_threads": "1"}))  # fmt: skip
        return Run("baselines", name, {}, ("baselines", rho), seed=seed)

    # ρ = 100: 0.80, 0.83, 0.77 → mean 80.00, std 3.00 (tail half of it: 40.00 ± 1.50); ρ = 500: one seed
    runs = [baselines_run(100, 0, 0.80), baselines_run(500, 0, 0.70), baselines_run(100, 1, 0.83),
            baselines_run(100, 2, 0.77)]  # fmt: skip
    text = reproduce.report("cmd", recipe("fmnist_lt_cpu"), runs, tmp_path, len(runs))
    at100, at500 = text.split("### ρ = 100")[1].split("### ρ = 500")
    assert "Seeds [0, 1, 2]" in at100 and "| la (τ = 1) | 80.00 ± 3.00 |" in at100 and "| 40.00 ± 1.50 |" in at100
    assert "Seeds [0]" in at500 and "| la (τ = 1) | 70.00 |" in at500


def test_a_rewritten_table_keeps_the_hand_written_notes_below_it():
    first = reproduce.with_notes("# Table v1\n", "")
    assert first.startswith("# Table v1\n") and first.endswith(reproduce.NOTES + "\n")
    note = "- Bal-BCE trails Bal-CE: τ = 1.1 moves 3 points to the tail.\n"
    second = reproduce.with_notes("# Table v2\n", first + note)
    assert second == "# Table v2\n" + reproduce.NOTES + "\n" + note
    assert reproduce.with_notes("# Table v3\n", second).count(reproduce.NOTES) == 1


def test_a_tiny_reproduction_runs_every_kind_of_cell_and_continues_a_stopped_run(tmp_path):
    results, work = tmp_path / "RESULTS.md", tmp_path / "work"
    command = [sys.executable, str(REPO / "benchmarks/reproduce.py"), str(REPO / "recipes/reproduce/cpu_smoke.json"),
               "--work_dir", str(work), "--output", str(results)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    run = json.loads((work / "bft-lt-rho10-tau_1.1-s0/results.json").read_text())
    # the table's cell is that run's numbers (one seed: no ± part)
    row = next(line for line in text.splitlines() if line.startswith("| tau_1.1 | tau 1.1 | 1 |"))
    assert row.split(" | ")[3] == f"{100 * run['metrics']['accuracy']:.2f}"
    assert row.split(" | ")[11] == f"{list(run['calibration'].values())[1]['ece']:.3f}"  # ECE after scaling
    assert row.split(" | ")[12] == f"{run['temperature']:.3f}"  # and the temperature scaling it
    assert "| scratch | 10 | bal_bce |" in text and "| balanced_mgp | start balanced |" in text
    # the calibration table: that cell's measures as trained and its fitted temperature
    scratch = json.loads((work / "bft-scratch-rho10-bal_bce-s0/results.json").read_text())
    calibration = text.split("## Calibration")[1].split("\n## ")[0]
    row = next(line for line in calibration.splitlines() if line.startswith("| scratch | 10 | bal_bce | 1 |"))
    row = row.rstrip(" |").split(" | ")
    as_trained = list(scratch["calibration"].values())[0]
    assert row[4:12] == [f"{as_trained[k]:.3f}" for k in ("ece", "mce", "ace", "tace", "sce", "brier", "nll")] + [
        f"{scratch['temperature']:.3f}"
    ]
    assert "| reference | — | 1 |" in text and "MGP on the LT split vs on a balanced split" in text
    assert "ρ = 10: train [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]" in text
    assert "### ρ = 10" in text and "| linear (softmax regression, pixels) | la (τ = 1) |" in text
    # each run's machine from its own record: the CPU model /proc/cpuinfo names, on the header line and per run
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None  # fmt: skip
    where = json.loads((work / "bft-lt-rho10-tau_1.1-s0/run_config.json").read_text())["machine"]
    assert where["cpu_cores"] == os.cpu_count() and where["device"] == "cpu" and (cpu is None or where["cpu"] == cpu)
    assert f"{where['cpu']} ({os.cpu_count()} cores), " in text.split("\n## ")[0]  # the header
    assert "| bft-lt-rho10-tau_1.1-s0 | " in text and f"| {where['cpu']} ({os.cpu_count()} cores) | `" in text
    config = json.loads((work / "bft-lt-rho10-tau_1.1-s0/config.json").read_text())
    assert config["tau"] == 1.1 and config["loss"] == "bal_bce"
    pretrain = json.loads((work / "mgp-balanced-rho10-s0/lt_split.json").read_text())
    assert pretrain["balanced"] and len(set(pretrain["train_counts"])) <= 2  # the same size, spread evenly
    # a run stopped after its last checkpoint: --report_only tables the others and trains nothing …
    results.write_text(results.read_text() + "- A cause found by hand.\n")
    (work / "bft-lt-rho10-tau_1.1-s0/run_config.json").unlink()
    before = {p: p.stat().st_mtime for p in work.glob("*/model.safetensors")}
    partial = subprocess.run([*command, "--report_only"], capture_output=True, text=True, timeout=300)
    assert partial.returncode == 0, partial.stdout[-3000:] + partial.stderr[-3000:]
    assert "**Partial: 7 of the 8 planned runs have finished**" in results.read_text()
    assert results.read_text().endswith(reproduce.NOTES + "\n- A cause found by hand.\n")  # kept
    assert "| tau_1.1 |" not in results.read_text() and "| balanced_mgp | start balanced | 1 |" in results.read_text()
    assert {p: p.stat().st_mtime for p in before} == before
    # … and the table continues it from its last checkpoint; finished runs are reused (nothing else trains)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    changed = {p.parent.name for p, t in before.items() if p.stat().st_mtime != t}
    assert changed == {"bft-lt-rho10-tau_1.1-s0"}
    record = json.loads((work / "bft-lt-rho10-tau_1.1-s0.run.json").read_text())
    assert "--resume_from_checkpoint last" in record["command"] and record["resumed"]
    assert "| bft-lt-rho10-tau_1.1-s0 | " in results.read_text() and " (the resumed part) |" in results.read_text()
    assert "Resuming from" in (work / "bft-lt-rho10-tau_1.1-s0.log").read_text()
