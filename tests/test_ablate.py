"""benchmarks/ablate.py: the runs it plans (MGP shared by variants with the same MGP recipe, seed by seed) and the
table it makes from finished runs' validation metrics (checked without training)."""

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from ablate import plan, table, variant_results  # noqa: E402

RECIPE = {
    "seeds": [0, 1],
    "base": {"pretrain": {"num_train_epochs": 12}, "finetune": {"crop_min_scale": 0.35, "loss": "bal_bce"}},
    "variants": {
        "base": {},
        "crop": {"finetune": {"crop_min_scale": 1.0}},
        "mask": {"pretrain": {"mask_ratio": 0.5}},
        "scratch": {"start": "scratch"},
    },
}


def test_variants_share_an_mgp_run_only_when_its_recipe_is_the_same():
    runs = plan(RECIPE)
    starts = [r for r in runs if r.stage != "finetune"]
    finetunes = [r for r in runs if r.stage == "finetune"]
    assert len(starts) == 2 * 3 and len(finetunes) == 2 * 4  # per seed: base MGP, mask-0.5 MGP, a random start
    assert runs[: len(starts)] == starts  # every start comes before the fine-tunes that need it
    assert [r.seed for r in finetunes] == [0, 0, 0, 0, 1, 1, 1, 1]  # seed by seed
    by_cell = {(r.cell[0], r.seed): r for r in finetunes}
    assert by_cell["base", 0].needs == by_cell["crop", 0].needs != by_cell["mask", 0].needs
    assert by_cell["base", 0].needs != by_cell["base", 1].needs  # each seed its own MGP
    assert by_cell["scratch", 1].needs.endswith("-s1-scratch")
    assert by_cell["crop", 1].flags == {"crop_min_scale": 1.0, "loss": "bal_bce", "seed": 1}
    mask_start = next(r for r in starts if r.name == by_cell["mask", 0].needs)
    assert mask_start.flags == {"num_train_epochs": 12, "mask_ratio": 0.5, "seed": 0}
    assert [r.cell[0] for r in plan(RECIPE, only=["crop"]) if r.stage == "finetune"] == ["crop", "crop"]


def test_the_table_averages_each_variants_validation_numbers_over_seeds(tmp_path):
    recipe = RECIPE | {"variants": {"crop": {"finetune": {"crop_min_scale": 1.0}}}}
    runs = plan(recipe)
    for run, accuracy, wall in zip([r for r in runs if r.stage == "finetune"], (0.70, 0.74), (100.0, 120.0)):
        (tmp_path / run.name).mkdir()
        metrics = {"eval_accuracy": accuracy, "eval_head_accuracy": 0.9, "eval_middle_accuracy": 0.6,
                   "eval_tail_accuracy": accuracy - 0.1}  # fmt: skip
        (tmp_path / run.name / "eval_results.json").write_text(json.dumps(metrics))
        (tmp_path / f"{run.name}.run.json").write_text(json.dumps({"wall_s": wall}))
    for run in (r for r in runs if r.stage == "pretrain"):
        (tmp_path / run.name).mkdir()
        (tmp_path / run.name / "eval_results.json").write_text(json.dumps({"eval_loss": 0.8 if run.seed else 0.7}))
        (tmp_path / f"{run.name}.run.json").write_text(json.dumps({"wall_s": 50.0}))
    text = table(recipe, variant_results(runs, tmp_path))
    # overall (70 + 74) / 2 = 72.0, sample std 2.83; tail 62 ± 2.8; MGP loss 0.75 ± 0.071; wall MGP + BFT 160 ± 14
    row = text.splitlines()[-1]
    assert row == ("| crop | finetune {'crop_min_scale': 1.0} | 72.0 ± 2.8 | 90.0 ± 0.0 | 60.0 ± 0.0 | 62.0 ± 2.8 | "
                   "0.750 ± 0.071 | 160 ± 14 |")  # fmt: skip


def test_the_curves_plot_each_runs_logged_key_against_the_epoch():
    from livt_hf.plots import compare_runs_figure

    history = [{"epoch": 1.0, "step": 5, "eval_loss": 0.8}, {"epoch": 1.5, "step": 7, "loss": 2.0},
               {"epoch": 2.0, "step": 10, "eval_loss": 0.6}]  # fmt: skip
    fig = compare_runs_figure([("MGP", "eval_loss", {"a": history, "b": history[:1]})])
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert lines[0].get_xydata().tolist() == [[1.0, 0.8], [2.0, 0.6]]  # epochs, not steps; other keys left out
