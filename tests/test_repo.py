"""The repository's promises: CI runs the README's test command, and every recipe parses and says its source."""

import json
import re
import sys

import pytest

from conftest import REPO
from livt_hf.arguments import (
    FinetuneDataArguments,
    FinetuneModelArguments,
    FinetuningArguments,
    MixingArguments,
    PretrainDataArguments,
    PretrainingArguments,
    PretrainModelArguments,
    parse_args,
)


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    demo, test = readme_commands()[:2]
    assert "pytest" in test and "run_finetune_balanced.py" in demo
    assert test in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.json")), ids=lambda p: p.name)
def test_recipes_parse_completely(recipe, monkeypatch):
    stage = (
        (PretrainModelArguments, PretrainDataArguments, PretrainingArguments)
        if "pretrain" in recipe.name
        else (FinetuneModelArguments, FinetuneDataArguments, MixingArguments, FinetuningArguments)
    )
    monkeypatch.setattr(sys, "argv", ["script", str(recipe)])
    raw = json.loads(recipe.read_text())
    assert "Table 10" in raw["_source"]
    parsed = parse_args(*stage)
    values = {k: v for obj in parsed for k, v in vars(obj).items()}
    for key, value in raw.items():
        if not key.startswith("_"):
            assert values[key] == value, key  # no key dropped or altered on the way in
