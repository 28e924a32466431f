"""Benchmark: does the SuperTransformer rank its Archs as training them alone would? (not in CI)

HAT's paper checks weight sharing this way (its Figure 7): for SubTransformers spread over the
space, the validation loss with weights inherited from the SuperTransformer against the
validation loss of the same Arch trained from scratch; a search on inherited weights is only
meaningful when the two rank the Archs alike (Kendall tau near 1).

Steps, all through the ``hat-ray`` CLI (the code paths users run), each resumable (a finished
step's output is reused, so an interrupted run continues where it stopped):

1. the SuperTransformer: ``--supernet CKPT``, or trained here for ``--supernet-updates`` (the
   first ``--largest-first`` of them on the largest Arch, as the demo's recipe does by time);
2. ``--archs`` Archs spread over the space: random Archs (seeded) sorted by parameters, one at
   each of ``--archs`` evenly spaced quantiles, largest and smallest included;
3. each Arch's validation loss (bits/token) and greedy SacreBLEU on the validation split, with
   inherited weights (``hat-ray evaluate --checkpoint SUPER --arch A``);
4. each Arch trained from scratch for ``--updates`` updates (default: the supernet's own budget;
   same data, subwords, batches and optimizer), then evaluated the same way;
5. Kendall tau (and Spearman's rho) between the two, for loss and BLEU.

Writes ``benchmarks/results/weight_sharing.json`` and prints a Markdown table for BENCHMARKS.md.
Only validation data is used: nothing is selected here, it is a measurement.

    python benchmarks/weight_sharing.py                      # demo space, synthetic corpus: ~35 min on 2 cores
    python benchmarks/weight_sharing.py --supernet runs/demo/supernet/checkpoint_last.pt --updates 753
                                                             # on the demo's supernet (BENCHMARKS.md: 26 min)
    python benchmarks/weight_sharing.py --supernet-updates 60 --updates 40 --archs 4 --valid-sentences 40 \\
        --out runs/bench_ws_small                            # a check of the wiring (minutes)
    python benchmarks/weight_sharing.py --device cuda --data multi30k --data-dir ../shared/data/multi30k \\
        --vocab-size 8000 --supernet-updates 20000 --updates 20000   # HAT-like budgets on a GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hat_ray.latency.metrics import kendall_tau
from hat_ray.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
HAT_RAY = [sys.executable, "-m", "hat_ray.cli.main"]


def spread_archs(space: SearchSpace, n: int, seed: int, pool: int = 400) -> list[Any]:
    """``n`` Archs spread over the space by parameter count: the largest, the smallest and
    random Archs at evenly spaced quantiles of ``pool`` seeded samples in between."""
    from hat_ray.model.accounting import count_params

    rng = np.random.default_rng(seed)
    qkv = space.super.qkv_dim
    sampled = sorted({space.sample(rng) for _ in range(pool)} | {space.largest(), space.smallest()},
                     key=lambda a: (count_params(a, qkv), a.key()))
    picks = np.unique(np.round(np.linspace(0, len(sampled) - 1, n)).astype(int))
    return [sampled[i] for i in picks]


def run(cmd: list[str], log: Path) -> str:
    """Run a ``hat-ray`` command; its stderr goes to ``log``; stdout returned. Exit on failure."""
    with log.open("a") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)} (log: {log})")
    return proc.stdout


def add_training_flags(p: argparse.ArgumentParser, valid_sentences: int) -> None:
    """The data, optimisation and evaluation flags ``train_args`` and ``evaluate`` read, with the
    demo's settings as defaults."""
    p.add_argument("--space", default="demo")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--vocab-size", type=int, default=1000)
    p.add_argument("--valid-sentences", type=int, default=valid_sentences)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def train_args(args: argparse.Namespace) -> list[str]:
    """Data and optimisation settings shared by the supernet and every from-scratch run."""
    out = ["--space", args.space, "--data", args.data, "--vocab-size", str(args.vocab_size),
           "--max-tokens", str(args.max_tokens), "--lr", str(args.lr), "--warmup-updates", str(args.warmup),
           "--dropout", str(args.dropout), "--seed", str(args.seed), "--validate-every", "0", "--no-progress",
           "--no-tensorboard", "--save-every", "100000", "--keep-last", "1"]
    if args.data_dir:
        out += ["--data-dir", str(args.data_dir)]
    if args.threads:
        out += ["--threads", str(args.threads)]
    if args.device == "cuda":
        out += ["--gpu"]
    return out


def evaluate(ckpt: Path, arch_file: Path | None, args: argparse.Namespace, log: Path) -> dict[str, float]:
    cmd = [*HAT_RAY, "evaluate", "--checkpoint", str(ckpt), "--split", "valid", "--beam", "1",
           "--limit", str(args.valid_sentences), "--json"]
    if arch_file is not None:
        cmd += ["--arch", str(arch_file)]
    got = json.loads(run(cmd, log))
    return {"valid_loss": round(got["valid_loss"], 4), "sacrebleu": round(got["sacrebleu"], 2)}


