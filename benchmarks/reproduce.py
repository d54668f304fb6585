#!/usr/bin/env python
"""Reproduce the papers' claims on Fashion-MNIST-LT with one command: every run through the two scripts, seeds
aggregated, the simple baselines beside them and a verdict per claim, written to docs/RESULTS.md.

    python benchmarks/reproduce.py recipes/reproduce/fmnist_lt_cpu.json --jobs 2      # the whole table (2 cores)
    python benchmarks/reproduce.py recipes/reproduce/fmnist_lt_cpu.json --seeds 0     # or in parts: one seed, …
    python benchmarks/reproduce.py recipes/reproduce/fmnist_lt_cpu.json --only main   # … one part, …
    python benchmarks/reproduce.py recipes/reproduce/fmnist_lt_cpu.json --starts lt   # … or one starting point

Cells (LiVT and UniMix's claims):
- main, over `seeds`: for each ρ, fine-tuning from scratch (a randomly initialised ViTMAE) or after MGP on the LT
  split, with each loss (CE, BCE, Bal-CE = Bayias, Bal-BCE) and the recipe's fine-tuning flags;
- ablations at the first ρ, over `ablation_seeds`: named changes to the Bal-BCE-after-MGP cell (τ, mixing, NT-BCE*;
  `"start": "balanced"` for MGP on a balanced split of the same size);
- baselines: benchmarks/baselines.py on each ρ's split, over the seeds.
Finished runs in `--work_dir` are reused and a stopped one continues from its last complete checkpoint, so a table
can be run in parts and after a stop. Model selection uses the validation split only; each run reads its test split
once, at its end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import HfArgumentParser

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from baselines import METRICS, markdown_table, mean_std  # noqa: E402  # benchmarks/, this script's folder
from livt_hf.arguments import PretrainModelArguments  # noqa: E402
from livt_hf.losses import LOSSES  # noqa: E402
from livt_hf.mae import new_vitmae, new_vitmae_config  # noqa: E402
from livt_hf.runs import last_complete_checkpoint  # noqa: E402

# T: the temperature fitted on validation (below 1: the model is under-confident, and scaling sharpens it)
COLUMNS = ("overall", "many", "medium", "few", "head", "middle", "tail", "ECE", "ECE (T)", "T", "wall s / run")
# UniMix Table 2 / D1's measures, as trained
CALIBRATION = {"ECE": "ece", "MCE": "mce", "ACE": "ace", "TACE": "tace", "SCE": "sce", "Brier": "brier", "NLL": "nll"}
THREE_DIGITS = (*CALIBRATION, "ECE (T)", "T")  # the columns shown with 3 decimals (accuracies have 2)
SCRIPTS = {"pretrain": "run_pretrain_mae.py", "finetune": "run_finetune_balanced.py",
           "baselines": "benchmarks/baselines.py"}  # fmt: skip
FINISHED = {"pretrain": "run_config.json", "finetune": "run_config.json", "baselines": "baselines.json",
            "scratch": "config.json"}  # fmt: skip  # written last by each stage
REFERENCE = "reference"  # the ablations' row of the main cell they change
NOTES = "\n## Notes\n\n<!-- Hand-written below this line; the script keeps it when it rewrites the table above. -->\n"


@dataclass
class Run:
    """One script invocation; `cell` names the table row it counts towards (seeds are averaged per cell)."""

    stage: str  # "pretrain" | "finetune" | "baselines" | "scratch" (a random ViTMAE checkpoint, no training)
    name: str
    flags: dict
    cell: tuple = ()  # ("main", start, ρ, loss) | ("ablations", start, ρ, label) | ("baselines", ρ)
    needs: str | None = None  # the MGP / scratch run whose checkpoint a fine-tune starts from
    seed: int = 0


def plan(recipe: dict, only: str | None = None, starts: list[str] | None = None, seeds: list[int] | None = None
         ) -> list[Run]:  # fmt: skip
    """Every run of the table, seed by seed (a table stopped half-way has whole seeds): the seed's baselines, then
    its fine-tunes, each start just before the first fine-tune that needs it. `only` keeps one part ('main',
    'ablations', 'baselines'), `starts` the fine-tunes from these starting points ('scratch', 'lt', 'balanced'),
    `seeds` these seeds."""
    data, rho0 = recipe["data"], recipe["imbalance_ratios"][0]
    chosen = [s for s in recipe["seeds"] if seeds is None or s in seeds]

    def start_run(start: str, rho: float, seed: int) -> Run:
        if start == "scratch":
            return Run("scratch", f"scratch-s{seed}", recipe["pretrain"], seed=seed)
        balanced = {"balanced": True} if start == "balanced" else {}
        flags = data | recipe["pretrain"] | {"imbalance_ratio": rho, "seed": seed} | balanced
        return Run("pretrain", f"mgp-{start}-rho{rho:g}-s{seed}", flags, seed=seed)

    def finetune(part: str, start: str, rho: float, label: str, seed: int, changes: dict) -> Run:
        flags = data | recipe["finetune"] | {"imbalance_ratio": rho, "seed": seed} | changes
        return Run("finetune", f"bft-{start}-rho{rho:g}-{label}-s{seed}", flags, (part, start, rho, label),
                   start_run(start, rho, seed).name, seed)  # fmt: skip

    def kept(run: Run) -> bool:
        return (only or run.cell[0]) == run.cell[0] and (starts is None or run.cell[1] in starts)

    runs: dict[str, Run] = {}
    for seed in chosen:
        if (only or "baselines") == "baselines":  # first in each seed: they need no start and take minutes
            for rho in recipe["imbalance_ratios"]:
                name, flags = f"baselines-rho{rho:g}-s{seed}", data | {"imbalance_ratio": rho, "seeds": [seed]}
                runs[name] = Run("baselines", name, flags | recipe["baselines"], ("baselines", rho), seed=seed)
        wanted = [finetune("main", start, rho, loss, seed, {"loss": loss})
                  for rho in recipe["imbalance_ratios"] for start in ("scratch", "lt") for loss in recipe["losses"]]
        wanted = [run for run in wanted if kept(run)]
        if seed in recipe["ablation_seeds"]:
            ablations = [finetune("ablations", changes.get("start", "lt"), rho0, label, seed,
                                  {"loss": "bal_bce"} | {k: v for k, v in changes.items() if k != "start"})
                         for label, changes in recipe["ablations"].items()]  # fmt: skip
            ablations = [run for run in ablations if kept(run)]
            if ablations:  # with the main cell they change, their reference row
                wanted += [finetune("main", "lt", rho0, "bal_bce", seed, {"loss": "bal_bce"}), *ablations]
        for run in wanted:
            start = start_run(run.cell[1], run.cell[2], seed)
            runs.setdefault(start.name, start)
            runs.setdefault(run.name, run)
    return list(runs.values())


def command_line(flags: dict) -> list[str]:
    """The scripts' flags (HfArgumentParser): `--name value`, lists as several values."""
    words = []
    for name, value in flags.items():
        words += [f"--{name}", *map(str, value if isinstance(value, list) else [value])]
    return words


