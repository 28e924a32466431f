"""Token ids, batching by max tokens with length bucketing, padding, and a resumable batch stream.

Sentences carry fairseq's layout: source ``x1..xn EOS``; target ``y1..ym EOS``; the decoder
input (previous tokens) is ``EOS y1..ym`` (EOS moved to the front). Sources are LEFT-padded and
targets right-padded with PAD (HAT/fairseq), both to the longest sentence of the batch.

A batch of B sentences costs ``B * max(longest source, longest target)`` padded tokens; every
batch keeps that at or below ``max_tokens``. Sentences are sorted by length first (length
bucketing: little padding), the batch list is fixed once, and each epoch visits it in a new
order seeded by ``(seed, epoch)``. Position ``p`` of the stream is therefore a pure function of
``p``: resuming at the saved position gives exactly the batches the interrupted run would have.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hat_ray.data.corpus import ParallelCorpus
from hat_ray.tokens import EOS, PAD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedCorpus:
    """Token ids, flat: sentence i of the source is ``src_tokens[src_offsets[i]:src_offsets[i+1]]``
    (EOS included); same for the target. int32 tokens, int64 offsets (compact to ship to workers)."""

    src_tokens: np.ndarray
    src_offsets: np.ndarray
    tgt_tokens: np.ndarray
    tgt_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lens(self) -> np.ndarray:
        return np.diff(self.src_offsets)

    @property
    def tgt_lens(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    def src(self, i: int) -> np.ndarray:
        return self.src_tokens[self.src_offsets[i]:self.src_offsets[i + 1]]

    def tgt(self, i: int) -> np.ndarray:
        return self.tgt_tokens[self.tgt_offsets[i]:self.tgt_offsets[i + 1]]

    @property
    def num_tokens(self) -> int:
        """Target tokens (EOS included): the unit of tokens/s and of the loss normaliser."""
        return int(self.tgt_offsets[-1])


def _flatten(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(s) + 1 for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = np.full(int(offsets[-1]), EOS, dtype=np.int32)
    for seq, start in zip(seqs, offsets[:-1]):
        flat[start:start + len(seq)] = seq
    return flat, offsets


def encode_corpus(corpus: ParallelCorpus, tokenizer, max_positions: int | None = None) -> EncodedCorpus:
    """Tokenise both sides (EOS appended). Pairs longer than ``max_positions`` tokens on either
    side are dropped (logged): they cannot be embedded."""
    src = tokenizer.encode_batch(corpus.src, "src")
    tgt = tokenizer.encode_batch(corpus.tgt, "tgt")
    if max_positions is not None:
        keep = [i for i in range(len(src)) if len(src[i]) < max_positions and len(tgt[i]) < max_positions]
        if len(keep) < len(src):
            log.info("%s: dropped %d of %d pairs longer than %d tokens", corpus.source, len(src) - len(keep),
                     len(src), max_positions)
            src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    st, so = _flatten(src)
    tt, to = _flatten(tgt)
    return EncodedCorpus(st, so, tt, to)


def make_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int,
                 seed: int | None = 0) -> list[np.ndarray]:
    """Index arrays of batches whose padded size ``B * max(S, T)`` is <= ``max_tokens``.

    Sorted by (target, source) length; ``seed`` shuffles sentences of equal length first (None:
    index order, for evaluation). Sentences longer than ``max_tokens`` alone are dropped (logged).
    """
    n = len(src_lens)
    order = np.arange(n) if seed is None else np.random.default_rng([seed, 7]).permutation(n)
    order = order[np.lexsort((src_lens[order], tgt_lens[order]))]  # stable: ties keep the shuffle
    sizes = np.maximum(src_lens, tgt_lens)
    batches: list[np.ndarray] = []
    start, longest, dropped = 0, 0, 0
    for pos, idx in enumerate(order.tolist()):
        size = int(sizes[idx])
        if size > max_tokens:
            dropped += 1
            if pos > start:
                batches.append(order[start:pos])
            start, longest = pos + 1, 0
            continue
        if (pos - start + 1) * max(longest, size) > max_tokens:
            batches.append(order[start:pos])
            start, longest = pos, 0
        longest = max(longest, size)
    if start < n:
        batches.append(order[start:])
    if dropped:
        log.warning("dropped %d sentence pairs longer than --max-tokens %d", dropped, max_tokens)
    return batches


@dataclass(frozen=True)
class Batch:
    src: Tensor  # (B, S) int64, left-padded, ends with EOS
    prev: Tensor  # (B, T) int64, EOS y1..ym, right-padded
    target: Tensor  # (B, T) int64, y1..ym EOS, right-padded
    ntokens: int  # non-pad target tokens
    indices: np.ndarray  # sentence indices in the EncodedCorpus

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src.to(device), self.prev.to(device), self.target.to(device), self.ntokens, self.indices)


def collate(data: EncodedCorpus, indices: np.ndarray) -> Batch:
    """Pad the sentences ``indices`` of ``data`` into one :class:`Batch`."""
    srcs = [data.src(i) for i in indices]
    tgts = [data.tgt(i) for i in indices]
    s_len, t_len = max(map(len, srcs)), max(map(len, tgts))
    src = np.full((len(srcs), s_len), PAD, dtype=np.int64)
    target = np.full((len(tgts), t_len), PAD, dtype=np.int64)
    prev = np.full((len(tgts), t_len), PAD, dtype=np.int64)
    for row, (s, t) in enumerate(zip(srcs, tgts)):
        src[row, s_len - len(s):] = s
        target[row, :len(t)] = t
        prev[row, 0] = EOS
        prev[row, 1:len(t)] = t[:-1]
    ntokens = int(sum(map(len, tgts)))
    return Batch(torch.from_numpy(src), torch.from_numpy(prev), torch.from_numpy(target), ntokens, np.asarray(indices))


class BatchStream:
    """An endless, deterministic sequence of batches: epoch e visits ``batches`` in an order
    seeded by ``(seed, e)``. ``at(p)`` is a pure function of the position ``p``."""

    def __init__(self, data: EncodedCorpus, batches: list[np.ndarray], seed: int) -> None:
        if not batches:
            raise ValueError("no batches: the corpus is empty after filtering")
        self.data, self.batches, self.seed = data, batches, seed
        self._epoch, self._order = -1, np.arange(0)

    def __len__(self) -> int:
        return len(self.batches)

    def epoch_of(self, position: int) -> int:
        return position // len(self.batches)

    def at(self, position: int) -> Batch:
        epoch, i = divmod(position, len(self.batches))
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.batches))
            self._epoch = epoch
        return collate(self.data, self.batches[int(self._order[i])])
