"""benchmarks/demo_language.py's read-out (issue 20): the demo's recipe over seeds, on validation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_language.py"


@pytest.fixture(scope="module")
def bench():
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("demo_language", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # it puts its own folder on sys.path for its sibling
    finally:
        sys.path[:] = saved
    return module


def run_row(recipe: str, seed: int, bleu: float, loss: float, updates: int) -> dict:
    return {"recipe": recipe, "seed": seed, "updates": updates,
            "valid": {arch: {"sacrebleu": bleu + i, "valid_loss": loss + i / 10}
                      for i, arch in enumerate(("largest", "medium", "shallow", "smallest"))}}


def test_seeds_are_aggregated_per_recipe_and_arch(bench):
    rows = [run_row("uniform", 1, 0.5, 4.5, 800), run_row("first_half", 1, 60.0, 2.3, 740),
            run_row("uniform", 2, 0.7, 4.4, 810), run_row("first_half", 2, 64.0, 2.4, 750)]
    agg = bench.aggregate(rows)
    assert list(agg) == ["uniform", "first_half"]
    assert agg["first_half"]["seeds"] == [1, 2] and agg["first_half"]["updates"] == [740, 750]
    assert agg["first_half"]["largest"]["sacrebleu"] == {"mean": 62.0, "sd": 2.83}
    assert agg["uniform"]["smallest"]["valid_loss"] == {"mean": 4.75, "sd": 0.071}
    table = bench.markdown(agg)
    assert "| first_half | 2 | 740-750 | 62.00 (sd 2.83), 2.35 bits |" in table
    single = bench.aggregate([run_row("first400", 3, 10.0, 3.0, 700)])
    assert single["first400"]["medium"]["sacrebleu"] == {"mean": 11.0, "sd": None}


def test_recipe_flags_and_refusals(bench):
    assert bench.recipe_flags("first_half", 4.0) == ["--largest-first-minutes", "2.0"]
    assert bench.recipe_flags("first400", 4.0) == ["--largest-first", "400"]
    assert bench.recipe_flags("uniform", 4.0) == []
    for bad in (["--recipes", "sandwich"], ["--minutes", "0"]):
        run = subprocess.run([sys.executable, str(SCRIPT), *bad], capture_output=True, text=True)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert ("sandwich" in run.stderr) if bad[0] == "--recipes" else ("positive" in run.stderr)
