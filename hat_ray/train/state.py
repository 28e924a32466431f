"""Training checkpoints in an output folder, and the checks a resume makes.

Folder layout (``--out DIR``)::

    checkpoint_last.pt        full state: model, optimizer, progress, tokenizer, config (resume)
    checkpoint_prev.pt        the full state saved before it (fallback for a damaged last)
    checkpoint_u0001000.pt    model-only snapshots, the last ``keep_last`` kept (averaging)
    train_log.jsonl           one JSON line per update; valid_log.jsonl per validation
    summary.json              the last run's summary (updates, tokens, tokens/s, valid losses)
    tb/                       TensorBoard scalars

Every file is written atomically (temp file + rename): an interrupted save leaves the previous
checkpoint intact. Before a new ``checkpoint_last.pt`` replaces the old one, the old one is kept
as ``checkpoint_prev.pt`` (a hard link where the file system allows it, so no extra disk until
the new file lands). ``--resume`` on a ``checkpoint_last.pt`` damaged by something else (a disk
error, a partial copy) says so in one line, moves the damaged file aside to
``checkpoint_last.damaged.pt`` and continues from ``checkpoint_prev.pt``, the previous good full
state (the logs are cut back to its update, so the run is still an exact continuation). With no
usable previous checkpoint it stops with a one-line error naming the file and deletes nothing.
The numbered snapshots are never used for resuming: they hold the weights but not Adam's state.
Extra entries (all loadable with ``torch.load(weights_only=True)``):
``optimizer`` (Adam state dict), ``progress`` {update, position, tokens, elapsed_s, epoch,
world, fingerprint}, ``train_config``, ``tokenizer`` {kind, model bytes}, ``data`` (where the
corpus came from), ``valid`` (last validation losses).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from hat_ray.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from hat_ray.errors import DataError
from hat_ray.space import SearchSpace
from hat_ray.train.config import EXACT_RESUME_KEYS, TrainConfig

log = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
PREV = "checkpoint_prev.pt"
DAMAGED = "checkpoint_last.damaged.pt"
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
        self.last_damaged = False  # set on a resume from checkpoint_prev.pt (see load_resume)

    def save(self, model: torch.nn.Module, space: SearchSpace, update: int, extra: dict[str, Any]) -> None:
        meta = {"update": update, **extra.pop("meta", {})}
        vocab = extra.pop("vocab", None)
        ckpt = make_checkpoint(model, space, vocab=vocab, meta=meta, **extra)
        if self.last_damaged:  # keep the damaged file for inspection, and the good previous one
            os.replace(self.last, self.out / DAMAGED)
            self.last_damaged = False
        elif self.last.is_file():
            _keep_previous(self.last, self.out / PREV)
        save_checkpoint(self.last, ckpt)
        if self.keep_last > 0:
            slim = {k: v for k, v in ckpt.items() if k != "optimizer"}
            save_checkpoint(self.out / f"checkpoint_u{update:07d}.pt", slim)
            for old in numbered_checkpoints(self.out)[:-self.keep_last]:
                old.unlink(missing_ok=True)


def _keep_previous(last: Path, prev: Path) -> None:
    """``prev`` becomes the current ``last`` (hard link, or a copy), atomically."""
    tmp = prev.with_name(prev.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(last, tmp)
    except OSError:  # no hard links here (some network or FAT file systems)
        shutil.copyfile(last, tmp)
    os.replace(tmp, prev)


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
    try:
        ckpt = load_checkpoint(path, fix=RESUME_FIX)
    except DataError as exc:
        ckpt = _previous_good(Path(out), exc)
    missing = [k for k in ("optimizer", "progress", "train_config") if k not in ckpt]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)}: not a training checkpoint, cannot resume")
    return ckpt


def _previous_good(out: Path, damaged: DataError) -> dict[str, Any]:
    """The full state in ``checkpoint_prev.pt`` when ``checkpoint_last.pt`` cannot be read;
    re-raises ``damaged`` when there is none (or it is damaged too)."""
    prev = out / PREV
    if not prev.is_file():
        raise damaged
    try:
        ckpt = load_checkpoint(prev, fix=RESUME_FIX)
    except DataError:
        raise damaged from None
    if not all(k in ckpt for k in ("optimizer", "progress", "train_config")):
        raise damaged
    update = ckpt["progress"].get("update", 0)
    log.warning("%s is damaged (the first save moves it to %s); resuming from the previous checkpoint %s "
                "(update %d)", out / LAST, DAMAGED, prev, update)
    return {**ckpt, "resumed_from": PREV}


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
