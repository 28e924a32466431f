"""The two graphs a deployed SubTransformer is made of, as torch modules ready to trace:

* :class:`EncoderGraph`: ``src`` (B, S) int64, left-padded -> ``src_pad`` (B, S) bool and, for
  every decoder layer i, its cross-attention keys and values ``cross_k_i``, ``cross_v_i``
  (B, H_i, n_i * S, head_dim), computed once per sentence (n_i: encoder layers it attends).
* :class:`DecoderStepGraph`: one incremental step. ``token`` (B, 1) int64 (the last token of the
  prefix), ``position`` (B,) int64 (the position id of that token: padding_idx + prefix length),
  ``src_pad``, the cross K/V and the self-attention cache ``self_k_i``, ``self_v_i``
  (B, H_i, t, head_dim; t = 0 at the first step) -> ``logits`` (B, V) and the extended cache
  ``new_self_k_i``, ``new_self_v_i`` (B, H_i, t + 1, head_dim).

Both run the model's own layers (hat_ray.model), so an exported graph computes what the torch
model computes. The caches are explicit inputs and outputs: a runner reorders them for beam
search like any other array.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from hat_ray.arch import Arch, encoder_layers_attended
from hat_ray.model.transformer import Transformer
from hat_ray.tokens import EOS, PAD


def _arch(model: Transformer) -> Arch:
    if model.bound_arch is None:
        raise ValueError("export needs a static SubTransformer (extract_subnet), not a SuperTransformer")
    return model.bound_arch


class EncoderGraph(nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.arch = _arch(model)

    def forward(self, src: Tensor) -> tuple[Tensor, ...]:
        a, m = self.arch, self.model
        enc = m.encode(src)
        out: list[Tensor] = [enc.padding_mask]
        for i in range(a.decoder_layers):
            n = encoder_layers_attended(a.decoder_arbitrary_ende_attn[i])
            memory = enc.layers[-1] if n == 1 else torch.cat(enc.layers[::-1][:n], dim=1)
            out += m.decoder_layers[i].encoder_attn.project_kv(memory, a.encoder_embed_dim,
                                                               a.decoder_ende_attention_heads[i])
        return tuple(out)


class DecoderStepGraph(nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.arch = _arch(model)

    def forward(self, token: Tensor, position: Tensor, src_pad: Tensor, *caches: Tensor) -> tuple[Tensor, ...]:
        a, m = self.arch, self.model
        layers, dim = a.decoder_layers, a.decoder_embed_dim
        cross, past = caches[:2 * layers], caches[2 * layers:]
        x = math.sqrt(dim) * nn.functional.embedding(token, m.decoder_embed[:, :dim])
        x = x + m.positions[position][:, None, :dim]
        out: list[Tensor] = []
        for i in range(layers):
            n = encoder_layers_attended(a.decoder_arbitrary_ende_attn[i])
            mask = ~src_pad.repeat(1, n)[:, None, None, :]
            cache = {"self": {"k": past[2 * i], "v": past[2 * i + 1]},
                     "cross": {"k": cross[2 * i], "v": cross[2 * i + 1]}}
            x = m.decoder_layers[i](x, None, None, mask, dim, a.encoder_embed_dim, a.decoder_ffn_embed_dim[i],
                                    a.decoder_self_attention_heads[i], a.decoder_ende_attention_heads[i], 0.0, cache)
            out += [cache["self"]["k"], cache["self"]["v"]]
        weight = m.decoder_embed if m.output_proj is None else m.output_proj
        return (nn.functional.linear(x, weight[:, :dim])[:, 0], *out)


def names(arch: Arch) -> dict[str, list[str]]:
    """Input and output names of both graphs (the order the modules take and return them)."""
    layers = range(arch.decoder_layers)
    cross = [f"cross_{kv}_{i}" for i in layers for kv in "kv"]
    past = [f"self_{kv}_{i}" for i in layers for kv in "kv"]
    return {"encoder_in": ["src"], "encoder_out": ["src_pad", *cross],
            "step_in": ["token", "position", "src_pad", *cross, *past],
            "step_out": ["logits", *[f"new_{p}" for p in past]]}


def dynamic_axes(arch: Arch) -> dict[str, dict[str, dict[int, str]]]:
    """Which axes of every input and output vary: rows, source length, cache length."""
    n = names(arch)
    enc = {"src": {0: "batch", 1: "src_len"}, "src_pad": {0: "batch", 1: "src_len"}}
    enc.update({c: {0: "batch", 2: "memory_len"} for c in n["encoder_out"][1:]})
    step = {"token": {0: "rows"}, "position": {0: "rows"}, "src_pad": {0: "rows", 1: "src_len"},
            "logits": {0: "rows"}}
    step.update({c: {0: "rows", 2: "memory_len"} for c in n["encoder_out"][1:]})
    step.update({p: {0: "rows", 2: "past_len"} for p in n["step_in"] if p.startswith("self_")})
    step.update({p: {0: "rows", 2: "past_len_plus_1"} for p in n["step_out"][1:]})
    return {"encoder": enc, "step": step}


def empty_cache(model: Transformer, rows: int, past: int = 0) -> list[Tensor]:
    """A self-attention cache of ``past`` positions (zeros) for ``rows`` rows: the first step's
    input is the empty one (``past`` = 0)."""
    a = _arch(model)
    q = model.config.qkv_dim
    out = []
    for i in range(a.decoder_layers):
        h = a.decoder_self_attention_heads[i]
        out += [torch.zeros(rows, h, past, q // h)] * 2
    return out


def example_inputs(model: Transformer, batch: int = 2, src_len: int = 7) -> dict[str, tuple[Any, ...]]:
    """Inputs to trace both graphs with (a padded row included; a one-position cache so that the
    traced step concatenates, as every step does)."""
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(PAD + 3, max(model.config.src_vocab, PAD + 4), (batch, src_len), generator=gen)
    src[0, :2] = PAD
    training = model.training
    try:
        with torch.no_grad():
            enc = EncoderGraph(model).eval()(src)  # .eval() reaches the model: restored below
    finally:
        model.train(training)
    token = torch.full((batch, 1), EOS, dtype=torch.long)
    position = torch.full((batch,), PAD + 2, dtype=torch.long)
    return {"encoder": (src,), "step": (token, position, *enc, *empty_cache(model, batch, past=1))}
