#!/usr/bin/env python
"""Reproduce the papers' claims on Fashion-MNIST-LT with one command: every run through the two scripts, seeds
aggregated, the table written to docs/RESULTS.md.

    python benchmarks/reproduce.py recipes/reproduce/fmnist_lt_h100.json        # the whole table (one GPU)
    python benchmarks/reproduce.py recipes/reproduce/fmnist_lt_h100.json --only main   # or in parts: main, ablations
    python benchmarks/reproduce.py recipes/reproduce/fmnist_lt_h100.json --starts lt    # … or by starting point

Cells (LiVT and UniMix's claims; each over the recipe's seeds):
- main: for each ρ, fine-tuning from scratch (a randomly initialised ViTMAE) or after MGP on the LT split, with each
  loss (CE, BCE, Bal-CE = Bayias, Bal-BCE) and the default mixing;
- ablations at the first ρ, Bal-BCE after MGP: τ; the mixing method; MGP on a balanced split of the same size.
Runs already finished in `--work_dir` are reused, so an interrupted reproduction continues where it stopped. Model
selection uses the validation split only; each run reads its test split once, at its end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import HfArgumentParser

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from livt_hf.arguments import PretrainModelArguments  # noqa: E402
from livt_hf.mae import new_vitmae, new_vitmae_config  # noqa: E402

METRICS = ("accuracy", "many_accuracy", "medium_accuracy", "few_accuracy", "head_accuracy", "middle_accuracy",
           "tail_accuracy")  # fmt: skip
COLUMNS = ("overall", "many", "medium", "few", "head", "middle", "tail", "ECE", "wall s / run")


@dataclass
class Run:
    """One script invocation; `cell` names the table row it counts towards (seeds are averaged per cell)."""

    stage: str  # "pretrain" | "finetune" | "scratch" (a random ViTMAE checkpoint, no training)
    name: str
    flags: dict
    cell: tuple = ()
    needs: str | None = None  # the MGP / scratch run whose checkpoint a fine-tune starts from
    seed: int = 0


def plan(recipe: dict, only: str | None, starts: list[str] | None = None) -> list[Run]:
    """Every run of the table, pretraining first; `only` keeps the BFT runs of one part, `starts` those from the
    named starting points ('scratch', 'lt', 'balanced'), and what they need."""
    seeds, ratios = recipe["seeds"], recipe["imbalance_ratios"]
    data, mixings = recipe["data"], recipe["mixing_flags"]
    default_mixing, rho0 = recipe["default_mixing"], ratios[0]

    def finetune(part, start, rho, loss, seed, tau=1.0, mixing=default_mixing):
        name = f"bft-{start}-rho{rho:g}-{loss}-tau{tau:g}-{mixing}-s{seed}"
        flags = data | recipe["finetune"] | mixings.get(mixing, {}) | {
            "imbalance_ratio": rho, "loss": loss, "tau": tau, "mixing": mixing, "seed": seed,
        }  # fmt: skip
        return Run("finetune", name, flags, (part, start, rho, loss, tau, mixing), start_name(start, rho, seed), seed)

    def start_name(start, rho, seed):
        return f"scratch-s{seed}" if start == "scratch" else f"mgp-{start}-rho{rho:g}-s{seed}"

    bft = []
    for seed in seeds:
        for rho in ratios:
            for start in ("scratch", "lt"):
                bft += [finetune("main", start, rho, loss, seed) for loss in recipe["losses"]]
        bft += [finetune("ablations", "lt", rho0, "bal_bce", seed, tau=tau) for tau in recipe["taus"] if tau != 1.0]
        bft += [finetune("ablations", "lt", rho0, "bal_bce", seed, mixing=m) for m in mixings if m != default_mixing]
        bft.append(finetune("ablations", "balanced", rho0, "bal_bce", seed))
    bft = [r for r in bft if (only is None or r.cell[0] == only) and (starts is None or r.cell[1] in starts)]
    needed = {r.needs for r in bft}
    starts = []
    for seed in seeds:
        starts.append(Run("scratch", f"scratch-s{seed}", {}, seed=seed))
        for rho in ratios:
            starts.append(Run("pretrain", f"mgp-lt-rho{rho:g}-s{seed}", data | recipe["pretrain"] | {
                "imbalance_ratio": rho, "seed": seed}, seed=seed))  # fmt: skip
        starts.append(Run("pretrain", f"mgp-balanced-rho{rho0:g}-s{seed}", data | recipe["pretrain"] | {
            "imbalance_ratio": rho0, "balanced": True, "seed": seed}, seed=seed))  # fmt: skip
    return [r for r in starts if r.name in needed] + bft


def execute(run: Run, work: Path, recipe: dict) -> None:
    out = work / run.name
    if (out / "run_config.json").exists() or (run.stage == "scratch" and (out / "config.json").exists()):
        return  # finished earlier
    start = time.perf_counter()
    if run.stage == "scratch":
        torch.manual_seed(run.seed)
        (model_args,) = HfArgumentParser(PretrainModelArguments).parse_dict(
            {k: v for k, v in recipe["pretrain"].items() if k in PretrainModelArguments.__dataclass_fields__}
        )
        new_vitmae(new_vitmae_config(model_args, model_args.num_channels or 1)).save_pretrained(out)
    else:
        script = "run_pretrain_mae.py" if run.stage == "pretrain" else "run_finetune_balanced.py"
        flags = run.flags | {"output_dir": str(out), "overwrite_output_dir": True}
        if run.stage == "finetune":
            flags["mae_checkpoint"] = str(work / run.needs)
        recipe_file = work / f"{run.name}.json"
        recipe_file.write_text(json.dumps(flags, indent=1))
        log = work / f"{run.name}.log"
        with log.open("w") as stream:
            done = subprocess.run([sys.executable, str(REPO / script), str(recipe_file)], stdout=stream,
                                  stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{run.name} failed (exit {done.returncode}); its log: {log}")
    (work / f"{run.name}.wall").write_text(f"{time.perf_counter() - start:.1f}")


def cell_results(runs: list[Run], work: Path) -> dict[tuple, dict[str, list[float]]]:
    """Per cell, each column's values over the seeds (percent for accuracies)."""
    cells: dict[tuple, dict[str, list[float]]] = {}
    for run in runs:
        if run.stage != "finetune":
            continue
        result = json.loads((work / run.name / "results.json").read_text())
        values = cells.setdefault(run.cell, {c: [] for c in COLUMNS})
        for column, key in zip(COLUMNS, METRICS):
            if key in result["metrics"]:
                values[column].append(100 * result["metrics"][key])
        values["ECE"].append(result["calibration"]["as trained"]["ece"])
        values["wall s / run"].append(float((work / f"{run.name}.wall").read_text()))
    return cells


def mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


def table(cells: dict, part: str, keys: tuple[str, ...]) -> str:
    head = f"| {' | '.join(keys)} | {' | '.join(COLUMNS)} |\n|{'---|' * (len(keys) + len(COLUMNS))}\n"
    rows = []
    for cell, values in cells.items():
        if cell[0] != part:
            continue
        described = dict(zip(("part", "start", "ρ", "loss", "τ", "mixing"), cell))
        numbers = [mean_std(values[c], 3 if c == "ECE" else 0 if c.startswith("wall") else 2) for c in COLUMNS]
        rows.append(f"| {' | '.join(str(described[k]) for k in keys)} | {' | '.join(numbers)} |")
    return head + "\n".join(rows) + "\n"


def report(recipe_path: str, recipe: dict, runs: list[Run], work: Path) -> str:
    cells = cell_results(runs, work)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    splits = {}
    for run in runs:
        if run.stage == "finetune" and run.cell[2] not in splits:
            split = json.loads((work / run.name / "lt_split.json").read_text())
            splits[run.cell[2]] = f"train {split['train_counts']}, validation {split['validation_counts']}, test " \
                                  f"{sum(split['test_counts'])} images"  # fmt: skip
    lines = [
        "# Reproduction on Fashion-MNIST-LT\n",
        f"Command: `python benchmarks/reproduce.py {recipe_path}`; commit {commit.strip()}; {device}; "
        f"seeds {recipe['seeds']}. Test top-1 (%) by group and ECE (15 bins, as trained): mean ± std over seeds. "
        "Models chosen on the validation split; each run reads the test split once, at its end.\n",
        *(f"- ρ = {rho:g}: {text}" for rho, text in splits.items()),
        "\n## Main table: from scratch vs MGP on the LT split, by loss (default mixing: "
        f"{recipe['default_mixing']})\n",
        table(cells, "main", ("start", "ρ", "loss")),
        "## Ablations (Bal-BCE after MGP, first ρ)\n",
        table(cells, "ablations", ("start", "τ", "mixing")),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="JSON recipe (recipes/reproduce/).")
    parser.add_argument("--only", choices=["main", "ablations"], help="Run one part of the table.")
    parser.add_argument("--starts", nargs="+", choices=["scratch", "lt", "balanced"],
                        help="Only the fine-tunes from these starting points (default: all).")
    parser.add_argument("--work_dir", default="outputs/reproduce", help="Where runs are written (and reused).")
    parser.add_argument("--output", default="docs/RESULTS.md", help="The Markdown table.")
    opts = parser.parse_args()
    recipe = json.loads(Path(opts.recipe).read_text())
    work = Path(opts.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = plan(recipe, opts.only, opts.starts)
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run.name}", flush=True)
        execute(run, work, recipe)
    text = report(opts.recipe, recipe, runs, work)
    Path(opts.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
