"""Training checkpoints in an output folder, and the checks a resume makes.

Folder layout (``--out DIR``)::

    checkpoint_last.pt        full state: model, optimizer, progress, tokenizer, config (resume)
    checkpoint_u0001000.pt    model-only snapshots, the last ``keep_last`` kept (averaging)
    train_log.jsonl           one JSON line per update; valid_log.jsonl per validation
    summary.json              the last run's summary (updates, tokens, tokens/s, valid losses)
    tb/                       TensorBoard scalars

Every file is written atomically (temp file + rename): an interrupted save leaves the previous
checkpoint intact. A ``checkpoint_last.pt`` damaged by something else (a disk error, a partial
copy) is never silently replaced: ``--resume`` stops with a one-line error naming the file and
deletes nothing. There is no fallback to a numbered snapshot, because those hold the weights but
not Adam's state, so continuing from one would not be the exact continuation ``--resume``
promises; the user restores the file or starts a new run. Extra entries (all loadable with ``torch.load(weights_only=True)``):
``optimizer`` (Adam state dict), ``progress`` {update, position, tokens, elapsed_s, epoch,
world, fingerprint}, ``train_config``, ``tokenizer`` {kind, model bytes}, ``data`` (where the
corpus came from), ``valid`` (last validation losses).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from hat_ray.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from hat_ray.errors import DataError
from hat_ray.space import SearchSpace
from hat_ray.train.config import EXACT_RESUME_KEYS, TrainConfig

log = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
RESUME_FIX = ("nothing was deleted: restore it from a backup, or start a new run with another --out "
              "(the checkpoint_u*.pt snapshots keep the weights but not the optimizer state)")
SUMMARY = "summary.json"
_NUMBERED = re.compile(r"checkpoint_u(\d+)\.pt")


class CheckpointManager:
    """Writes ``checkpoint_last.pt`` and rotating numbered snapshots into ``out``."""

    def __init__(self, out: Path, keep_last: int = 5) -> None:
        self.out = Path(out)
        self.keep_last = keep_last
        self.last = self.out / LAST

    def save(self, model: torch.nn.Module, space: SearchSpace, update: int, extra: dict[str, Any]) -> None:
        meta = {"update": update, **extra.pop("meta", {})}
        vocab = extra.pop("vocab", None)
        ckpt = make_checkpoint(model, space, vocab=vocab, meta=meta, **extra)
        save_checkpoint(self.last, ckpt)
        if self.keep_last > 0:
            slim = {k: v for k, v in ckpt.items() if k != "optimizer"}
            save_checkpoint(self.out / f"checkpoint_u{update:07d}.pt", slim)
            for old in numbered_checkpoints(self.out)[:-self.keep_last]:
                old.unlink(missing_ok=True)


def numbered_checkpoints(folder: Path) -> list[Path]:
    """``checkpoint_u*.pt`` files of ``folder``, oldest update first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("checkpoint_u*.pt") if (m := _NUMBERED.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def load_resume(out: Path) -> dict[str, Any]:
    """The checkpoint to resume from; DataError when there is none or it is not a training one."""
    path = Path(out) / LAST
    if not path.is_file():
        raise DataError(f"--resume: no checkpoint to resume from in {out} (expected {LAST}); "
                        "run without --resume to start a new run")
    ckpt = load_checkpoint(path, fix=RESUME_FIX)
    missing = [k for k in ("optimizer", "progress", "train_config") if k not in ckpt]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)}: not a training checkpoint, cannot resume")
    return ckpt


def check_resume(ckpt: dict[str, Any], cfg: TrainConfig, fingerprint: str, world: int) -> None:
    """Refuse a resume on different data or another mode; warn when a changed setting makes it
    an inexact continuation."""
    old = ckpt["train_config"]
    progress = ckpt["progress"]
    if old.get("mode") != cfg.mode:
        raise DataError(f"the checkpoint is from {old.get('mode')} training, not {cfg.mode}")
    if progress.get("fingerprint") != fingerprint:
        raise DataError("the training data (after tokenisation) differs from the data this checkpoint was "
                        "trained on: resume with the same --data / --data-dir")
    changed = [k for k in EXACT_RESUME_KEYS if k in old and old[k] != getattr(cfg, k)]
    if progress.get("world", 1) != world:
        changed.append(f"workers ({progress.get('world', 1)} -> {world})")
    if changed:
        log.warning("resuming with changed %s: training continues, but not as an exact continuation",
                    ", ".join(changed))
