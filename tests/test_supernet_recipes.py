"""benchmarks/supernet_recipes.py's read-outs of a recorded sweep (issue 20): the recipe chosen on
validation loss, and the largest Arch against the plain model of the same seed on the test sets."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "supernet_recipes.py"


@pytest.fixture(scope="module")
def recipes():
    sys.path.insert(0, str(SCRIPT.parent))  # it imports its sibling train_multi30k
    try:
        spec = importlib.util.spec_from_file_location("supernet_recipes", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def result(variant: str, valid: tuple[float, float], test2016: dict, untouched: dict | None = None) -> dict:
    record = {"variant": variant, "sacrebleu": test2016,
              "valid": {"valid_loss_largest": valid[0], "valid_loss_smallest": valid[1]}}
    if untouched is not None:
        record["sacrebleu_untouched"] = untouched
    return record


def test_largest_is_paired_with_the_plain_model_of_its_own_seed(recipes):
    results = [
        result("first50", (5.5, 5.8), {"largest": 24.0, "smallest": 19.0},
               {"test2017_flickr": {"largest": 16.0, "smallest": 12.0}}),
        result("plain", (5.4, 5.4), {"plain": 22.0}, {"test2017_flickr": {"plain": 14.0}}),
        result("first50@2", (5.6, 5.9), {"largest": 23.0, "smallest": 20.0},
               {"test2017_flickr": {"largest": 15.0, "smallest": 13.0}}),
        result("plain@2", (5.5, 5.5), {"plain": 24.0}, {"test2017_flickr": {"plain": 13.0}}),
        result("first50@3", (5.6, 5.9), {"largest": 30.0, "smallest": 20.0}),  # no plain@3: left out
        result("plain_d01", (4.7, 4.7), {"plain": 29.0}),  # another baseline, never the pair
        result("uniform", (6.0, 6.3), {"largest": 12.0, "smallest": 10.0}),
    ]
    paired = recipes.paired_with_plain(results)
    assert set(paired) == {"first50", "uniform"}
    assert paired["first50"]["test2016"] == {"seeds": 2, "mean_diff": 0.5, "sd_diff": 2.12, "wins": 1,
                                             "ratio_of_means": round(23.5 / 23.0, 3)}
    assert paired["first50"]["test2017_flickr"] == {"seeds": 2, "mean_diff": 2.0, "sd_diff": 0.0, "wins": 2,
                                                    "ratio_of_means": round(15.5 / 13.5, 3)}
    assert paired["uniform"] == {"test2016": {"seeds": 1, "mean_diff": -10.0, "sd_diff": None, "wins": 0,
                                              "ratio_of_means": round(12 / 22, 3)}}
    chosen = recipes.chosen_on_valid_loss(results)
    assert chosen["recipe"] == "first50" and chosen["recipes"]["first50"]["seeds"] == 3  # plain never competes
    assert recipes.test_summary(results)["first50"]["largest"]["test2017_flickr"] == {"seeds": 2, "mean": 15.5,
                                                                                      "sd": 0.71}


def test_choose_from_prints_the_recorded_cpu_runs_and_refuses_other_json(tmp_path):
    recorded = SCRIPT.parent / "results" / "supernet_recipes_cpu.json"
    shown = json.loads(subprocess.run([sys.executable, str(SCRIPT), "--choose-from", str(recorded)],
                                      capture_output=True, text=True, check=True).stdout)
    seeds = {r["variant"] for r in json.loads(recorded.read_text())["results"]}
    assert shown["chosen_on_valid_loss"]["recipe"] == "first50"
    pairs = shown["largest_minus_plain"]["first50"]
    assert set(pairs) == {"test2016", "test2017_flickr", "test2017_mscoco", "test2018_flickr"}
    assert all(p["seeds"] == len(seeds) // 2 for p in pairs.values())
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    run = subprocess.run([sys.executable, str(SCRIPT), "--choose-from", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2 and "not a sweep's JSON" in run.stderr and "Traceback" not in run.stderr
