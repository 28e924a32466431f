"""extract_subnet: copy one Arch's first-k slices out of a SuperTransformer into a static model."""

from __future__ import annotations

import torch
from torch import Tensor

from hat_ray.arch import Arch
from hat_ray.model.transformer import ModelConfig, Transformer


def extract_subnet(super_model: Transformer, arch: Arch) -> Transformer:
    """A standalone Transformer holding contiguous copies of exactly ``arch``'s weights.

    The result has ``arch`` bound (``forward(src, prev)`` needs no Arch), the super model's
    dropout reference and position table, and the same dtype/device. Every copied slice is
    shape-checked against the destination parameter.
    """
    super_model.resolve(arch)  # raises if arch does not fit
    config = ModelConfig.for_arch(super_model.config, arch)
    ref = next(super_model.parameters())
    with torch.device("meta"):  # no wasted random init: every tensor is overwritten below
        sub = Transformer(config, arch=arch)
    sub = sub.to_empty(device=ref.device).to(dtype=ref.dtype)
    if config.share_embeddings:  # materialising meta tensors unties parameters: tie again
        sub.decoder_embed = sub.encoder_embed
    sub.positions = super_model.positions.clone()  # same super-dim table (non-persistent buffer)
    source = super_model.state_dict()
    with torch.no_grad():
        for name, dest in sub.state_dict().items():
            _copy_slice(name, source[name], dest)
    sub.train(super_model.training)
    return sub


def _copy_slice(name: str, src: Tensor, dest: Tensor) -> None:
    """dest <- src[:d0, :d1, ...] (first-k slice of the same rank)."""
    if src.dim() != dest.dim() or any(d > s for d, s in zip(dest.shape, src.shape)):
        raise ValueError(f"{name}: cannot take {tuple(dest.shape)} out of {tuple(src.shape)}")
    view = src[tuple(slice(0, d) for d in dest.shape)]
    dest.copy_(view)
