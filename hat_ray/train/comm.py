"""Collective operations for data-parallel training, without Ray (plain torch.distributed).

Ray Train's TorchTrainer sets up the process group (gloo on CPU, nccl on GPU); the training
loop only needs rank, world size, a SUM all-reduce and a parameter broadcast. Gradients are
all-reduced explicitly once per update (after all accumulation micro-batches), as DDP with
``no_sync`` would, but as ONE flat buffer and summed rather than averaged, so the loop can
normalise by the global target-token count exactly as fairseq does. DDP itself is not used: an
elastic decoder depth leaves whole layers without gradients in most updates, which DDP only
tolerates with ``find_unused_parameters`` (an extra graph traversal per step).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class LocalComm:
    """Single process: every collective is the identity."""

    rank = 0
    world = 1

    def all_reduce_(self, tensor: Tensor) -> Tensor:
        return tensor

    def broadcast_params_(self, model: nn.Module) -> None:
        return None


class TorchDistComm:
    """Collectives over the default torch.distributed process group (already initialised)."""

    def __init__(self) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised (run under Ray Train's TorchTrainer)")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        # nccl reduces CUDA tensors only: small CPU statistics travel through the GPU
        nccl = dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def all_reduce_(self, tensor: Tensor) -> Tensor:
        """In-place SUM over ranks (``tensor`` may live on the CPU even with nccl)."""
        if tensor.device == self.device:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            return tensor
        moved = tensor.to(self.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return tensor.copy_(moved)

    def broadcast_params_(self, model: nn.Module) -> None:
        """Make every rank start from rank 0's weights."""
        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p.data, src=0)


Comm = LocalComm | TorchDistComm


def sync_grads_(params: list[nn.Parameter], comm: Comm, scale: float) -> Tensor | None:
    """Sum gradients over ranks (one flat all-reduce) and multiply them by ``scale``.

    Parameters without a gradient (layers the update's Arch skipped) are left as ``None``; every
    rank trains the same Arch, so every rank has the same set. Returns the flat synchronised
    gradient (for tracing) when world > 1, else None.
    """
    with_grad = [p for p in params if p.grad is not None]
    if comm.world == 1:
        for p in with_grad:
            p.grad.mul_(scale)
        return None
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])
    comm.all_reduce_(flat).mul_(scale)
    offset = 0
    for p in with_grad:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
    return flat
