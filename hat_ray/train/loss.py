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
    lprobs = F.log_softmax(logits.float(), dim=-1)
    target = target.unsqueeze(-1)
    nll = -lprobs.gather(dim=-1, index=target).squeeze(-1)  # (B, T)
    smooth = -lprobs.sum(dim=-1)  # (B, T)
    keep = target.squeeze(-1).ne(ignore_index)
    nll_sum = nll.masked_fill(~keep, 0.0).sum()
    smooth_sum = smooth.masked_fill(~keep, 0.0).sum()
    loss = (1.0 - eps) * nll_sum + (eps / lprobs.size(-1)) * smooth_sum
    return loss, nll_sum


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
                loss, _ = label_smoothed_nll_loss(model(batch.src, batch.prev, arch), batch.target, eps)
                total += float(loss)
                ntokens += batch.ntokens
    finally:
        model.train(was_training)
    return total, ntokens
