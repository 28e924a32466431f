"""Training output: progress bar, log lines, JSONL logs, TensorBoard scalars and per-rank traces.

Only rank 0 writes the bar, the logs and TensorBoard; with ``trace`` every rank writes
``trace/rank<r>.jsonl`` (update, Arch keys, first batch index, hash of the synchronised
gradient) so tests can check that workers trained the same Arch on synchronised gradients.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from hat_ray.io import atomic_write
from hat_ray.train.config import TrainConfig

log = logging.getLogger("hat_ray.train")


def _json_line(line: str) -> dict[str, Any] | None:
    """A log line as a dict; None for an empty or torn (partially written) line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


class TrainLogger:
    def __init__(self, out: Path | None, cfg: TrainConfig, rank: int) -> None:
        self.out, self.cfg, self.rank = (Path(out) if out is not None else None), cfg, rank
        self.main = rank == 0
        self.bar: Any = None
        self.tb: Any = None
        self._window_tokens, self._window_start = 0, time.monotonic()
        self._last_tokens_per_s = 0.0

    def _path(self, name: str) -> Path | None:
        if self.out is None:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name

    def start(self, update: int, total: int | None) -> None:
        self._window_tokens, self._window_start = 0, time.monotonic()
        if not self.main:
            return
        if self.cfg.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=update, unit="upd", file=sys.stderr, dynamic_ncols=True,
                            mininterval=1.0, disable=not sys.stderr.isatty())
        if self.cfg.tensorboard and self.out is not None and self.tb is None:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=update + 1 if update else None)

    def update(self, stats: dict[str, Any], total_tokens: int) -> None:
        self._window_tokens += stats["ntokens"]
        if not self.main:
            return
        u = stats["update"]
        self._append("train_log.jsonl", stats)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", refresh=False)
        if u % self.cfg.log_every == 0:
            now = time.monotonic()
            self._last_tokens_per_s = self._window_tokens / max(now - self._window_start, 1e-9)
            self._window_tokens, self._window_start = 0, now
            log.info("update %d | loss %.3f | nll %.3f | lr %.3g | gnorm %.2f | %.0f tok/s | %s", u, stats["loss"],
                     stats["nll"], stats["lr"], stats["gnorm"], self._last_tokens_per_s, stats["archs"][-1])
            self._scalars(u, {"train/tokens_per_s": self._last_tokens_per_s})
        self._scalars(u, {"train/loss": stats["loss"], "train/nll": stats["nll"], "train/lr": stats["lr"],
                          "train/gnorm": stats["gnorm"]})

    def valid(self, update: int, losses: dict[str, float]) -> None:
        if not self.main:
            return
        self._append("valid_log.jsonl", {"update": update, **losses})
        self._scalars(update, {f"valid/{k.removeprefix('valid_loss_')}": v for k, v in losses.items()})
        log.info("update %d | %s", update, " | ".join(f"{k} {v:.3f} bits" for k, v in losses.items()))

    def trace(self, stats: dict[str, Any], flat_grad: Tensor | None, first_batch: int) -> None:
        if not self.cfg.trace or self.out is None:
            return
        digest = None
        if flat_grad is not None:
            digest = hashlib.sha256(flat_grad.detach().cpu().numpy().tobytes()).hexdigest()[:16]
        row = {"update": stats["update"], "archs": stats["archs"], "first_batch": first_batch, "grad_sha": digest}
        self._append(f"trace/rank{self.rank}.jsonl", row, all_ranks=True)

    def truncate(self, update: int) -> None:
        """Drop log lines past ``update`` (a resume replays them), and a torn last line left by
        a process killed mid-write; the file is rewritten atomically."""
        for name in ("train_log.jsonl", "valid_log.jsonl", f"trace/rank{self.rank}.jsonl"):
            path = self._path(name)
            if path is None or not path.is_file() or (not self.main and not name.startswith("trace")):
                continue
            rows = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if (row := _json_line(line)) is not None and row.get("update", update + 1) <= update]
            text = "".join(r + "\n" for r in rows)
            atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))

    def _append(self, name: str, row: dict[str, Any], all_ranks: bool = False) -> None:
        path = self._path(name)
        if path is None or not (self.main or all_ranks):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self.close_bar()
        path = self._path("summary.json") if self.main else None
        if summary is not None and path is not None:
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
        if self.tb is not None:
            self.tb.close()
            self.tb = None
