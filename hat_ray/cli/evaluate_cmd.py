"""`hat-ray evaluate`: BLEU (SacreBLEU + HAT's tokenized BLEU) and validation loss of a checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hat_ray.cli.common import check_output, load_arch
from hat_ray.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="BLEU and validation loss of a checkpoint (SuperTransformer + Arch, or subnet)")
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="CKPT",
                   help="checkpoint(s); several are averaged")
    p.add_argument("--average-last", type=int, metavar="N",
                   help="average the last N numbered checkpoints in CKPT's folder")
    p.add_argument("--arch", help="Arch YAML to extract from a SuperTransformer (default: the checkpoint's "
                                  "Arch, else the largest)")
    p.add_argument("--data", help="dataset name or folder (default: the data the checkpoint was trained on)")
    p.add_argument("--data-dir", help="folder already holding the named dataset's files")
    p.add_argument("--src-lang")
    p.add_argument("--tgt-lang")
    p.add_argument("--split", default="test",
                   help="valid | test | a named dataset's further test set (multi30k: test2017_flickr, "
                        "test2017_mscoco, test2018_flickr)")
    p.add_argument("--beam", type=int, default=4, help="beam size (1: greedy)")
    p.add_argument("--lenpen", type=float, default=0.6, help="length penalty")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--limit", type=int, help="only the first N sentences")
    p.add_argument("--output", help="write the hypotheses (detokenised, one per line) to this file")
    p.add_argument("--json", action="store_true",
                   help='print {"sacrebleu", "signature", "tok_bleu", "valid_loss"} as JSON')
    p.set_defaults(func=_evaluate)


def _load(args: argparse.Namespace) -> dict:
    from hat_ray.checkpoint import load_checkpoint
    from hat_ray.train.evaluate import average_checkpoints
    from hat_ray.train.state import numbered_checkpoints

    paths = [Path(p) for p in args.checkpoint]
    if args.average_last is not None and args.average_last < 1:
        raise ConfigError("command line", [f"--average-last must be a positive number of checkpoints, got "
                                           f"{args.average_last}"])
    if args.average_last:
        folder = paths[0].parent
        paths = numbered_checkpoints(folder)[-args.average_last:]
        if len(paths) < args.average_last:
            fix = (f"use --average-last {len(paths)} or fewer" if paths
                   else "pass the checkpoints themselves (training writes them every --save-every updates)")
            raise DataError(f"--average-last {args.average_last}: {folder} has only {len(paths)} numbered "
                            f"checkpoints; {fix}")
    if len(paths) == 1:
        return load_checkpoint(paths[0])
    log.info("averaging %d checkpoints: %s", len(paths), ", ".join(p.name for p in paths))
    return average_checkpoints(paths)


def _model(ckpt: dict, arch_path: str | None):
    """The static SubTransformer to evaluate: the checkpoint's own (subnet), or extracted from a
    SuperTransformer with --arch, else the checkpoint's Arch (imported HAT), else the largest."""
    from hat_ray.arch import Arch
    from hat_ray.checkpoint import model_from_checkpoint
    from hat_ray.model.extract import extract_subnet

    model, space = model_from_checkpoint(ckpt)
    if model.bound_arch is not None:
        if arch_path and load_arch(arch_path, space) != model.bound_arch:
            raise DataError(f"--arch {arch_path} is not the Arch this SubTransformer checkpoint was trained as")
        return model
    if arch_path:
        arch = load_arch(arch_path, space)
    elif ckpt.get("arch"):
        arch = Arch.from_dict(ckpt["arch"])
    else:
        arch = space.largest()
        log.info("no --arch: evaluating the largest SubTransformer %s", arch.key())
    return extract_subnet(model, arch)


def _evaluate(args: argparse.Namespace) -> int:
    from hat_ray.data.datasets import load_split
    from hat_ray.data.tokenizer import FairseqDictTokenizer, tokenizer_from_checkpoint
    from hat_ray.io import atomic_write
    from hat_ray.train.evaluate import evaluate

    if args.output:
        check_output(args.output, "--output")  # before minutes of decoding
    ckpt = _load(args)
    model = _model(ckpt, args.arch)
    tokenizer = tokenizer_from_checkpoint(ckpt, args.checkpoint[0])
    data_info = ckpt.get("data") or {}
    data = args.data or data_info.get("data")
    if data is None:
        raise DataError("the checkpoint does not say which data it was trained on: pass --data")
    data_dir = args.data_dir if args.data else (args.data_dir or data_info.get("data_dir"))
    same = data == data_info.get("data")  # the training data's languages apply only to it
    corpus = load_split(data, args.split, data_dir,
                        src_lang=args.src_lang or (data_info.get("src_lang") if same else None),
                        tgt_lang=args.tgt_lang or (data_info.get("tgt_lang") if same else None),
                        segmented=isinstance(tokenizer, FairseqDictTokenizer))
    if args.limit:
        corpus = corpus.subset(range(min(args.limit, len(corpus))))
    result = evaluate(model, None, tokenizer, corpus, args.beam, args.lenpen, args.max_tokens)
    if args.output:
        atomic_write(args.output, lambda tmp: Path(tmp).write_text("".join(h + "\n" for h in result.hypotheses),
                                                                     encoding="utf-8"))
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"SacreBLEU {result.sacrebleu:.2f} ({result.signature})")
        print(f"tokenized BLEU (compound split) {result.tok_bleu:.2f}")
        print(f"valid loss {result.valid_loss:.3f} bits/token ({args.split}, {len(corpus)} sentences)")
    return 0
