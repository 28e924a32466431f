"""`hat-ray import-hat CKPT --out OUT.pt [--dict-dir DIR] [--space SPACE]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hat_ray.arch import Arch
from hat_ray.checkpoint import save_checkpoint
from hat_ray.cli.common import check_output
from hat_ray.errors import DataError
from hat_ray.model.hat_import import import_hat_checkpoint
from hat_ray.space import SearchSpace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-hat",
        help="convert a HAT / fairseq checkpoint (and its dict.*.txt files) into a hat-ray checkpoint",
        description="Read a HAT/fairseq 0.8 checkpoint safely (no code runs from the file) and write a "
                    "hat-ray checkpoint holding the SuperTransformer-shaped weights, the search space, "
                    "the vocabularies and, for released SubTransformers, their architecture.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="HAT/fairseq checkpoint (e.g. checkpoint_best.pt)")
    p.add_argument("--out", required=True, metavar="OUT.pt", help="hat-ray checkpoint to write (atomically)")
    p.add_argument("--dict-dir", metavar="DIR", help="folder holding the dict.<lang>.txt files")
    p.add_argument("--space", metavar="SPACE",
                   help="search space (bundled name or YAML path) to check the tensors against; "
                        "default: built from the checkpoint's args")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = check_output(args.out, "--out")
    if out.exists() and out.resolve() == Path(args.checkpoint).resolve():
        raise DataError(f"--out {out} is the input checkpoint; choose another path")
    if args.dict_dir and not Path(args.dict_dir).is_dir():  # checked before minutes of loading
        raise DataError(f"--dict-dir {args.dict_dir} is not a folder; pass the folder holding HAT's dict.<lang>.txt "
                        "files (or leave --dict-dir out)")
    space = SearchSpace.load(args.space) if args.space else None
    ckpt = import_hat_checkpoint(args.checkpoint, dict_dir=args.dict_dir, space=space)
    save_checkpoint(out, ckpt)  # atomic; OutputError when it cannot be written
    print(summary_line(ckpt, args.checkpoint, out))
    return 0


def summary_line(ckpt: dict[str, Any], source: str | Path, out: str | Path) -> str:
    """One line: what was imported, its shapes, vocabularies, arch and training progress."""
    c, space = ckpt["model_config"], ckpt["space"]
    vocab = ckpt.get("vocab")
    words = f"vocab {len(vocab['src'])}/{len(vocab['tgt'])}" if vocab else f"no vocab ({c['src_vocab']}/{c['tgt_vocab']} rows)"
    arch = ckpt.get("arch")
    sub = "sub-config " + _arch_key(arch) if arch else "no sub-config"
    updates = ckpt["meta"].get("num_updates")
    progress = f", {updates} updates" if updates is not None else ""
    return (
        f"imported {source} -> {out}: space {space['name']}, encoder {c['encoder_embed_dim']}x"
        f"{len(c['encoder_ffn_dims'])}, decoder {c['decoder_embed_dim']}x{len(c['decoder_ffn_dims'])}, "
        f"{'shared' if c['share_embeddings'] else 'separate'} embeddings, {words}, {sub}{progress}"
    )


def _arch_key(arch: dict[str, Any]) -> str:
    return Arch.from_dict(arch).key()