def run_command(run: Run, work: Path) -> list[str]:
    out = work / run.name
    if run.stage == "baselines":
        threads = os.environ.get("OMP_NUM_THREADS")
        flags = run.flags | {"output": str(out / "baselines.json"), "markdown": str(out / "baselines.md")}
        flags |= {"num_threads": int(threads)} if threads else {}
    else:
        flags = run.flags | {"output_dir": str(out)}
        if run.stage == "finetune":
            flags["mae_checkpoint"] = str(work / run.needs)
        resumable = out.is_dir() and last_complete_checkpoint(out) is not None
        flags |= {"resume_from_checkpoint": "last"} if resumable else {"overwrite_output_dir": True}
    return ["python", SCRIPTS[run.stage], *command_line(flags)]


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")


def finished(run: Run, work: Path) -> bool:
    return (work / run.name / FINISHED[run.stage]).exists() and (work / f"{run.name}.run.json").exists()


def execute(run: Run, work: Path) -> None:
    """Run one script (or save a random ViTMAE) unless it finished earlier; record its wall time, commit, command."""
    out = work / run.name
    if finished(run, work):
        return
    start, command = time.perf_counter(), None
    if run.stage == "scratch":
        torch.manual_seed(run.seed)
        (model_args,) = HfArgumentParser(PretrainModelArguments).parse_dict(
            {k: v for k, v in run.flags.items() if k in PretrainModelArguments.__dataclass_fields__}
        )
        new_vitmae(new_vitmae_config(model_args, model_args.num_channels or 1)).save_pretrained(out)
    else:
        command = run_command(run, work)
        out.mkdir(parents=True, exist_ok=True)
        log = work / f"{run.name}.log"
        with log.open("a") as stream:
            done = subprocess.run([sys.executable, *command[1:]], stdout=stream, stderr=subprocess.STDOUT, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"{run.name} failed (exit {done.returncode}); its log: {log}")
    record = {"wall_s": round(time.perf_counter() - start, 1), "commit": git_commit(), "command": command and
              shlex.join(command), "torch_threads": os.environ.get("OMP_NUM_THREADS"),
              "resumed": bool(command and "--resume_from_checkpoint" in command)}  # fmt: skip  # wall: this part only
    (work / f"{run.name}.run.json").write_text(json.dumps(record, indent=1))


