"""HAT's fitness for one Arch: label-smoothed CE (bits per target token) of the SuperTransformer's
inherited weights, in eval mode, over a fixed validation subset, in length-sorted batches.

Pure torch (no Ray). The weights and batches are packed into plain dicts of numpy arrays so the
Ray pool can put them in the object store once per node and map them zero-copy, read-only.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hat_ray.arch import Arch
from hat_ray.data.batching import Batch, EncodedCorpus, collate, make_batches
from hat_ray.model.transformer import ModelConfig, Transformer, model_from_tensors
from hat_ray.tokens import PAD
from hat_ray.train.loss import validation_loss


def pack_weights(model: Transformer) -> dict[str, Any]:
    """{"config": plain dict, "arrays": {name: np.ndarray}} with one array per distinct tensor
    (tied embeddings stored once, aliases listed)."""
    arrays: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    owner: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        ptr = tensor.data_ptr()
        if ptr in owner:
            aliases[name] = owner[ptr]
            continue
        owner[ptr] = name
        arrays[name] = tensor.detach().cpu().float().numpy()
    return {"config": model.config.to_dict(), "arrays": arrays, "aliases": aliases}


def unpack_weights(packed: dict[str, Any]) -> Transformer:
    """A SuperTransformer whose parameters VIEW the packed arrays (no copy). Arrays coming from
    Ray's object store are read-only: only inference may run on the result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": intended, read-only use
        tensors = {k: torch.from_numpy(v) for k, v in packed["arrays"].items()}
    tensors.update({alias: tensors[name] for alias, name in packed["aliases"].items()})
    model = model_from_tensors(ModelConfig.from_dict(packed["config"]), tensors)
    return model.eval().requires_grad_(False)


def pack_batches(batches: Sequence[Batch]) -> list[dict[str, np.ndarray]]:
    return [{"src": b.src.numpy(), "prev": b.prev.numpy(), "target": b.target.numpy()} for b in batches]


def unpack_batches(packed: Sequence[dict[str, np.ndarray]]) -> list[Batch]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for b in packed:
            target = torch.from_numpy(b["target"])
            ntok = int(target.ne(1).sum())
            out.append(Batch(torch.from_numpy(b["src"]), torch.from_numpy(b["prev"]), target, ntok,
                             np.arange(len(target))))
    return out


def slice_batches(packed: Sequence[dict[str, np.ndarray]], fraction: float, seed: int = 0
                  ) -> list[dict[str, np.ndarray]]:
    """A fixed random share ``fraction`` of the sentence pairs of packed validation batches (at
    least one pair), re-batched by length with the same padded-size budget as the largest of
    ``packed`` (the multi-fidelity search's slice, :class:`hat_ray.search.evolution.HatEvolution`).
    Deterministic in ``(packed, fraction, seed)``."""
    src = [row[row != PAD] for b in packed for row in b["src"]]  # sources are left-, targets right-padded
    tgt = [row[row != PAD] for b in packed for row in b["target"]]
    rng = np.random.default_rng([seed, 16])
    chosen = np.sort(rng.choice(len(src), size=max(1, round(fraction * len(src))), replace=False))
    src_lens, tgt_lens = (np.array([len(x[i]) for i in chosen]) for x in (src, tgt))
    budget = max(b["src"].shape[0] * max(b["src"].shape[1], b["target"].shape[1]) for b in packed)
    flat = EncodedCorpus(*_offsets([src[i] for i in chosen]), *_offsets([tgt[i] for i in chosen]))
    return pack_batches([collate(flat, idx) for idx in make_batches(src_lens, tgt_lens, budget, seed=None)])


def _offsets(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    return np.concatenate(rows).astype(np.int32), offsets


@dataclass
class Score:
    loss: float  # bits per target token
    seconds: float


class Scorer:
    """Scores Archs on one shared SuperTransformer over fixed batches."""

    def __init__(self, model: Transformer, batches: Sequence[Batch], eps: float = 0.1) -> None:
        self.model = model.eval()
        self.batches = list(batches)
        self.eps = eps
        self.tokens = sum(b.ntokens for b in self.batches)  # target tokens one score costs

    def score(self, arch: Arch) -> Score:
        start = time.perf_counter()
        loss = validation_loss(self.model, arch, self.batches, eps=self.eps)
        return Score(float(loss), time.perf_counter() - start)
