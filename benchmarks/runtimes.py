"""Deployment runtimes on THIS machine (issue 18): eager torch, torch int8, ONNX Runtime fp32 and
ONNX Runtime int8, on the demo space with a SuperTransformer trained on Multi30k.

1. Latency: ``--archs`` random Archs of the demo search space measured with local_cpu's protocol
   (1 thread, reference-interleaved) under each runtime. The runtimes take turns on chunks of 6
   Archs, so a drift of the machine's speed hits all of them alike. Reports per runtime the
   median (and IQR) over Archs of its ms / eager torch's ms, per part and in total, and Kendall
   tau between the runtimes' latencies (ms and reference units).
2. Does the best Arch under a limit change with the runtime? The supernet (``--supernet-minutes``
   on Multi30k) scores every Arch (validation loss on the first 500 validation pairs); for limits
   at the 30th / 50th / 70th percentile of each runtime's own latencies, the lowest-loss Arch
   under the limit, per runtime.
3. A fine-tuned winner: the eager-torch p50 winner, extracted from the supernet and fine-tuned
   (``--train-minutes``), exported to ONNX fp32 and int8 (and TorchScript fp32): SacreBLEU on
   Multi30k's test split (test2016, greedy) of the torch model and each export, size on disk, and
   its latency per runtime (part 1's records).

    python benchmarks/runtimes.py [--data-dir ../shared/data/multi30k] [--archs 30]
        [--supernet-minutes 8] [--train-minutes 4] [--out runs/runtimes]

Re-running reuses a finished supernet / fine-tuned model in ``--out``. Writes
``benchmarks/results/runtimes.json`` (``--json``) and prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch", "torch-int8", "onnxruntime", "onnxruntime-int8")
CHUNK = 6


def profiles() -> dict[str, Any]:
    """local_cpu's protocol under each runtime (only the runtime and the name differ)."""
    from hat_ray.latency.profile import DeviceProfile

    base = DeviceProfile.load("local_cpu").to_dict()
    return {rt: DeviceProfile.from_dict({**base, "name": f"local_cpu_{rt.replace('-', '_')}", "runtime": rt},
                                        source=f"local_cpu with runtime {rt}") for rt in RUNTIMES}


def train(space: Any, out: Path, data_dir: str, minutes: float, arch: Any = None, init: Path | None = None) -> Path:
    """A supernet (``arch`` None) or a SubTransformer fine-tuned from ``init``; reused when done."""
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.run import DataOptions, make_spec, run
    from hat_ray.train.state import LAST

    done = out / "done.json"
    if done.is_file():
        return out / LAST
    cfg = TrainConfig(mode="supernet" if arch is None else "subnet", max_minutes=minutes, max_tokens=2048,
                      lr=1e-3 if arch is None else 5e-4, warmup_updates=100 if arch is None else 10, dropout=0.1,
                      validate_every=0, save_every=200, keep_last=1, progress=False)
    data = DataOptions("multi30k", data_dir, None, None, 8000, False)
    spec = make_spec(space, cfg, data, out, resume=(out / LAST).exists(), arch=arch, init_from=init)
    summary = run(spec)
    done.write_text(json.dumps(summary, indent=2))
    return out / LAST


