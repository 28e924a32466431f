"""Multi-fidelity scoring, first question (issue 21): how well does the loss on a small slice of
the validation set rank Archs the way the whole validation set does?

For ``--archs`` Archs of the SuperTransformer's space (uniform samples, seeded), every
validation sentence's label-smoothed loss is computed once (``hat_ray.train.loss.row_loss_sums``,
HAT's fitness split per sentence), so the loss of any subset of the sentences follows exactly
without scoring again. For each slice size (a fraction of the sentences), ``--draws`` random
slices are drawn; for each, Kendall tau between the Archs' slice losses and their full-set
losses, and whether the full-set best Arch is in the slice's top ``--top`` (what successive
halving needs: the good Archs survive the first cut). Reported per slice size: tau mean / min
over the draws, the tokens scored relative to the full set, and the survival rate.

    nice python benchmarks/fidelity.py --supernet runs/bench_hat_multi30k_3seeds/seed1/supernet/checkpoint_last.pt
        # Multi30k validation (1,014 pairs), 50 Archs: ~5 min on 1 core

Writes benchmarks/results/fidelity.json (``--json``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LN2 = float(np.log(2.0))


def per_sentence(args: argparse.Namespace) -> tuple[list[Any], np.ndarray, np.ndarray, dict[str, Any]]:
    """(Archs, loss sums (archs x sentences, nats), target tokens (sentences,), info)."""
    import torch

    from hat_ray.search.inputs import load_supernet, validation_batches
    from hat_ray.train.loss import row_loss_sums

    torch.set_num_threads(args.threads)
    model, space, ckpt = load_supernet(args.supernet)
    batches = validation_batches(ckpt, args.data, str(args.data_dir) if args.data_dir else None,
                                 space.super.max_positions, args.max_tokens)
    rng = np.random.default_rng(args.seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(args.archs)))
    sentences = sorted(int(i) for b in batches for i in b.indices)
    losses = np.zeros((len(archs), len(sentences)))
    tokens = np.zeros(len(sentences))
    column = {s: j for j, s in enumerate(sentences)}
    t0 = time.time()
    for i, arch in enumerate(archs):
        for s, (loss, n) in row_loss_sums(model, arch, batches).items():
            losses[i, column[s]], tokens[column[s]] = loss, n
        print(f"\r  scored {i + 1}/{len(archs)} Archs on {len(sentences)} sentences", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    info = {"supernet": str(args.supernet), "space": space.name, "data": args.data, "sentences": len(sentences),
            "target_tokens": int(tokens.sum()), "archs": len(archs), "score_seconds": round(time.time() - t0, 1)}
    return archs, losses, tokens, info


def agreement(losses: np.ndarray, tokens: np.ndarray, fractions: list[float], draws: int, top: int,
              seed: int) -> list[dict[str, Any]]:
    """Per slice size: Kendall tau of slice vs full-set loss over ``draws`` random slices, tokens
    relative to the full set, and how often the full-set best Arch is in the slice's top ``top``."""
    from hat_ray.latency.metrics import kendall_tau

    full = losses.sum(axis=1) / tokens.sum()
    best = int(np.argmin(full))
    rng = np.random.default_rng(seed)
    n = losses.shape[1]
    rows = []
    for fraction in fractions:
        k = max(1, round(fraction * n))
        taus, kept, share = [], 0, []
        for _ in range(draws):
            pick = rng.choice(n, size=k, replace=False)
            slice_loss = losses[:, pick].sum(axis=1) / tokens[pick].sum()
            taus.append(kendall_tau(slice_loss, full))
            kept += best in np.argsort(slice_loss)[:top]
            share.append(tokens[pick].sum() / tokens.sum())
        rows.append({"fraction": fraction, "sentences": k, "token_share": round(float(np.mean(share)), 4),
                     "kendall_tau_mean": round(float(np.mean(taus)), 3),
                     "kendall_tau_sd": round(float(np.std(taus, ddof=1)), 3) if draws > 1 else None,
                     "kendall_tau_min": round(float(np.min(taus)), 3),
                     f"best_in_top{top}": f"{kept}/{draws}"})
    return rows


def markdown(result: dict[str, Any]) -> str:
    top = result["settings"]["top"]
    lines = [f"| slice | sentences | tokens vs full | Kendall tau mean +- sd (min) | full-set best in slice top {top} |",
             "|---|---|---|---|---|"]
    for r in result["slices"]:
        lines.append(f"| {r['fraction']:g} | {r['sentences']} | {r['token_share']:.3f} | {r['kendall_tau_mean']:.3f} "
                     f"+- {r['kendall_tau_sd']} ({r['kendall_tau_min']:.3f}) | {r[f'best_in_top{top}']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", type=Path, required=True, help="a trained SuperTransformer checkpoint")
    p.add_argument("--data", default="multi30k")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    p.add_argument("--archs", type=int, default=50)
    p.add_argument("--fractions", type=float, nargs="+", default=[1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2])
    p.add_argument("--draws", type=int, default=20, help="random slices per size")
    p.add_argument("--top", type=int, default=10, help="the cut successive halving would keep")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity.json")
    args = p.parse_args(argv)
    if not args.supernet.is_file():
        print(f"error: no checkpoint {args.supernet}: pass --supernet (a trained SuperTransformer)", file=sys.stderr)
        return 2
    archs, losses, tokens, info = per_sentence(args)
    full = losses.sum(axis=1) / tokens.sum() / LN2
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **info,
              "full_loss_bits": {"min": round(float(full.min()), 4), "max": round(float(full.max()), 4),
                                 "sd": round(float(full.std(ddof=1)), 4)},
              "slices": agreement(losses, tokens, args.fractions, args.draws, args.top, args.seed)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
