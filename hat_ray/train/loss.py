"""Label-smoothed cross entropy (fairseq's, as HAT trains and scores with) and the validation
loss in base 2 that HAT's search uses as fitness.

The search's scorer imports :func:`label_smoothed_nll_loss` and :func:`validation_loss` from
here: one definition of the fitness for training logs, evaluation and search.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from hat_ray.arch import Arch
from hat_ray.data.batching import Batch
from hat_ray.tokens import PAD

LN2 = math.log(2.0)


def label_smoothed_nll_loss(logits: Tensor, target: Tensor, eps: float = 0.1,
                            ignore_index: int = PAD) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed loss and summed NLL, in nats, over non-``ignore_index`` targets.

    logits (B, T, V) (any float dtype; computed in fp32), target (B, T) int64.
    loss = sum_t (1 - eps) * nll_t + (eps / V) * sum_v -log p_t(v)  (fairseq 0.8 / HAT).
    Returns two 0-dim fp32 tensors (loss_sum, nll_sum); divide by the token count for per-token values.
    """
    nll, smooth, vocab = _token_terms(logits, target, ignore_index)
    nll_sum, smooth_sum = nll.sum(), smooth.sum()
    loss = (1.0 - eps) * nll_sum + (eps / vocab) * smooth_sum
    return loss, nll_sum


def _token_terms(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, int]:
    """Per-token NLL and summed -log p over the vocabulary (B, T), 0 at ``ignore_index``; V."""
    lprobs = F.log_softmax(logits.float(), dim=-1)
    nll = -lprobs.gather(dim=-1, index=target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    smooth = -lprobs.sum(dim=-1)  # (B, T)
    keep = target.ne(ignore_index)
    return nll.masked_fill(~keep, 0.0), smooth.masked_fill(~keep, 0.0), lprobs.size(-1)


def row_loss_sums(model: torch.nn.Module, arch: Arch | None, batches: Iterable[Batch], eps: float = 0.1
                  ) -> dict[int, tuple[float, int]]:
    """{sentence index (``Batch.indices``): (label-smoothed loss in nats, target tokens)}: the
    parts of :func:`validation_loss` per sentence, so the loss of any subset of the sentences
    follows without scoring again (multi-fidelity: how well a slice ranks Archs)."""
    model.eval()
    out: dict[int, tuple[float, int]] = {}
    with torch.inference_mode():
        for batch in batches:
            nll, smooth, vocab = _token_terms(model(batch.src, batch.prev, arch), batch.target, PAD)
            rows = ((1.0 - eps) * nll.sum(dim=1) + (eps / vocab) * smooth.sum(dim=1)).tolist()
            counts = batch.target.ne(PAD).sum(dim=1).tolist()
            out.update({int(i): (loss, int(n)) for i, loss, n in zip(batch.indices, rows, counts)})
    return out


CHUNK_LOGITS = 2**21  # logits (tokens x vocabulary) that exist at once when scoring: 8 MiB in fp32


def batch_loss(model: torch.nn.Module, arch: Arch | None, batch: Batch, eps: float = 0.1,
               chunk_logits: int = CHUNK_LOGITS) -> Tensor:
    """Summed label-smoothed loss (nats) of one batch, without gradients. On a hat-ray
    Transformer the output projection runs on a few non-pad target tokens at a time (at most
    ``chunk_logits`` logits: 64 tokens of a 32k vocabulary): the logits of the whole batch (512
    MiB for 4,096 tokens of a 32k vocabulary in fp32) never exist, and padding gets none; a
    scorer's memory beyond the weights stays small (``--scorer-slots``). Other models: one pass,
    :func:`label_smoothed_nll_loss`."""
    if not (hasattr(model, "encode") and hasattr(model, "project_out")):
        return label_smoothed_nll_loss(model(batch.src, batch.prev, arch), batch.target, eps)[0]
    arch = model.resolve(arch)
    hidden = model.decode(batch.prev, model.encode(batch.src, arch), arch, project=False)
    keep = batch.target.ne(PAD)
    rows, target = hidden[keep], batch.target[keep]  # (N, dim), (N,)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    vocab = (model.decoder_embed if model.output_proj is None else model.output_proj).shape[0]
    chunk = max(1, chunk_logits // vocab)
    for start in range(0, len(target), chunk):
        logits = model.project_out(rows[start:start + chunk], arch.decoder_embed_dim)
        nll, smooth, vocab = _token_terms(logits, target[start:start + chunk], PAD)
        total += (1.0 - eps) * nll.sum() + (eps / vocab) * smooth.sum()
    return total


def validation_loss(model: torch.nn.Module, arch: Arch | None, batches: Iterable[Batch], eps: float = 0.1,
                    device: torch.device | str | None = None) -> float:
    """Label-smoothed CE per target token, in BITS (HAT's fitness), over ``batches``.

    Runs in eval mode under ``torch.inference_mode`` (read-only on the weights, so it is safe on
    weights shared through the object store) and restores the model's train/eval mode after.
    Pass length-sorted batches (:func:`hat_ray.data.batching.make_batches` with ``seed=None``)
    for the least padding. ``arch`` None: the model's bound Arch (a static SubTransformer).
    """
    total, ntokens = loss_sums(model, arch, batches, eps, device)
    if ntokens == 0:
        raise ValueError("validation_loss needs at least one target token")
    return total / ntokens / LN2


def loss_sums(model: torch.nn.Module, arch: Arch | None, batches: Iterable[Batch], eps: float = 0.1,
              device: torch.device | str | None = None) -> tuple[float, int]:
    """(summed label-smoothed loss in nats, target tokens) over ``batches``; the parts of
    :func:`validation_loss`, for callers that add them up across workers."""
    was_training = model.training
    model.eval()
    total, ntokens = 0.0, 0
    try:
        with torch.inference_mode():
            for batch in batches:
                if device is not None:
                    batch = batch.to(device)
                loss = batch_loss(model, arch, batch, eps)
                total += float(loss)
                ntokens += batch.ntokens
    finally:
        model.train(was_training)
    return total, ntokens