def execute_all(runs: list[Run], work: Path, jobs: int) -> None:
    """`jobs` runs at once, taken in plan order once the run they need has finished. They share the cores (or the
    OMP_NUM_THREADS already set): each gets cores / jobs threads."""
    cores = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
    names, pending, running, finished = {r.name for r in runs}, list(runs), {}, set()
    with ThreadPoolExecutor(jobs) as pool:
        while pending or running:
            ready = [r for r in pending if r.needs is None or r.needs in finished or r.needs not in names]
            for run in ready[: jobs - len(running)]:
                pending.remove(run)
                print(f"[{len(runs) - len(pending)}/{len(runs)}] {run.name}", flush=True)
                running[pool.submit(execute, run, work)] = run
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a failed run stops the table; its log says why
                finished.add(running.pop(future).name)


def run_record(work: Path, name: str) -> dict:
    return json.loads((work / f"{name}.run.json").read_text())


def run_machine(run: Run, work: Path) -> str:
    """The machine a run trained on, as its own record says (run_config.json, or baselines.json); "—" for a saved
    random ViTMAE, which trains nothing."""
    if run.stage == "scratch":
        return "—"
    where = json.loads((work / run.name / FINISHED[run.stage]).read_text()).get("machine")
    if where is None:
        return "not recorded"
    return f"{where['cpu']} ({where['cpu_cores']} cores){'' if where['device'] == 'cpu' else ', ' + where['device']}"


def cell_results(runs: list[Run], work: Path) -> dict[tuple, dict[str, list[float]]]:
    """Per cell, each column's values over the seeds (percent for accuracies), and the seeds."""
    cells: dict[tuple, dict[str, list[float]]] = {}
    for run in runs:
        if run.stage != "finetune":
            continue
        result = json.loads((work / run.name / "results.json").read_text())
        values = cells.setdefault(run.cell, {c: [] for c in (*COLUMNS, *CALIBRATION, "seeds")})
        for column, key in zip(COLUMNS, METRICS):
            if key in result["metrics"]:
                values[column].append(100 * result["metrics"][key])
        as_trained, scaled = result["calibration"].values()
        for column, key in CALIBRATION.items():
            values[column].append(as_trained[key])
        values["ECE (T)"].append(scaled["ece"])
        values["T"].append(result["temperature"])
        values["wall s / run"].append(run_record(work, run.name)["wall_s"])
        values["seeds"].append(run.seed)
    return cells


