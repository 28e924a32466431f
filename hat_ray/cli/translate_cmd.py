"""`hat-ray translate --model DIR [--input FILE|-] [--output FILE] [--beam K] [--lenpen X] [--threads T]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hat_ray.cli.common import check_output
from hat_ray.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate text with an export folder (`hat-ray export`): no checkpoint needed",
                       description="Read one sentence per line, print one translation per line (detokenised), "
                                   "decoding with the exported graphs and the export's own tokenizer.")
    p.add_argument("--model", required=True, metavar="DIR", help="a folder written by `hat-ray export`")
    p.add_argument("--input", default="-", metavar="FILE", help="source sentences, one per line (default: stdin)")
    p.add_argument("--output", metavar="FILE", help="write the translations here (atomically) instead of stdout")
    p.add_argument("--beam", type=int, default=4, help="beam size (1: greedy; default 4)")
    p.add_argument("--lenpen", type=float, default=0.6, help="length penalty (default 0.6)")
    p.add_argument("--max-tokens", type=int, default=4096, help="padded source tokens per batch (x beam)")
    p.add_argument("--threads", type=int, metavar="T",
                   help="runtime threads (ONNX Runtime intra-op; torch's for TorchScript); default: the runtime's")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hat_ray.export.runner import ExportedModel
    from hat_ray.io import atomic_write

    problems = [f"--{name.replace('_', '-')} must be >= 1, got {value}"
                for name, value in (("beam", args.beam), ("max_tokens", args.max_tokens), ("threads", args.threads))
                if value is not None and value < 1]
    if problems:
        raise ConfigError("command line", problems)
    if args.output:
        check_output(args.output, "--output")
    if args.input != "-" and not Path(args.input).is_file():
        raise DataError(f"--input {args.input} does not exist; check the path (or pass - to read stdin)")
    model = ExportedModel.load(args.model, threads=args.threads)
    _ = model.tokenizer  # an export without one fails here, before reading the input
    try:
        text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"--input {args.input} is not UTF-8 text; save it as UTF-8") from None
    lines = text.splitlines()
    hyps = model.translate(lines, beam=args.beam, lenpen=args.lenpen, max_tokens=args.max_tokens)
    result = "".join(h + "\n" for h in hyps)
    if args.output:
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(result, encoding="utf-8"))
    else:
        sys.stdout.write(result)
    return 0