def measure_all(archs: list, space: Any, vocab: int, profs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Records per runtime; the runtimes take turns on chunks of Archs."""
    from hat_ray.latency.measure import measure_many

    records: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNTIMES}
    for start in range(0, len(archs), CHUNK):
        chunk = archs[start:start + CHUNK]
        for runtime in RUNTIMES:
            t0 = time.time()
            got = measure_many(chunk, profs[runtime], space, vocab=vocab)
            for r in got:
                r["_seconds"] = (time.time() - t0) / len(chunk)
            records[runtime] += got
        print(f"  latency: {min(start + CHUNK, len(archs))}/{len(archs)} Archs x {len(RUNTIMES)} runtimes", flush=True)
    return records


def ratios(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from hat_ray.latency.metrics import kendall_tau

    base = records["torch"]
    out: dict[str, Any] = {}
    for runtime in RUNTIMES:
        rows = records[runtime]
        entry: dict[str, Any] = {}
        for col in ("latency_ms", "encoder_ms", "decoder_ms"):
            if col not in rows[0]:
                continue
            r = np.array([a[col] / b[col] for a, b in zip(rows, base)])
            entry[col] = {"median_ratio": round(float(np.median(r)), 3),
                          "iqr": [round(float(np.percentile(r, 25)), 3), round(float(np.percentile(r, 75)), 3)]}
        entry["tau_ms_vs_torch"] = round(float(kendall_tau([a["latency_ms"] for a in rows],
                                                           [b["latency_ms"] for b in base])), 3)
        if rows[0].get("latency_ref") is not None:
            entry["tau_ref_vs_torch"] = round(float(kendall_tau([a["latency_ref"] for a in rows],
                                                                [b["latency_ref"] for b in base])), 3)
        entry["median_ms"] = round(float(np.median([a["latency_ms"] for a in rows])), 2)
        entry["reference_ms"] = round(float(np.median([a["reference_ms"] for a in rows
                                                       if a.get("reference_ms") is not None] or [np.nan])), 2)
        entry["seconds_per_arch"] = round(float(np.mean([a["_seconds"] for a in rows])), 2)
        entry["setup_s_median"] = round(float(np.median([a.get("setup_s") or 0.0 for a in rows])), 3)
        out[runtime] = entry
    return out


def best_under_limits(records: dict[str, list[dict[str, Any]]], losses: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q in (30, 50, 70):
        per: dict[str, Any] = {}
        for runtime in RUNTIMES:
            lat = np.array([r["latency_ms"] for r in records[runtime]])
            limit = float(np.percentile(lat, q))
            ok = [i for i in range(len(lat)) if lat[i] <= limit]
            best = min(ok, key=lambda i: losses[i])
            per[runtime] = {"limit_ms": round(limit, 2), "best": best, "loss": round(losses[best], 4)}
        same = len({v["best"] for v in per.values()}) == 1
        out[f"p{q}"] = {"per_runtime": per, "same_best": same}
    return out


def bleu_of(model: Any, tokenizer: Any, corpus: Any, n: int) -> float:
    from hat_ray.train.evaluate import sacre_bleu, translate

    src, tgt = corpus.src[:n], corpus.tgt[:n]
    hyps = translate(model, None, tokenizer, src, 1, 0.6, 4096)
    return round(sacre_bleu(hyps, [tokenizer.reference(t) for t in tgt])[0], 2)


def weight_bytes(model: Any) -> int:
    """The fp32 weights alone (a checkpoint also holds the optimizer state)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    p.add_argument("--archs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supernet-minutes", type=float, default=8.0)
    p.add_argument("--train-minutes", type=float, default=4.0)
    p.add_argument("--test-sentences", type=int, default=1000)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "runtimes")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "runtimes.json")
    args = p.parse_args()

    import torch

    from hat_ray.checkpoint import load_checkpoint, load_model
    from hat_ray.data.datasets import load_split
    from hat_ray.data.tokenizer import tokenizer_from_checkpoint
    from hat_ray.export.folder import export_model
    from hat_ray.export.runner import ExportedModel
    from hat_ray.search.inputs import validation_batches
    from hat_ray.space import SearchSpace
    from hat_ray.train.loss import validation_loss

    torch.set_num_threads(2)
    started = time.time()
    space = SearchSpace.load("demo")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"supernet: {args.supernet_minutes} min on Multi30k", flush=True)
    super_ckpt = train(space, args.out / "supernet", args.data_dir, args.supernet_minutes)
    ckpt = load_checkpoint(super_ckpt)
    supernet, _, _ = load_model(super_ckpt)
    supernet.eval()
    vocab = int(ckpt["model_config"]["tgt_vocab"])

    rng = np.random.default_rng(args.seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(args.archs)))  # Archs the supernet can score
    torch.set_num_threads(1)  # the latency protocol's own setting (profiles: 1 thread)
    records = measure_all(archs, space, vocab, profiles())
    torch.set_num_threads(2)
    valid = validation_batches(ckpt, "multi30k", args.data_dir, space.super.max_positions, 4096, 500,
                               source=str(super_ckpt))
    with torch.inference_mode():
        losses = [float(validation_loss(supernet, a, valid)) for a in archs]

    limits = best_under_limits(records, losses)
    winner = archs[limits["p50"]["per_runtime"]["torch"]["best"]]
    print(f"winner (torch p50): valid loss {losses[archs.index(winner)]:.3f}; fine-tuning {args.train_minutes} min",
          flush=True)
    sub_ckpt = train(space, args.out / "winner", args.data_dir, args.train_minutes, arch=winner, init=super_ckpt)
    model, _, sub = load_model(sub_ckpt)
    model.eval()
    tokenizer = tokenizer_from_checkpoint(sub, "winner")
    info = sub.get("data") or {}
    corpus = load_split("multi30k", "test", args.data_dir, src_lang=info.get("src_lang"), tgt_lang=info.get("tgt_lang"))
    n = min(args.test_sentences, len(corpus))
    deploy: dict[str, Any] = {"test_sentences": n, "torch_fp32": {"bleu": bleu_of(model, tokenizer, corpus, n),
                                                                  "bytes": weight_bytes(model)}}
    for fmt, int8 in (("onnx", False), ("onnx", True), ("torchscript", False)):
        name = f"{fmt}_{'int8' if int8 else 'fp32'}"
        folder = args.out / "exports" / name
        t0 = time.time()
        if not (folder / "manifest.json").is_file():
            export_model(model, folder, fmt, int8, tokenizer=sub.get("tokenizer"), source={"checkpoint": str(sub_ckpt)})
        seconds = time.time() - t0
        exported = ExportedModel.load(folder, threads=2)
        deploy[name] = {"bleu": bleu_of(exported, tokenizer, corpus, n), "bytes": folder_bytes(folder),
                        "export_seconds": round(seconds, 1)}
        print(f"  {name}: BLEU {deploy[name]['bleu']}, {deploy[name]['bytes'] / 1e6:.1f} MB", flush=True)
    i = archs.index(winner)
    deploy["winner_latency_ms"] = {rt: round(records[rt][i]["latency_ms"], 2) for rt in RUNTIMES}
    deploy["winner_arch"] = winner.to_dict()

    result = {"archs": len(archs), "seed": args.seed, "supernet_minutes": args.supernet_minutes,
              "train_minutes": args.train_minutes, "latency": ratios(records), "best_under_limit": limits,
              "deploy": deploy, "seconds": round(time.time() - started, 1),
              "records": {rt: [{k: v for k, v in r.items() if k in ("arch_key", "latency_ms", "latency_ref",
                                                                      "encoder_ms", "decoder_ms", "reference_ms",
                                                                      "setup_s", "runtime")}
                               for r in recs] for rt, recs in records.items()},
              "losses": losses}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    lines = ["| runtime | median ms | total / torch (IQR) | encoder / torch | decoder / torch | tau ms | tau ref |"
             " setup s |", "|---|---|---|---|---|---|---|---|"]
    def cell(e: dict[str, Any], col: str) -> str:
        c = e.get(col)
        return f"{c['median_ratio']:.2f} ({c['iqr'][0]:.2f}-{c['iqr'][1]:.2f})" if c else "-"

    for rt, e in r["latency"].items():
        lines.append(f"| {rt} | {e['median_ms']} | {cell(e, 'latency_ms')} | {cell(e, 'encoder_ms')} | {cell(e, 'decoder_ms')} "
                     f"| {e['tau_ms_vs_torch']} | {e.get('tau_ref_vs_torch', '-')} | {e['setup_s_median']} |")
    lines += ["", "| limit | " + " | ".join(RUNTIMES) + " | same best |", "|---" * (len(RUNTIMES) + 2) + "|"]
    for q, v in r["best_under_limit"].items():
        cells = [f"#{v['per_runtime'][rt]['best']} ({v['per_runtime'][rt]['loss']})" for rt in RUNTIMES]
        lines.append(f"| {q} | " + " | ".join(cells) + f" | {v['same_best']} |")
    d = r["deploy"]
    lines += ["", f"| model (greedy, {d['test_sentences']} test sentences) | SacreBLEU | size MB |", "|---|---|---|"]
    for name in ("torch_fp32", "onnx_fp32", "onnx_int8", "torchscript_fp32"):
        if name in d:
            lines.append(f"| {name} | {d[name]['bleu']} | {d[name]['bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