def table(rows: dict[str, dict[str, list[float]]], keys: tuple[str, ...], columns: tuple[str, ...] = COLUMNS) -> str:
    """A Markdown table: one row per described cell (its key columns joined by ' | '), with its number of seeds;
    accuracies with 2 decimals, calibration with 3, wall seconds with none."""
    head = f"| {' | '.join(keys)} | seeds | {' | '.join(columns)} |\n|{'---|' * (len(keys) + 1 + len(columns))}\n"
    lines = []
    for described, values in rows.items():
        numbers = [mean_std(values[c], 3 if c in THREE_DIGITS else 0 if c.startswith("wall") else 2) for c in columns]
        lines.append(f"| {described} | {len(values['seeds'])} | {' | '.join(numbers)} |")
    return head + "\n".join(lines) + "\n"


def difference(a: dict, b: dict, column: str) -> tuple[float, float | None]:
    """mean(a) − mean(b) and twice its standard error; a one-seed side takes the other side's seed spread (the
    noise of one run), and with one seed on both sides there is no noise estimate (None)."""
    x, y = a[column], b[column]
    spreads = [statistics.variance(v) for v in (x, y) if len(v) > 1]
    if not spreads:
        return statistics.mean(x) - statistics.mean(y), None
    variance = statistics.mean(spreads)
    return statistics.mean(x) - statistics.mean(y), 2 * math.sqrt(variance / len(x) + variance / len(y))


def verdict(what: str, a: dict | None, b: dict | None, column: str, expect: str, paper: str) -> str:
    """One claim's line: the difference with its noise, and holds / does not hold / within noise. `expect` is
    'higher', 'lower' (a against b) or 'close'."""
    if a is None or b is None or not a[column] or not b[column]:
        return f"- {what}: not measured ({paper})."
    d, noise = difference(a, b, column)
    within = noise is not None and abs(d) <= noise
    if expect == "close":
        word = "within noise: holds" if within else "does not hold" if noise is not None else "one seed: not judged"
    elif within:
        word = "within noise"
    else:
        word = "holds" if (d > 0) == (expect == "higher") else "does not hold"
        word += "" if noise is not None else " (one seed, no noise estimate)"
    digits = 3 if column in THREE_DIGITS else 2
    spread = f"2 SE = {noise:.{digits}f}" if noise is not None else "one seed each"
    return (f"- {what}: {mean_std(a[column], digits)} vs {mean_std(b[column], digits)}, difference "
            f"{d:+.{digits}f} ({spread}): **{word}** ({paper}).")  # fmt: skip


def verdicts(recipe: dict, cells: dict) -> list[str]:
    """The papers' claims, each judged on the two cells that test it."""
    rho0, table11 = recipe["imbalance_ratios"][0], "LiVT Supp. Table 11: +14.7 few / +4.6 overall on ImageNet-LT"

    def ablation(start: str = "lt", loss: str | None = None) -> dict | None:
        return next((v for k, v in cells.items() if k[:3] == ("ablations", start, rho0)
                     and (loss is None or recipe["ablations"].get(k[3], {}).get("loss") == loss)), None)  # fmt: skip

    claims = []
    for rho in recipe["imbalance_ratios"]:
        main = {(start, loss): cells.get(("main", start, rho, loss)) for start in ("scratch", "lt") for loss in LOSSES}
        at = f"ρ = {rho:g}"
        claims += [
            (f"Bal-BCE vs BCE after MGP, few ({at})", main["lt", "bal_bce"], main["lt", "bce"], "few", "higher", table11),
            (f"Bal-BCE vs BCE after MGP, overall ({at})", main["lt", "bal_bce"], main["lt", "bce"], "overall", "higher",
             table11),
            (f"Bal-BCE vs Bal-CE after MGP, overall ({at})", main["lt", "bal_bce"], main["lt", "bal_ce"], "overall",
             "higher", "LiVT: Bal-BCE ahead"),
            (f"MGP vs scratch, Bal-BCE, overall ({at})", main["lt", "bal_bce"], main["scratch", "bal_bce"], "overall",
             "higher", "LiVT: MGP far ahead"),
            *((f"Bayias (Bal-CE) vs CE, ECE as trained ({start}, {at})", main[start, "bal_ce"], main[start, "ce"], "ECE",
               "lower", "UniMix Table 2: lower") for start in ("scratch", "lt")),
            *((f"Bayias (Bal-CE) vs CE, SCE (every class's probability) as trained ({start}, {at})",
               main[start, "bal_ce"], main[start, "ce"], "SCE", "lower", "UniMix Table D1: lower")
              for start in ("scratch", "lt")),
        ]  # fmt: skip
    reference = cells.get(("ablations", "lt", rho0, REFERENCE))
    claims += [
        (f"NT-BCE* (λ > 1) vs Bal-BCE after MGP, overall (ρ = {rho0:g})", ablation(loss="nt_bce_bal"), reference,
         "overall", "lower", "LiVT Supp. E.3, Fig. 6: negative tolerance only lowers Bal-BCE"),
        (f"MGP on the LT split vs on a balanced split of the same size, Bal-BCE, overall (ρ = {rho0:g})", reference,
         ablation("balanced"), "overall", "close", "LiVT: close, ImageNet-LT vs ImageNet-BAL"),
    ]  # fmt: skip
    return [verdict(*claim) for claim in claims]


