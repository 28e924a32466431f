"""hat-ray checkpoints: plain containers + tensors, written atomically, read with weights_only.

Layout (a dict, loadable with ``torch.load(weights_only=True)``)::

    format: "hat-ray-checkpoint", version: 1,
    kind: "supernet" | "subnet",
    space: SearchSpace.to_dict(), model_config: ModelConfig.to_dict(),
    arch: Arch.to_dict() | None      # the bound Arch of a subnet (or HAT's sub-config)
    model: state_dict, vocab: {"src": [tokens], "tgt": [tokens]} | None, meta: {...}
    (training adds optimizer / progress entries; unknown extra keys are kept)
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hat_ray.arch import Arch
from hat_ray.errors import DataError
from hat_ray.io import atomic_write
from hat_ray.model.extract import extract_subnet
from hat_ray.model.transformer import ModelConfig, Transformer
from hat_ray.space import SearchSpace

FORMAT = "hat-ray-checkpoint"
VERSION = 1
EARLIER = "use an earlier checkpoint or import HAT files with `hat-ray import-hat`"


def make_checkpoint(model: Transformer, space: SearchSpace, vocab: Mapping[str, list[str]] | None = None,
                    arch: Arch | None = None, meta: Mapping[str, Any] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """Assemble the checkpoint dict for ``model`` (a SuperTransformer or a static subnet)."""
    bound = model.bound_arch
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "subnet" if bound is not None else "supernet",
        "space": space.to_dict(),
        "model_config": model.config.to_dict(),
        "arch": (bound or arch).to_dict() if (bound or arch) is not None else None,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "vocab": dict(vocab) if vocab is not None else None,
        "meta": dict(meta or {}),
        **extra,
    }


def save_checkpoint(path: str | Path, checkpoint: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename)."""
    atomic_write(path, lambda tmp: torch.save(dict(checkpoint), tmp))


def load_checkpoint(path: str | Path, fix: str = EARLIER) -> dict[str, Any]:
    """Read a hat-ray checkpoint safely; DataError naming the file when it is missing,
    truncated, not a hat-ray checkpoint or from a newer version. ``fix`` ends the message of a
    corrupted file (what the user can do about it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; check the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"checkpoint {path} is corrupted or not a hat-ray checkpoint ({_detail(exc)}); {fix}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path} is not a hat-ray checkpoint (HAT/fairseq files: use `hat-ray import-hat`)")
    if ckpt.get("version", 0) > VERSION:
        raise DataError(f"{path} was written by a newer hat-ray (version {ckpt['version']}); upgrade hat-ray")
    missing = [k for k in ("space", "model_config", "model") if k not in ckpt]
    if missing:
        raise DataError(f"checkpoint {path} lacks {', '.join(missing)}; {fix}")
    return ckpt


def _detail(exc: BaseException) -> str:
    """The first sentence of a loader's message (torch appends paragraphs of advice)."""
    text = " ".join(str(exc).split())
    return text.split(". ")[0][:160] or type(exc).__name__


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> tuple[Transformer, SearchSpace]:
    """Rebuild the model (and its space) from a loaded checkpoint dict."""
    space = SearchSpace.from_dict(ckpt["space"], source="checkpoint space")
    config = ModelConfig.from_dict(ckpt["model_config"])
    arch = Arch.from_dict(ckpt["arch"]) if ckpt.get("kind") == "subnet" else None
    model = Transformer(config, arch=arch)
    model.load_state_dict(ckpt["model"])
    return model, space


def load_model(path: str | Path, arch: Arch | None = None) -> tuple[Transformer, SearchSpace, dict[str, Any]]:
    """Load a checkpoint; with ``arch``, return that SubTransformer extracted from it."""
    ckpt = load_checkpoint(path)
    model, space = model_from_checkpoint(ckpt)
    if arch is not None and model.bound_arch is None:
        space.check(arch)
        model = extract_subnet(model, arch)
    return model, space, ckpt
