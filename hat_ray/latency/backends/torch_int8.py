"""``runtime: torch-int8``: PyTorch eager with dynamic int8 quantization (CPU, fp32 model).

``torch.ao.quantization.quantize_dynamic`` swaps ``nn.Linear`` modules only, and the elastic
layers (hat_ray.model.layers) compute every projection with ``F.linear`` on sliced parameters:
applied to the static model as it is, it would quantize nothing. :func:`quantize` therefore
first turns every projection of the static model (where each slice is the whole tensor) into a
real ``nn.Linear``: per layer the fused Q/K/V input projection, the cross-attention Q and K|V
projections, both attention output projections, FFN fc1 and fc2, and the full-vocabulary output
projection; then quantizes them all (int8 weights per tensor, activations quantized per call).
Embedding lookups, LayerNorm, softmax attention and the sinusoidal positions stay fp32.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import TYPE_CHECKING, Any

from hat_ray.errors import DeviceError
from hat_ray.latency.backends import Work, register
from hat_ray.latency.backends.torch_eager import TorchEager, eager_workloads, static_model

if TYPE_CHECKING:
    from torch import nn

    from hat_ray.arch import Arch
    from hat_ray.model.transformer import Transformer
    from hat_ray.space import SearchSpace


@register
class TorchInt8(TorchEager):
    name = "torch-int8"
    description = "PyTorch eager, every linear projection dynamically quantized to int8 (CPU)"
    devices = ("cpu",)
    dtypes = ("float32",)

    def check(self) -> None:
        super().check()
        import torch

        engine = torch.backends.quantized.engine
        if engine in (None, "none") or not hasattr(getattr(torch, "ao", None), "quantization"):
            raise DeviceError(f"device profile {self.profile.name}: runtime {self.name} needs a PyTorch with "
                              f"quantized CPU kernels (torch.ao.quantization; engine here: {engine!r})")

    def workloads(self, space: SearchSpace, arch: Arch, vocab: int, seed: int) -> Work:
        t0 = time.perf_counter()
        model = quantize(static_model(space, arch, vocab, seed))
        encode, decode = eager_workloads(model, self.profile, space, vocab, seed)
        return Work(encode, decode, time.perf_counter() - t0)


def quantize(model: Transformer) -> Transformer:
    """``model`` (a static fp32 SubTransformer, changed in place) with every projection a
    dynamically quantized int8 Linear; see the module docstring."""
    import torch
    from torch import nn

    from hat_ray.model.layers import CrossAttention, ElasticLinear, SelfAttention

    if model.bound_arch is None:
        raise ValueError("int8 quantization needs a static SubTransformer, not a SuperTransformer")
    linear_cls, self_attention_cls, cross_attention_cls, transformer_cls = _classes()
    with torch.inference_mode(False), torch.no_grad():
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, ElasticLinear):  # attention output projections, fc1, fc2
                    setattr(module, name, linear_cls(_dense(child.weight, child.bias)))
            if isinstance(module, SelfAttention):
                module.__class__ = self_attention_cls
                module.qkv_linear = _dense(module.in_proj_weight, module.in_proj_bias)
            elif isinstance(module, CrossAttention):
                module.__class__ = cross_attention_cls
                module.q_linear = _dense(module.q_proj_weight, module.q_proj_bias)
                module.kv_linear = _dense(module.kv_proj_weight, module.kv_proj_bias)
        weight = model.decoder_embed if model.output_proj is None else model.output_proj
        model.__class__ = transformer_cls
        model.out_linear = _dense(weight[:, :model.config.decoder_embed_dim], None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
            torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model.eval()


def _dense(weight: Any, bias: Any) -> nn.Linear:
    """An ``nn.Linear`` holding a copy of ``weight`` (out, in) and ``bias``."""
    from torch import nn

    out_dim, in_dim = weight.shape
    linear = nn.Linear(in_dim, out_dim, bias=bias is not None)
    linear.weight.copy_(weight)
    if bias is not None:
        linear.bias.copy_(bias)
    return linear


@functools.cache
def _classes() -> tuple[type, ...]:
    """The module classes a quantized model is made of, defined on first use (torch is imported
    lazily): a Linear standing in for an ElasticLinear (whose slice arguments are the full shape
    in a static model), and the attention / Transformer classes whose projection seams
    (``project_*``) call the Linear modules."""
    from torch import nn

    from hat_ray.model.layers import CrossAttention, SelfAttention
    from hat_ray.model.transformer import Transformer

    class LinearInt8(nn.Module):
        def __init__(self, linear: nn.Linear) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, x: Any, out_dim: int, in_dim: int) -> Any:
            return self.linear(x)

    class SelfAttentionInt8(SelfAttention):
        def project_qkv(self, x: Any, dim: int) -> Any:
            return self.qkv_linear(x)

    class CrossAttentionInt8(CrossAttention):
        def project_q(self, x: Any, dim: int) -> Any:
            return self.q_linear(x)

        def project_kv_fused(self, memory: Any, key_dim: int) -> Any:
            return self.kv_linear(memory)

    class TransformerInt8(Transformer):
        def project_out(self, x: Any, dim: int) -> Any:
            return self.out_linear(x)

    return LinearInt8, SelfAttentionInt8, CrossAttentionInt8, TransformerInt8
