"""The training loop: SuperTransformer (one sampled Arch per update) or one fixed SubTransformer.

Determinism, which exact resume and data parallelism rely on:
- the Arch(s) of update ``u`` come from ``np.random.default_rng([seed, u])``: every worker and
  every accumulation micro-batch of that update trains the same Arch, and a resumed run samples
  the same sequence;
- the batches of update ``u`` are stream positions ``position + m * world + rank`` (micro-batch
  m) of a :class:`~hat_ray.data.batching.BatchStream`, a pure function of the position;
- dropout draws from torch's generator re-seeded at each update with ``(seed, u, rank)``;
- the learning rate is a pure function of ``u``.
So a checkpoint needs only the weights, Adam's state and ``(update, position)``, and the
updates after a resume are bit-identical to those of an uninterrupted run (same thread count).
The one exception is ``largest_first_minutes``: the update at which the time runs out depends on
the machine's speed. Every worker reports its clock with the update's sums, so all switch after
the same update; the switch update is kept in the checkpoint, so a resume after it is exact.

Gradients: the summed loss of all micro-batches is back-propagated, gradients are summed over
workers and divided by the global number of target tokens (fairseq's normalisation), clipped,
then Adam steps with the scheduled learning rate.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hat_ray.arch import Arch
from hat_ray.data.batching import Batch, BatchStream, EncodedCorpus, collate, make_batches
from hat_ray.model.transformer import Transformer
from hat_ray.space import SearchSpace
from hat_ray.train.comm import Comm, LocalComm, sync_grads_
from hat_ray.train.config import TrainConfig
from hat_ray.train.logs import TrainLogger
from hat_ray.train.loss import LN2, label_smoothed_nll_loss, loss_sums
from hat_ray.train.state import PREV, CheckpointManager, check_resume

log = logging.getLogger(__name__)


def update_seed(seed: int, update: int, rank: int = 0) -> int:
    """Seed for torch's generator (dropout) during update ``update`` on ``rank``."""
    digest = hashlib.sha256(f"{seed}:{update}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def archs_for_update(space: SearchSpace, seed: int, update: int, sandwich: bool = False,
                     largest_prob: float = 0.0, largest_first: int = 0) -> list[Arch]:
    """The Arch(s) trained at ``update``: one uniform sample (HAT), or with the sandwich rule the
    largest, the smallest and one uniform sample (BigNAS), all seeded by the update number. With
    ``largest_prob`` p, an update trains the largest Arch instead of its sample with chance p (the
    draw comes after the sample, so p = 0 gives HAT's sequence unchanged). Updates 1 to
    ``largest_first`` train the largest Arch only (OFA's order: the full network first); later
    updates get exactly the Archs they would get without it."""
    if update <= largest_first:
        return [space.largest()]
    rng = np.random.default_rng([seed, update])
    sampled = space.sample(rng)
    if sandwich:
        return [space.largest(), space.smallest(), sampled]
    return [space.largest()] if largest_prob and rng.random() < largest_prob else [sampled]


