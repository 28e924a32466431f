"""Benchmark: the demo's supernet recipe on the demo's synthetic language, over seeds (not in CI).

BENCHMARKS.md "The demo's language" chose the demo's recipe (the largest Arch alone for the
first half of the 4-minute budget, then HAT's sampling) from one run per recipe. This re-runs the
comparison with seeds: for each recipe and seed, a SuperTransformer trained for the demo's
budget with the demo's settings (lr 1e-3, 100 warmup updates, dropout 0.1, 1,024 tokens per
batch, 2 threads, 1,000-piece vocabulary), then the demo's baseline Archs (largest, medium,
shallow, smallest) extracted and scored on the VALIDATION split (greedy SacreBLEU and loss in
bits, 200 sentences). Nothing here touches a test split: it is how the demo's recipe is chosen.

Recipes (``--recipes``):
  uniform      HAT's uniform sampling for the whole budget
  first400     the largest Arch for the first 400 updates, then sampling (a switch by count)
  first_half   the largest Arch for the first half of the minutes, then sampling (the demo's)

Every step goes through the ``hat-ray`` CLI and is resumable (a finished run's result is
reused). The budget is wall-clock, as in the demo: run it on an otherwise idle machine; the
updates each run made are recorded beside its scores.

    python benchmarks/demo_language.py                        # 3 recipes x 3 seeds: ~40 min on 2 cores
    python benchmarks/demo_language.py --minutes 0.3 --seeds 1 --valid-sentences 20 \\
        --out runs/bench_demo_language_small --json runs/bench_demo_language_small.json   # wiring check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weight_sharing import HAT_RAY, ROOT, add_training_flags, evaluate, run, train_args  # noqa: E402

from hat_ray.pipeline.baselines import baselines  # noqa: E402
from hat_ray.space import SearchSpace  # noqa: E402

ARCHS = ("largest", "medium", "shallow", "smallest")


def recipe_flags(recipe: str, minutes: float) -> list[str]:
    """The ``hat-ray train supernet`` flags of a recipe."""
    return {"uniform": [], "first400": ["--largest-first", "400"],
            "first_half": ["--largest-first-minutes", str(minutes / 2)]}[recipe]


RECIPES = ("uniform", "first400", "first_half")


def one_run(recipe: str, seed: int, args: argparse.Namespace, arch_files: dict[str, Path]) -> dict[str, Any]:
    """Train (or reuse) one recipe's supernet for one seed and score the baseline Archs on it."""
    folder = args.out / f"{recipe}_seed{seed}"
    result = folder / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "commands.log"
    settings = argparse.Namespace(**{**vars(args), "seed": seed})
    ckpt = folder / "checkpoint_last.pt"
    cmd = [*HAT_RAY, "train", "supernet", *recipe_flags(recipe, args.minutes), *train_args(settings),
           "--out", str(folder), "--max-minutes", str(args.minutes), "--json"]
    if ckpt.is_file():  # an interrupted run: the wall-clock budget counts over its sessions
        cmd.append("--resume")
    t0 = time.time()
    printed = run(cmd, log).strip()
    summary = json.loads(printed) if printed else {}
    row = {"recipe": recipe, "seed": seed, "train_seconds": round(time.time() - t0, 1),
           "updates": summary.get("update"), "train_summary": summary,
           "valid": {name: evaluate(ckpt, path, args, log) for name, path in arch_files.items()}}
    result.write_text(json.dumps(row, indent=1))
    return row


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe and Arch: mean and sample sd over the seeds of validation SacreBLEU and loss."""
    out: dict[str, Any] = {}
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == recipe]
        out[recipe] = {"seeds": sorted(r["seed"] for r in mine), "updates": [r["updates"] for r in mine]}
        for arch in mine[0]["valid"]:
            for metric in ("sacrebleu", "valid_loss"):
                values = [r["valid"][arch][metric] for r in mine]
                out[recipe].setdefault(arch, {})[metric] = {
                    "mean": round(float(np.mean(values)), 3 if metric == "valid_loss" else 2),
                    "sd": round(float(np.std(values, ddof=1)), 3 if metric == "valid_loss" else 2)
                    if len(values) > 1 else None}
    return out


def markdown(agg: dict[str, Any]) -> str:
    lines = ["| recipe | seeds | updates | " + " | ".join(ARCHS) + " |", "|---" * (3 + len(ARCHS)) + "|"]
    for recipe, r in agg.items():
        cells = []
        for arch in ARCHS:
            bleu, loss = r[arch]["sacrebleu"], r[arch]["valid_loss"]
            sd = "" if bleu["sd"] is None else f" (sd {bleu['sd']:.2f})"
            cells.append(f"{bleu['mean']:.2f}{sd}, {loss['mean']:.2f} bits")
        updates = [u for u in r["updates"] if u is not None]
        span = f"{min(updates)}-{max(updates)}" if updates else "?"
        lines.append(f"| {recipe} | {len(r['seeds'])} | {span} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--minutes", type=float, default=4.0, help="each supernet's wall-clock budget (the demo's: 4)")
    add_training_flags(p, valid_sentences=200)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_demo_language")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "demo_language.json")
    args = p.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    if not recipes or unknown:
        p.error(f"--recipes: unknown {unknown}; choose from {', '.join(RECIPES)}")
    if args.minutes <= 0:
        p.error(f"--minutes must be positive, got {args.minutes}")
    args.out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace.load(args.space)
    arch_files = {}
    for name, arch in baselines(space, ARCHS).items():
        arch_files[name] = args.out / f"{name}.yaml"
        arch_files[name].write_text(yaml.safe_dump(arch.to_dict(), sort_keys=False))
    t0, rows = time.time(), []
    runs = [(recipe, seed) for seed in args.seeds for recipe in recipes]
    for i, (recipe, seed) in enumerate(runs):
        print(f"[{i + 1}/{len(runs)}] {recipe}, seed {seed}: {args.minutes} min of training, then "
              f"{len(arch_files)} Archs on {args.valid_sentences} validation sentences", flush=True)
        rows.append(one_run(recipe, seed, args, arch_files))
    agg = aggregate(rows)
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "split": "valid", "runs": rows, "aggregate": agg, "seconds": round(time.time() - t0, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(args.json)
    print("\nvalidation SacreBLEU mean (sd over seeds), validation loss mean\n" + markdown(agg))
    print(f"\nJSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