def trained(folder: Path, updates: int, args: argparse.Namespace, log: Path, extra: list[str]) -> Path:
    """``folder``'s last checkpoint after ``updates`` updates (trained or resumed here)."""
    ckpt = folder / "checkpoint_last.pt"
    done = folder / "done.json"
    if not done.is_file():
        cmd = [*HAT_RAY, "train", *extra, *train_args(args), "--out", str(folder), "--max-updates", str(updates),
               "--json"]
        if ckpt.is_file():
            cmd.append("--resume")
        t0 = time.time()
        printed = run(cmd, log).strip()
        summary = json.loads(printed) if printed else {}
        done.write_text(json.dumps({"seconds": round(time.time() - t0, 1), "summary": summary}, default=str))
    return ckpt


def rho(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_flags(p, valid_sentences=300)
    p.add_argument("--supernet", type=Path, help="a trained SuperTransformer checkpoint (else trained here)")
    p.add_argument("--supernet-updates", type=int, default=800, help="budget of the supernet trained here")
    p.add_argument("--largest-first", type=int, default=300,
                   help="the supernet trained here: its first N updates train the largest Arch only (the demo's "
                        "recipe gives ~280 of ~750; 0: HAT's uniform sampling, which learns nothing in 800 updates)")
    p.add_argument("--updates", type=int, help="from-scratch budget per Arch (default: --supernet-updates)")
    p.add_argument("--archs", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_weight_sharing")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "weight_sharing.json")
    args = p.parse_args(argv)
    updates = args.updates or args.supernet_updates
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "commands.log"
    t0 = time.time()
    space = SearchSpace.load(args.space)
    if args.supernet:
        supernet = args.supernet
    else:
        print(f"training the SuperTransformer: {args.supernet_updates} updates", flush=True)
        supernet = trained(args.out / "supernet", args.supernet_updates, args, log,
                           ["supernet", "--largest-first", str(args.largest_first)])
    archs = spread_archs(space, args.archs, args.seed)
    rows = []
    for i, arch in enumerate(archs):
        folder = args.out / f"arch{i:02d}"
        folder.mkdir(exist_ok=True)
        arch_file = folder / "arch.yaml"
        arch_file.write_text(yaml.safe_dump(arch.to_dict(), sort_keys=False))
        result = folder / "result.json"
        if result.is_file():
            rows.append(json.loads(result.read_text()))
            continue
        from hat_ray.model.accounting import count_params

        print(f"arch {i + 1}/{len(archs)} {arch.key()}: inherited, then {updates} updates from scratch", flush=True)
        inherited = evaluate(supernet, arch_file, args, log)
        scratch_ckpt = trained(folder / "scratch", updates, args, log, ["subnet", "--arch", str(arch_file)])
        scratch = evaluate(scratch_ckpt, None, args, log)
        row = {"arch": arch.key(), "params_m": round(count_params(arch, space.super.qkv_dim) / 1e6, 3),
               "inherited": inherited, "scratch": scratch,
               "scratch_seconds": json.loads((folder / "scratch" / "done.json").read_text())["seconds"]}
        result.write_text(json.dumps(row, indent=1))
        rows.append(row)
    cols = {k: ([r["inherited"][k] for r in rows], [r["scratch"][k] for r in rows]) for k in ("valid_loss", "sacrebleu")}
    out = {
        "space": args.space, "data": args.data, "archs": len(rows), "supernet": str(supernet),
        "supernet_updates": None if args.supernet else args.supernet_updates,
        "supernet_largest_first": None if args.supernet else args.largest_first, "scratch_updates": updates,
        "valid_sentences": args.valid_sentences, "seed": args.seed, "device": args.device,
        "kendall_tau": {k: round(kendall_tau(*v), 3) for k, v in cols.items()},
        "spearman_rho": {k: round(rho(*v), 3) for k, v in cols.items()},
        "rows": rows, "seconds": round(time.time() - t0, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print("\n| Arch | params (M) | inherited loss | scratch loss | inherited SacreBLEU | scratch SacreBLEU |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['arch'][:40]}` | {r['params_m']:.2f} | {r['inherited']['valid_loss']:.3f} | "
              f"{r['scratch']['valid_loss']:.3f} | {r['inherited']['sacrebleu']:.2f} | {r['scratch']['sacrebleu']:.2f} |")
    print(f"\nKendall tau inherited vs scratch: loss {out['kendall_tau']['valid_loss']}, "
          f"SacreBLEU {out['kendall_tau']['sacrebleu']} ({len(rows)} Archs); JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
