#!/usr/bin/env python
"""One factor at a time: named variants of a two-stage recipe, each run through the two scripts over several seeds,
compared on the validation split (the split every default is chosen on; the test split is not read here).

    python benchmarks/ablate.py recipes/ablation/demo_factors.json --jobs 2
    python benchmarks/ablate.py recipes/ablation/demo_factors.json --only "defaults, MGP 12 epochs" "scratch start"

A recipe holds `seeds`, the `base` flags of each stage (`pretrain`, `finetune`) and `variants`: a name → the flags
it changes (`{"finetune": {"crop_min_scale": 1.0}}`), or `"start": "scratch"` to fine-tune a randomly initialised
ViTMAE. MGP runs with the same flags are shared between variants. Finished runs in `--work_dir` are reused, so a
stopped ablation continues; `--jobs` runs that many scripts at once, each on cores / jobs threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch

from reproduce import Run, execute_all, mean_std, run_record  # also puts the repository on sys.path

from livt_hf.plots import compare_runs_figure

COLUMNS = {"overall": "accuracy", "head": "head_accuracy", "middle": "middle_accuracy", "tail": "tail_accuracy"}


def pretrain_name(flags: dict, seed: int) -> str:
    digest = hashlib.sha1(json.dumps(flags, sort_keys=True).encode()).hexdigest()[:8]
    return f"mgp-{digest}-s{seed}"


def plan(recipe: dict, only: list[str] | None = None) -> list[Run]:
    """The MGP / scratch starts first (one per distinct pretraining recipe and seed), then every fine-tune."""
    starts, finetunes = {}, []
    for seed in recipe["seeds"]:  # seed by seed: a stopped ablation has every variant at its first seeds
        for name, variant in recipe["variants"].items():
            if only and name not in only:
                continue
            pretrain = recipe["base"]["pretrain"] | variant.get("pretrain", {})
            finetune = recipe["base"]["finetune"] | variant.get("finetune", {})
            stage = "scratch" if variant.get("start") == "scratch" else "pretrain"
            start = Run(stage, pretrain_name(pretrain, seed) + ("-scratch" if stage == "scratch" else ""),
                        pretrain | {"seed": seed}, seed=seed)  # fmt: skip
            starts.setdefault(start.name, start)
            slug = "".join(c if c.isalnum() else "_" for c in name)
            finetunes.append(Run("finetune", f"bft-{slug}-s{seed}", finetune | {"seed": seed}, (name,), start.name, seed))
    return [*starts.values(), *finetunes]


def variant_results(runs: list[Run], work: Path) -> dict[str, dict[str, list[float]]]:
    """Per variant, each column's validation values over the seeds (%), the MGP validation loss and the wall."""
    by_name = {run.name: run for run in runs}
    results: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        if run.stage != "finetune":
            continue
        metrics = json.loads((work / run.name / "eval_results.json").read_text())
        values = results.setdefault(run.cell[0], {c: [] for c in [*COLUMNS, "MGP loss", "wall s"]})
        for column, key in COLUMNS.items():
            values[column].append(100 * metrics[f"eval_{key}"])
        start = by_name[run.needs]
        if start.stage == "pretrain":
            values["MGP loss"].append(json.loads((work / start.name / "eval_results.json").read_text())["eval_loss"])
        values["wall s"].append(run_record(work, run.name)["wall_s"] + run_record(work, start.name)["wall_s"])
    return results


def table(recipe: dict, results: dict[str, dict[str, list[float]]]) -> str:
    columns = [*COLUMNS, "MGP loss", "wall s"]
    lines = [f"| variant | changes | {' | '.join(columns)} |", f"|{'---|' * (len(columns) + 2)}"]
    for name, values in results.items():
        variant = recipe["variants"][name]
        changes = "; ".join(f"{k} {v}" for k, v in variant.items() if k != "_note") or "—"
        cells = [mean_std(values[c], 3 if c == "MGP loss" else 0 if c == "wall s" else 1) for c in columns]
        lines.append(f"| {name} | {changes} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def log_history(folder: Path) -> list[dict]:
    """The training log of a finished run: its last checkpoint's `trainer_state.json`."""
    last = max(folder.glob("checkpoint-*/trainer_state.json"), key=lambda f: int(f.parent.name.split("-")[1]))
    return json.loads(last.read_text())["log_history"]


def plot(runs: list[Run], work: Path, path: Path) -> None:
    """MGP validation loss per epoch (each MGP recipe) and BFT validation accuracy per epoch (each variant), for the
    first seed."""
    seed = runs[0].seed
    finetunes = [run for run in runs if run.stage == "finetune" and run.seed == seed]
    users = {run.needs: [r.cell[0] for r in finetunes if r.needs == run.needs] for run in finetunes}
    mgp = {f"{users[run.name][0]}" + (f" (+{len(users[run.name]) - 1} more)" if len(users[run.name]) > 1 else ""):
           log_history(work / run.name) for run in runs if run.stage == "pretrain" and run.name in users}  # fmt: skip
    bft = {run.cell[0]: log_history(work / run.name) for run in finetunes}
    panels = [(f"MGP: validation loss (norm-pix, seed {seed})", "eval_loss", mgp)] if mgp else []  # none: scratch only
    fig = compare_runs_figure([*panels, (f"BFT: validation accuracy (seed {seed})", "eval_accuracy", bft)])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="JSON recipe (recipes/ablation/).")
    parser.add_argument("--only", nargs="+", help="Run only these variants.")
    parser.add_argument("--seeds", nargs="+", type=int, help="Run only these of the recipe's seeds.")
    parser.add_argument("--jobs", type=int, default=1, help="Scripts run at once (each gets cores / jobs threads).")
    parser.add_argument("--work_dir", default="outputs/ablation", help="Where runs are written (and reused).")
    parser.add_argument("--output", help="Write the Markdown table here too.")
    parser.add_argument("--plot", help="Write the validation curves of the first seed here (PNG).")
    opts = parser.parse_args()
    recipe = json.loads(Path(opts.recipe).read_text())
    if opts.seeds:
        recipe["seeds"] = [seed for seed in recipe["seeds"] if seed in opts.seeds]
    work = Path(opts.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = plan(recipe, opts.only)
    execute_all(runs, work, opts.jobs)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    text = (f"Validation top-1 (%), mean ± std over seeds {recipe['seeds']}; {device}; {opts.jobs} job(s) at once "
            f"(wall per run: MGP + BFT).\n\n" + table(recipe, variant_results(runs, work)))  # fmt: skip
    if opts.output:
        Path(opts.output).write_text(text)
    if opts.plot:
        plot(runs, work, Path(opts.plot))
    print(text)


if __name__ == "__main__":
    main()