class Trainer:
    """Trains ``model`` on ``train``; see the module docstring. Supernet mode: ``model`` is a
    SuperTransformer and each update samples its Arch(s) from ``space``. Subnet mode: ``model``
    is a static SubTransformer (its Arch bound) or any module called as ``model(src, prev, None)``.
    Only rank 0 writes into ``out``; ``checkpoint_extra`` entries (tokenizer, data, meta, vocab)
    go into every checkpoint."""

    def __init__(self, model: torch.nn.Module, space: SearchSpace, cfg: TrainConfig, train: EncodedCorpus,
                 valid: EncodedCorpus | None, out: Path | None = None, comm: Comm | None = None,
                 checkpoint_extra: dict[str, Any] | None = None, device: str | torch.device = "cpu",
                 on_save: Callable[[], None] | None = None) -> None:
        """``on_save``: called on every rank after each checkpoint save, when ``out`` holds a
        consistent state (e.g. to copy it elsewhere; see hat_ray.train.artifacts)."""
        self.model, self.space, self.cfg = model.to(device), space, cfg
        self.on_save = on_save
        self.comm = comm or LocalComm()
        self.device = torch.device(device)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                    eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        self.schedule = cfg.schedule_fn()
        self.stream = BatchStream(train, make_batches(train.src_lens, train.tgt_lens, cfg.max_tokens, cfg.seed),
                                  cfg.seed)
        self.has_valid = valid is not None and len(valid) > 0  # the same on every rank
        self.valid = [] if valid is None else [
            collate(valid, b) for b in make_batches(valid.src_lens, valid.tgt_lens, cfg.max_tokens, seed=None)
        ][self.comm.rank::self.comm.world]
        self.update, self.position, self.tokens, self.elapsed_before = 0, 0, 0, 0.0
        self.largest_until: int | None = None  # largest_first_minutes: the update after which time ran out
        self.fingerprint = corpus_fingerprint(train)
        self.ckpt = CheckpointManager(out, cfg.keep_last) if (out is not None and self.comm.rank == 0) else None
        self.extra = dict(checkpoint_extra or {})
        self.logger = TrainLogger(out, cfg, self.comm.rank)
        self._stop, self._session_start, self.last_valid = False, time.monotonic(), {}
        self.comm.broadcast_params_(self.model)

    # ---- one update ----
    def archs(self, update: int) -> list[Arch | None]:
        if self.cfg.mode == "subnet":
            return [None]  # the static SubTransformer's bound Arch
        cfg = self.cfg
        return list(archs_for_update(self.space, cfg.seed, update, cfg.sandwich, cfg.largest_prob,
                                     max(cfg.largest_first, self._largest_by_time(update))))

    def _largest_by_time(self, update: int) -> int:
        """The last update that trains the largest Arch under ``largest_first_minutes``: ``update``
        itself while the time has not run out (at the end of the update before), else the update
        after which it ran out."""
        if not self.cfg.largest_first_minutes:
            return 0
        return self.largest_until if self.largest_until is not None else update

    def train_step(self) -> dict[str, Any]:
        """Run update ``self.update + 1`` and return its statistics (losses in bits/token)."""
        u, cfg, comm = self.update + 1, self.cfg, self.comm
        archs = self.archs(u)
        torch.manual_seed(update_seed(cfg.seed, u, comm.rank))
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        sums, first_batch = self._accumulate(archs)
        sums[4] = float(self._out_of_time())
        sums[5] = float(self.cfg.largest_first_minutes > 0 and self.largest_until is None
                        and self.elapsed() >= self.cfg.largest_first_minutes * 60)
        comm.all_reduce_(sums)
        flat = sync_grads_(self.params, comm, 1.0 / max(float(sums[2]), 1.0))
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf))
        lr = self.schedule.lr_at(u)
        for group in self.opt.param_groups:
            group["lr"] = lr
        if math.isfinite(gnorm):
            self.opt.step()
        else:
            log.warning("update %d: non-finite gradient norm, update skipped (lower --lr?)", u)
        self.update, self.position = u, self.position + cfg.update_freq * comm.world
        self.tokens += int(sums[3])
        self._stop = bool(sums[4] > 0)
        if sums[5] > 0:  # some worker's clock passed largest_first_minutes: all sample from the next update
            self.largest_until = u
            log.info("update %d: %g minutes of largest-first training done; sampling Archs from now on", u,
                     self.cfg.largest_first_minutes)
        stats = {"update": u, "loss": float(sums[0] / sums[2]) / LN2, "nll": float(sums[1] / sums[2]) / LN2,
                 "lr": lr, "gnorm": gnorm, "ntokens": int(sums[3]), "archs": [a.key() if a else "bound" for a in archs]}
        self.logger.trace(stats, flat, first_batch)
        return stats

    def _accumulate(self, archs: list[Arch | None]) -> tuple[torch.Tensor, int]:
        """Forward/backward of this rank's micro-batches for every Arch of the update (gradients
        summed). Returns [loss, nll, tokens x archs, data tokens, 0, 0] and the first sentence index."""
        cfg, comm = self.cfg, self.comm
        sums = torch.zeros(6, dtype=torch.float64)
        first = -1
        for m in range(cfg.update_freq):
            batch = self.stream.at(self.position + m * comm.world + comm.rank).to(self.device)
            first = int(batch.indices[0]) if first < 0 else first
            for arch in archs:
                logits = self.model(batch.src, batch.prev, arch)  # (B, T, V)
                loss, nll = label_smoothed_nll_loss(logits, batch.target, cfg.label_smoothing)
                loss.backward()
                sums[0] += float(loss.detach())
                sums[1] += float(nll.detach())
                sums[2] += batch.ntokens
            sums[3] += batch.ntokens
        return sums, first

    def _out_of_time(self) -> bool:
        return self.cfg.max_minutes is not None and self.elapsed() >= self.cfg.max_minutes * 60

    def elapsed(self) -> float:
        """Seconds of training so far, over every session of this run."""
        return self.elapsed_before + time.monotonic() - self._session_start

    def done(self) -> bool:
        return self._stop or (self.cfg.max_updates is not None and self.update >= self.cfg.max_updates)

    # ---- validation ----
    def validation_archs(self) -> dict[str, Arch | None]:
        if self.cfg.mode == "subnet":
            return {"subnet": self.archs(0)[0]}
        return {"largest": self.space.largest(), "smallest": self.space.smallest()}

    def validate(self) -> dict[str, float]:
        """Validation loss (bits/token) of the largest and smallest Arch (supernet) or of the
        subnet, summed over every worker's shard of the validation batches."""
        out = {}
        for name, arch in self.validation_archs().items():
            total, ntok = loss_sums(self.model, arch, self.valid, self.cfg.label_smoothing, self.device)
            sums = self.comm.all_reduce_(torch.tensor([total, float(ntok)], dtype=torch.float64))
            if sums[1] > 0:
                out[f"valid_loss_{name}"] = float(sums[0] / sums[1]) / LN2
        self.last_valid = out
        self.logger.valid(self.update, out)
        return out

    # ---- the loop ----
    def train(self, callback: Callable[[Trainer, dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Update until ``max_updates`` or ``max_minutes``; validate / save every N updates and at
        the end. On Ctrl-C the last completed update is saved before the interrupt propagates."""
        cfg = self.cfg
        self._session_start = time.monotonic()
        self.logger.start(self.update, cfg.max_updates)
        saved = validated = self.update
        try:
            while not self.done():
                stats = self.train_step()
                self.logger.update(stats, self.tokens)
                if cfg.validate_every and self.update % cfg.validate_every == 0:
                    self.validate()
                    validated = self.update
                if cfg.save_every and self.update % cfg.save_every == 0:
                    self.save()
                    saved = self.update
                if callback is not None:
                    callback(self, stats)
        except KeyboardInterrupt:
            if self.ckpt is not None and self.update > saved:
                self.save()
                log.info("interrupted: saved update %d to %s (continue with --resume)", self.update, self.ckpt.last)
            raise
        finally:
            self.logger.close_bar()
        if self.has_valid and validated != self.update:
            self.validate()
        if self.update != saved or self.update == 0:
            self.save()
        summary = self.summary()
        self.logger.close(summary)
        return summary

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        return {"update": self.update, "tokens": self.tokens, "elapsed_s": elapsed,
                "tokens_per_s": self.tokens / max(elapsed, 1e-9), **self.last_valid}

    # ---- checkpoints ----
    def state(self) -> dict[str, Any]:
        """Checkpoint entries besides the model (see :mod:`hat_ray.train.state`)."""
        return {"optimizer": self.opt.state_dict(), "train_config": self.cfg.to_dict(),
                "progress": {"update": self.update, "position": self.position, "tokens": self.tokens,
                             "elapsed_s": self.elapsed(), "epoch": self.stream.epoch_of(self.position),
                             "world": self.comm.world, "fingerprint": self.fingerprint,
                             "largest_until": self.largest_until},
                "valid": dict(self.last_valid)}

    def save(self) -> None:
        if self.ckpt is not None:
            self.ckpt.save(self.model, self.space, self.update, {**self.extra, **self.state()})
        if self.on_save is not None:
            self.on_save()

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save` (weights, Adam, progress)."""
        check_resume(ckpt, self.cfg, self.fingerprint, self.comm.world)
        if self.ckpt is not None and ckpt.get("resumed_from") == PREV:
            self.ckpt.last_damaged = True
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        p = ckpt["progress"]
        self.update, self.position, self.tokens = int(p["update"]), int(p["position"]), int(p["tokens"])
        self.elapsed_before = float(p["elapsed_s"])
        self.largest_until = p.get("largest_until")
        self.last_valid = dict(ckpt.get("valid") or {})
        self.logger.truncate(self.update)
        self.comm.broadcast_params_(self.model)


def corpus_fingerprint(data: EncodedCorpus) -> str:
    """sha256 of the token ids: a resumed run must see exactly the same training data."""
    h = hashlib.sha256()
    for arr in (data.src_tokens, data.src_offsets, data.tgt_tokens, data.tgt_offsets):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def batches_of(data: EncodedCorpus, max_tokens: int) -> list[Batch]:
    """Length-sorted evaluation batches (no shuffling) of ``data``."""
    return [collate(data, b) for b in make_batches(data.src_lens, data.tgt_lens, max_tokens, seed=None)]


__all__ = ["Trainer", "Transformer", "archs_for_update", "batches_of", "corpus_fingerprint", "update_seed"]