def changes(flags: dict) -> str:
    return "; ".join(f"{k} {v}" for k, v in flags.items()) or "—"


def report(command: str, recipe: dict, runs: list[Run], work: Path, planned: int) -> str:
    """The Markdown of `runs` (finished), out of `planned` runs."""
    cells = cell_results(runs, work)
    rho0 = recipe["imbalance_ratios"][0]
    reference = cells.get(("main", "lt", rho0, "bal_bce"))
    if reference:  # the ablations' reference row: the main cell they change, at the ablation seeds
        keep = [i for i, s in enumerate(reference["seeds"]) if s in recipe["ablation_seeds"]]
        cells[("ablations", "lt", rho0, REFERENCE)] = {c: [v[i] for i in keep] if v else []
                                                       for c, v in reference.items()}  # fmt: skip
    splits = {}
    for run in runs:
        if run.stage == "finetune" and run.cell[2] not in splits:
            split = json.loads((work / run.name / "lt_split.json").read_text())
            splits[run.cell[2]] = split
    main_rows = {f"{k[1]} | {k[2]:g} | {k[3]}": v for k, v in cells.items() if k[0] == "main"}
    records = {run.name: run_record(work, run.name) | {"machine": run_machine(run, work)} for run in runs}
    threads = sorted({str(r["torch_threads"]) for r in records.values()})
    machines = sorted({r["machine"] for r in records.values()} - {"—"})
    machine = f"{' and '.join(machines)}, {' or '.join(threads)} torch thread(s) per run"
    lines = [
        "# Reproduction on Fashion-MNIST-LT\n",
        f"Command: `{command}`; commits {sorted({r['commit'] for r in records.values()})}; {machine}. Test top-1 (%) "
        "by group; ECE (15 bins) as trained and after temperature scaling fitted on validation, T that temperature "
        "(below 1: under-confident); mean ± std over the seeds. Models chosen on the validation split; each run reads "
        "the test split once, at its end. Wall time: "
        f"{sum(r['wall_s'] for r in records.values()) / 3600:.1f} h summed over {len(runs)} runs.\n",
        *([f"**Partial: {len(runs)} of the {planned} planned runs have finished**; each cell shows the seeds it has so "
           "far.\n"] if len(runs) < planned else []),  # fmt: skip
        *(f"- ρ = {rho:g}: train {s['train_counts']} ({sum(s['train_counts'])} images), validation "
          f"{sum(s['validation_counts'])}, test {sum(s['test_counts'])}" for rho, s in splits.items()),  # fmt: skip
        "\n## The claims\n",
        *verdicts(recipe, cells),
        f"\n## Main table: from scratch vs MGP on the LT split, by loss (seeds {recipe['seeds']})\n",
        table(main_rows, ("start", "ρ", "loss")),
        "## Calibration of the main cells (test, as trained)\n\nUniMix's measures (Table 2, D1; 15 bins, TACE above "
        "10⁻³) and T, the temperature fitted on validation (below 1: under-confident, scaling sharpens it).\n",
        table(main_rows, ("start", "ρ", "loss"), (*CALIBRATION, "T")),
        f"## Ablations (Bal-BCE after MGP, ρ = {rho0:g}, seeds {recipe['ablation_seeds']})\n",
        table({f"{k[3]} | {changes(recipe['ablations'].get(k[3], {}))}": cells[k] for k in
               sorted((k for k in cells if k[0] == "ablations"), key=lambda k: k[3] != REFERENCE)},
              ("ablation", "flags")),
        "## Baselines on the same splits\n",
    ]
    for rho in recipe["imbalance_ratios"]:
        results = [json.loads((work / r.name / "baselines.json").read_text()) for r in runs
                   if r.cell == ("baselines", rho)]  # fmt: skip
        for result in results:
            if rho in splits and result["split"]["train_counts"] != splits[rho]["train_counts"]:
                raise ValueError(f"The baselines at ρ = {rho:g} trained on {result['split']['train_counts']}, the "
                                 f"runs on {splits[rho]['train_counts']}: keep every data flag in the recipe's 'data'.")
        if results:
            rows = [row for result in results for row in result["rows"]]
            lines.append(f"### ρ = {rho:g}\n\nSeeds {sorted({r['seed'] for r in rows})}: mean ± std; "
                         f"{rows[0]['epochs']} epochs, Adam, no augmentation, epoch chosen on validation.\n\n"
                         f"{markdown_table(rows)}")  # fmt: skip
    lines.append("## Every run\n\n| run | wall s | commit | machine | command |\n|---|---|---|---|---|")
    lines += [f"| {name} | {r['wall_s']:.0f}{' (the resumed part)' * r.get('resumed', False)} | {r['commit']} | "
              f"{r['machine']} | `{r['command'] or 'a random ViTMAE (MAE init)'}` |" for name, r in records.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def with_notes(table: str, previous: str) -> str:
    """The table with the hand-written notes (causes found for the claims) that followed NOTES in the file it
    replaces, so a rewritten table keeps them."""
    return table + NOTES + (previous.split(NOTES, 1)[1] if NOTES in previous else "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="JSON recipe (recipes/reproduce/).")
    parser.add_argument("--only", choices=["main", "ablations", "baselines"], help="Run one part of the table.")
    parser.add_argument("--starts", nargs="+", choices=["scratch", "lt", "balanced"],
                        help="Only the fine-tunes from these starting points (default: all).")
    parser.add_argument("--seeds", nargs="+", type=int, help="Only these of the recipe's seeds.")
    parser.add_argument("--jobs", type=int, default=1,
                        help="Runs at once; each gets cores (or OMP_NUM_THREADS if set) / jobs threads.")
    parser.add_argument("--work_dir", default="outputs/reproduce", help="Where runs are written (and reused).")
    parser.add_argument("--output", default="docs/RESULTS.md", help="The Markdown table.")
    parser.add_argument("--report_only", action="store_true",
                        help="Train nothing: the table of the runs finished so far (another process may be running).")
    opts = parser.parse_args()
    recipe = json.loads(Path(opts.recipe).read_text())
    work = Path(opts.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = plan(recipe, opts.only, opts.starts, opts.seeds)
    if not opts.report_only:
        execute_all(runs, work, opts.jobs)
    done = [run for run in runs if finished(run, work)]
    text = report(shlex.join(["python", "benchmarks/reproduce.py", *sys.argv[1:]]), recipe, done, work, len(runs))
    output = Path(opts.output)
    text = with_notes(text, output.read_text() if output.exists() else "")
    output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
