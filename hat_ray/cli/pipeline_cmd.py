"""`hat-ray pipeline CONFIG.yaml` and `hat-ray demo`: every stage, from nothing to a report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from hat_ray.errors import ConfigError

STAGE_HELP = "supernet, latency, predictor, search, train, evaluate, report"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run an experiment file's stages (cached; re-runs resume)")
    p.add_argument("config", help="experiment YAML (or a bundled name: demo, wmt14_en_de_hat)")
    _common(p, out_default=None)
    p.add_argument("--status", action="store_true", help="show which stages are done, stale or pending; run nothing")
    p.set_defaults(func=_pipeline)
    d = sub.add_parser("demo", help="the whole pipeline on the embedded defaults (demo space, this CPU, "
                                    "synthetic corpus or Multi30k), ~15 min on 2 cores")
    d.add_argument("--data-dir", help="folder holding Multi30k (train/valid/test .en/.de): use it instead of the "
                                      "synthetic corpus")
    _common(d, out_default="runs/demo")
    d.set_defaults(func=_demo)


def _common(p: argparse.ArgumentParser, out_default: str | None) -> None:
    p.add_argument("--out", default=out_default,
                   help="run folder (default: the experiment's `out`)" if out_default is None else
                   f"run folder (default {out_default})")
    p.add_argument("--from", dest="start", metavar="STAGE",
                   help=f"re-run from this stage (its outputs and later ones are replaced): {STAGE_HELP}")
    p.add_argument("--address", help="Ray cluster address (default: the experiment's, else a local instance)")
    p.add_argument("--json", action="store_true", help="print the summary of every stage as JSON")


def _pipeline(args: argparse.Namespace) -> int:
    from hat_ray.pipeline.config import Experiment

    exp = Experiment.load(args.config, out=args.out, address=args.address)
    return _run(exp, args, status_only=args.status)


def _demo(args: argparse.Namespace) -> int:
    from hat_ray.pipeline.config import Experiment, export_problems
    from hat_ray.resources import load_named_yaml

    data, source = load_named_yaml("experiments", "demo", "experiment")
    data = {**data, "out": args.out, "address": args.address or data.get("address")}
    if args.data_dir:
        data["data"] = {**data.get("data", {}), **MULTI30K, "data_dir": args.data_dir}
    evaluate = data.get("evaluate", {})
    if evaluate.get("export") and export_problems(tuple(evaluate["export"])):  # a runtime is not installed
        print("hat-ray demo: the deployed variants (ONNX) are skipped: pip install 'hat-ray[runtimes]' to add them",
              file=sys.stderr)
        data["evaluate"] = {**evaluate, "export": []}
    exp = Experiment.from_dict(data, source)
    return _run(exp, args, status_only=False)


# Multi30k in the demo: a larger subword vocabulary than the synthetic corpus needs.
MULTI30K: dict[str, Any] = {"name": "multi30k", "vocab_size": 4000, "download": False}


def _run(exp: Any, args: argparse.Namespace, status_only: bool) -> int:
    from hat_ray.pipeline.run import status

    if not exp.out:
        raise ConfigError(exp.source, ["out: give the run folder in the experiment or with --out"])
    if status_only:
        rows = status(exp, _path(exp.out))
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                extra = f" (finished {r['finished']}, {r['seconds']:.0f} s)" if r["finished"] else ""
                print(f"{r['stage']:10s} {r['status']}{extra}")
        return 0
    from hat_ray.cli.common import stdout_to_stderr
    from hat_ray.pipeline.run import run_pipeline

    t0 = time.time()
    with stdout_to_stderr():  # Ray, Tune and training print progress; stdout carries the result
        summary = run_pipeline(exp, exp.out, start=args.start)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    report = summary["report"]
    print(f"{exp.name}: every stage done in {time.time() - t0:.0f} s -> {report['report']}")
    for row in report["table"]:
        lat = ", ".join(f"{k.removesuffix('_measured_ms')} {v} ms" for k, v in row.items()
                        if k.endswith("_measured_ms") and v is not None)
        print(f"  {row['model']:28s} {row['params_m']:6.2f} M params  {lat or 'not measured'}  "
              f"SacreBLEU {row['sacrebleu']:.2f}  valid loss {row['valid_loss']:.3f}")
    if report.get("claims"):
        from hat_ray.pipeline.report import claim_sentence

        print("HAT's claim (beats every baseline at least as slow):")
        for claim in report["claims"]:
            print("  " + claim_sentence(claim).replace("**", "").replace("`", ""))
    return 0


def _path(out: str) -> Any:
    from pathlib import Path

    return Path(out).resolve()
