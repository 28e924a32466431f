"""`hat-ray export --checkpoint CK [--arch ARCH] [--format onnx|torchscript] [--int8] --out DIR [--json]`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from hat_ray.cli.common import load_arch
from hat_ray.errors import DataError
from hat_ray.export.folder import FORMATS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a SubTransformer as ONNX or TorchScript graphs (+ tokenizer) for deployment",
        description="Write an encoder graph and an incremental decoder-step graph (self-attention cache as "
                    "explicit inputs/outputs), the tokenizer and manifest.json into DIR; `hat-ray translate "
                    "--model DIR` (or hat_ray.export.runner.ExportedModel) runs them.")
    p.add_argument("--checkpoint", required=True, metavar="CK",
                   help="a SubTransformer checkpoint, or a SuperTransformer checkpoint with --arch")
    p.add_argument("--arch", metavar="ARCH_YAML",
                   help="the SubTransformer to extract from a SuperTransformer checkpoint (e.g. a search's "
                        "best_arch.yaml); with a SubTransformer checkpoint it must be the checkpoint's Arch")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="graph format (default: onnx)")
    p.add_argument("--int8", action="store_true",
                   help="int8 weights (ONNX Runtime dynamic quantization of the MatMul weights; onnx only)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write (new, empty, or an earlier export, which is replaced)")
    p.add_argument("--json", action="store_true",
                   help='print {"out", "format", "int8", "arch_key", "files": {name: bytes}, "export_seconds"}')
    p.set_defaults(func=_run)


def _model(ckpt: dict[str, Any], arch_path: str | None, source: str):
    """The static SubTransformer to export (see --arch)."""
    from hat_ray.arch import Arch
    from hat_ray.checkpoint import model_from_checkpoint
    from hat_ray.model.extract import extract_subnet

    model, space = model_from_checkpoint(ckpt)
    if model.bound_arch is not None:
        if arch_path and load_arch(arch_path, space) != model.bound_arch:
            raise DataError(f"--arch {arch_path} is not the Arch of the SubTransformer checkpoint {source}; "
                            "leave --arch out to export the checkpoint's own")
        return model, space
    if arch_path:
        arch = load_arch(arch_path, space)
    elif ckpt.get("arch"):  # an imported HAT SubTransformer: its sub-config
        arch = Arch.from_dict(ckpt["arch"])
        log.info("exporting the checkpoint's Arch %s", arch.key())
    else:
        raise DataError(f"{source} is a SuperTransformer checkpoint: pass --arch ARCH_YAML, the SubTransformer "
                        "to export (e.g. a search's best_arch.yaml)")
    return extract_subnet(model, arch).eval(), space


def _run(args: argparse.Namespace) -> int:
    from hat_ray.checkpoint import load_checkpoint
    from hat_ray.data.tokenizer import tokenizer_from_checkpoint
    from hat_ray.export.folder import check_format, check_out, export_model

    check_format(args.format, args.int8)  # before loading anything
    out = check_out(args.out)
    ckpt = load_checkpoint(args.checkpoint)
    model, space = _model(ckpt, args.arch, args.checkpoint)
    try:
        tokenizer = tokenizer_from_checkpoint(ckpt, args.checkpoint).to_state()
    except DataError as exc:
        tokenizer = None
        log.warning("exporting without a tokenizer (%s): the export decodes token ids only", exc)
    source = {"checkpoint": str(Path(args.checkpoint).resolve()), "checkpoint_kind": ckpt.get("kind"),
              "space": space.name, "data": ckpt.get("data"), "update": (ckpt.get("progress") or {}).get("update")}
    manifest = export_model(model.eval(), out, args.format, args.int8, tokenizer, source)
    files = {name: info["bytes"] for name, info in manifest["files"].items()}
    if args.json:
        print(json.dumps({"out": str(out), "format": args.format, "int8": args.int8, "arch_key": manifest["arch_key"],
                          "files": files, "export_seconds": manifest["export_seconds"]}))
    else:
        sizes = ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in files.items())
        print(f"exported {manifest['arch_key']} ({args.format}, {'int8' if args.int8 else 'fp32'}) to {out} in "
              f"{manifest['export_seconds']:.1f} s: {sizes}, manifest.json")
    return 0
