"""An export folder: the two graphs, the tokenizer and ``manifest.json``, written as a whole.

Layout::

    encoder.onnx, decoder_step.onnx        (--format onnx)   or encoder.pt, decoder_step.pt (torchscript)
    tokenizer.model                        sentencepiece model (or vocab.json: fairseq dictionaries)
    manifest.json                          written last: what the files are and how to run them

The folder is built under a temporary name next to ``out`` and renamed into place, so ``out`` is
either the previous export (or nothing) or the complete new one, never half of it. An existing
``out`` is replaced only when it is empty or holds exactly a previous export's files.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Mapping
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hat_ray import __version__
from hat_ray.errors import DataError, ExportError, OutputError
from hat_ray.export.graphs import dynamic_axes, names
from hat_ray.io import atomic_write, check_output, file_sha256
from hat_ray.model.transformer import Transformer
from hat_ray.tokens import BOS, EOS, PAD, UNK

MANIFEST = "manifest.json"
KIND = "hat-ray-export"
VERSION = 1
FORMATS = ("onnx", "torchscript")
TOKENIZER_FILES = {"sentencepiece": "tokenizer.model", "fairseq_dict": "vocab.json"}
CONVENTIONS = {
    "bos": BOS, "pad": PAD, "eos": EOS, "unk": UNK,
    "source": "token ids + eos, left-padded with pad to the batch's longest",
    "first_token": "eos (the first step's token); decoding stops at eos",
    "position": "padding_idx + length of the prefix fed so far (the first eos included)",
    "self_cache": "self_k_i / self_v_i: (rows, heads_i, t, qkv_dim / heads_i), t = 0 at the first step; "
                  "feed back new_self_k_i / new_self_v_i (reorder their rows with the beams)",
    "cross": "cross_k_i / cross_v_i from the encoder graph, reordered with the beams like the cache",
}


def check_format(fmt: str, int8: bool) -> None:
    """ExportError when ``fmt`` / ``int8`` cannot be honoured here (before any work)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "torchscript" and int8:
        from hat_ray.export.torchscript import INT8_REFUSED

        raise ExportError(INT8_REFUSED)
    if fmt == "onnx":
        missing = [pkg for pkg in ("onnx", "onnxruntime") if find_spec(pkg) is None]
        if missing:
            raise ExportError(f"--format onnx needs {' and '.join(missing)}: pip install 'hat-ray[runtimes]' "
                              "(or export with --format torchscript)")


def check_out(out: str | Path) -> Path:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not a previous export."""
    out = check_output(out, "--out", folder=True)
    if out.is_dir() and any(out.iterdir()) and previous_export(out) is None:
        raise OutputError(f"--out {out} is a folder holding files that are not a hat-ray export; choose a new "
                          "or empty folder (an earlier export there would be replaced)")
    return out


def previous_export(folder: Path) -> dict[str, Any] | None:
    """The manifest of the export in ``folder`` when the folder holds exactly its files."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND or not isinstance(manifest.get("files"), dict):
        return None
    present = {p.name for p in folder.iterdir()}
    return manifest if present <= {MANIFEST, *manifest["files"]} else None


def _versions() -> dict[str, str | None]:
    import torch

    out: dict[str, str | None] = {"hat_ray": __version__, "python": platform.python_version(),
                                  "torch": torch.__version__}
    for pkg in ("onnxruntime", "onnx"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _write_tokenizer(state: Mapping[str, Any], folder: Path) -> dict[str, str]:
    kind = state.get("kind")
    if kind not in TOKENIZER_FILES:
        raise DataError(f"unknown tokenizer kind {kind!r}")
    path = folder / TOKENIZER_FILES[kind]
    if kind == "sentencepiece":
        data = bytes(state["model"])
    else:
        data = json.dumps({side: list(state["vocab"][side]) for side in ("src", "tgt")}).encode()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return {"kind": kind, "file": path.name}


def export_model(model: Transformer, out: str | Path, fmt: str = "onnx", int8: bool = False,
                 tokenizer: Mapping[str, Any] | None = None, source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Export the static SubTransformer ``model`` into the folder ``out`` (see the module
    docstring) and return the manifest. ``tokenizer``: a tokenizer state (``to_state()``, as
    checkpoints hold it) copied into the folder so that it translates text on its own;
    ``source``: provenance recorded in the manifest (e.g. the checkpoint path)."""
    check_format(fmt, int8)
    arch = model.bound_arch
    if arch is None:
        raise ExportError("export needs a SubTransformer: extract one Arch from the SuperTransformer first")
    out = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: give the folder the usual permissions
    try:
        start = time.perf_counter()
        if fmt == "onnx":
            from hat_ray.export.onnx import OPSET, export_onnx

            paths, opset = export_onnx(model, tmp, int8), OPSET
        else:
            from hat_ray.export.torchscript import export_torchscript

            paths, opset = export_torchscript(model, tmp, int8), None
        seconds = time.perf_counter() - start
        tok = _write_tokenizer(tokenizer, tmp) if tokenizer else None
        io = names(arch)
        files = [p.name for p in paths.values()] + ([tok["file"]] if tok else [])
        manifest = {
            "kind": KIND, "version": VERSION, "format": fmt, "int8": int8,
            "quantization": ("onnxruntime quantize_dynamic: MatMul weights int8 (QInt8, per tensor), activations "
                             "quantized at run time") if int8 else None,
            "arch": arch.to_dict(), "arch_key": arch.key(),
            "model_config": model.config.to_dict(),
            "vocab": {"src": model.config.src_vocab, "tgt": model.config.tgt_vocab},
            "tokenizer": tok,
            "graphs": {"encoder": {"file": paths["encoder"].name, "inputs": io["encoder_in"],
                                   "outputs": io["encoder_out"]},
                       "step": {"file": paths["step"].name, "inputs": io["step_in"], "outputs": io["step_out"]}},
            "dynamic_axes": {part: {name: {str(k): v for k, v in axes.items()} for name, axes in graph.items()}
                             for part, graph in dynamic_axes(arch).items()},
            "conventions": CONVENTIONS,
            "opset": opset,
            "versions": _versions(),
            "source": dict(source or {}),
            "export_seconds": round(seconds, 3),
            "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)} for name in files},
        }
        atomic_write(tmp / MANIFEST, lambda p: Path(p).write_text(json.dumps(manifest, indent=2) + "\n",
                                                                   encoding="utf-8"))
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to ``out``; a previous export there is removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)  # put the previous export back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
