"""The work of one latency measurement, op by op (numpy-free, torch-free).

:func:`workload` lists every matrix multiplication and every non-linear / element-wise op of an
Arch's two timed parts, exactly as the static model runs them under a profile's protocol
(hat_ray.model.transformer / layers; hat_ray.latency.backends.torch_eager.eager_workloads):

* **encoder**: one forward on ``batch`` source sentences of ``src_len`` tokens (no padding): the
  embedding (a gather, scale by sqrt(dim), + positions), then per layer the fused Q|K|V
  projection, per (sentence, head) the scores ``Q K^T`` and the weighted sum ``P V``, the output
  projection, FFN (fc1, ReLU, fc2), two residual adds and two LayerNorms (post-LN). Every
  layer's output is kept (EncoderOut holds them all), so it is stored.
* **decoder**: ``tgt_len`` incremental steps on ``batch * beam`` rows (the beam-expanded encoder
  output is prepared before the timed part, as the latency protocol does). Per step: the
  embedding of one token per row; per layer the self-attention (Q|K|V of the new token, its K and
  V appended to the layer's cache, scores and weighted sum over the ``t`` cached positions at
  step ``t``), the encoder-decoder attention (Q of the new token; K|V of the time-concatenated
  last ``n`` encoder layers computed at the first step for all ``batch * beam`` rows and cached,
  ``n = encoder_layers_attended(arbitrary_ende_attn)``), FFN, three residual adds and three
  LayerNorms; then the full-vocabulary output projection. Beam search's own log-softmax and
  top-k are not part of HAT's protocol, so they are not here.

GEMMs are ``(m x k) @ (k x n)``: ``A`` the activations streamed in, ``B`` the weights (or, in
attention, the keys / values), ``count`` identical independent GEMMs (heads x rows, or steps).
Where each operand lives is part of the workload, not of the hardware: ``b_dram`` marks a ``B``
read from off-chip memory (weights always; the decoder's key/value caches), ``a_dram`` an ``A``
that is a persistent tensor (the beam-expanded encoder output read by the cross-attention K|V
projection), ``write`` the output elements stored off-chip (cache appends, encoder layer
outputs). Whether a transient activation also spills off-chip depends on the scratchpad, so the
hardware model decides that (hat_ray.latency.accelerator). Biases and the attention's
1/sqrt(head_dim) scale are folded into the GEMMs (accumulator preload / output scaling) and are
not separate ops.

With ``incremental=False`` the decoder runs teacher-forced over ``tgt_len`` tokens at once (full
``t x t`` self-attention scores, the causal mask applied afterwards) on ``batch * beam`` rows: the
convention of :func:`hat_ray.model.accounting.count_flops`, whose FLOPs are ``2 x`` the MACs of
that workload at batch 1, beam 1, ``vocab=None`` (no output projection); tests/test_accelerator.py
checks it, and the exact difference of the incremental decoder (per layer ``qkv * T * (T - 1)``
fewer self-attention MACs: step ``t`` sees ``t`` keys, not ``T``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from hat_ray.arch import Arch, encoder_layers_attended

PARTS = ("encoder", "decoder")
VECTOR_OPS = ("softmax", "layernorm", "relu", "elementwise")


class Gemm(NamedTuple):
    """``count`` identical GEMMs ``(m x k) @ (k x n)``; see the module docstring."""

    part: str
    op: str
    m: int
    k: int
    n: int
    count: int = 1
    b_dram: bool = True  # B comes from off-chip memory (weights, K/V caches)
    a_dram: bool = False  # A is a persistent tensor read from off-chip memory
    write: int = 0  # output elements stored off-chip, per GEMM

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n * self.count


class VectorOp(NamedTuple):
    """``count`` invocations of a non-linear / element-wise op over ``elements`` elements each."""

    part: str
    op: str  # one of VECTOR_OPS
    elements: int
    count: int = 1


class Gather(NamedTuple):
    """Embedding rows fetched from off-chip memory: ``count`` x ``elements`` elements."""

    part: str
    elements: int
    count: int = 1


@dataclass
class Workload:
    """Every op of one measurement (encoder forward + decoder steps)."""

    gemms: list[Gemm] = field(default_factory=list)
    vector_ops: list[VectorOp] = field(default_factory=list)
    gathers: list[Gather] = field(default_factory=list)

    def macs(self, part: str | None = None, ops: Iterable[str] | None = None) -> int:
        """Multiply-accumulates of the GEMMs (of one part, of some ops)."""
        wanted = None if ops is None else set(ops)
        return sum(g.macs for g in self.gemms
                   if (part is None or g.part == part) and (wanted is None or g.op in wanted))

    def elements(self, op: str, part: str | None = None) -> int:
        """Elements processed by a vector op kind (all invocations)."""
        return sum(v.elements * v.count for v in self.vector_ops if v.op == op and (part is None or v.part == part))


def workload(arch: Arch, qkv_dim: int, *, batch: int = 1, beam: int = 1, src_len: int, tgt_len: int,
             vocab: int | None, incremental: bool = True) -> Workload:
    """The ops of ``arch``'s encoder forward and decoder (see the module docstring); ``vocab``
    None leaves the output projection out (FLOPs accounting convention)."""
    w = Workload()
    _encoder(w, arch, qkv_dim, batch, src_len)
    _decoder(w, arch, qkv_dim, batch * beam, src_len, tgt_len, vocab, incremental)
    return w


def _encoder(w: Workload, arch: Arch, q: int, batch: int, s: int) -> None:
    e, rows, part = arch.encoder_embed_dim, batch * s, "encoder"
    w.gathers.append(Gather(part, rows * e))
    w.vector_ops.append(VectorOp(part, "elementwise", rows * e, 2))  # * sqrt(dim), + positions
    for f, h in zip(arch.encoder_ffn_embed_dim, arch.encoder_self_attention_heads):
        hd = q // h
        w.gemms += [
            Gemm(part, "qkv", rows, e, 3 * q),
            Gemm(part, "attn_scores", s, hd, s, batch * h, b_dram=False),  # keys of this layer: on chip
            Gemm(part, "attn_values", s, s, hd, batch * h, b_dram=False),
            Gemm(part, "attn_out", rows, q, e),
            Gemm(part, "ffn1", rows, e, f),
            Gemm(part, "ffn2", rows, f, e, write=rows * e),  # the layer's output is kept (EncoderOut)
        ]
        w.vector_ops += [
            VectorOp(part, "softmax", batch * h * s * s),
            VectorOp(part, "elementwise", rows * e, 2),  # residual adds
            VectorOp(part, "layernorm", rows * e, 2),
            VectorOp(part, "relu", rows * f),
        ]


def _decoder(w: Workload, arch: Arch, q: int, rows: int, s: int, steps: int, vocab: int | None,
             incremental: bool) -> None:
    d, e, part = arch.decoder_embed_dim, arch.encoder_embed_dim, "decoder"
    # Teacher-forced: one pass over all tokens; incremental: `steps` passes of one token per row.
    tokens, passes = (1, steps) if incremental else (steps, 1)
    m = rows * tokens
    w.gathers.append(Gather(part, m * d, passes))
    w.vector_ops.append(VectorOp(part, "elementwise", m * d, 2 * passes))
    layers = zip(arch.decoder_ffn_embed_dim, arch.decoder_self_attention_heads, arch.decoder_ende_attention_heads,
                 arch.decoder_arbitrary_ende_attn)
    for f, h, c, arbitrary in layers:
        hd, cd, keys = q // h, q // c, s * encoder_layers_attended(arbitrary)
        if incremental:  # step t attends to the t cached positions (the K/V cache grows by one per step)
            w.gemms += [Gemm(part, "qkv", rows, d, 3 * q, steps, write=rows * 2 * q)]
            for t in range(1, steps + 1):
                w.gemms += [Gemm(part, "attn_scores", 1, hd, t, rows * h),
                            Gemm(part, "attn_values", 1, t, hd, rows * h)]
                w.vector_ops.append(VectorOp(part, "softmax", rows * h * t))
        else:
            w.gemms += [Gemm(part, "qkv", m, d, 3 * q),
                        Gemm(part, "attn_scores", steps, hd, steps, rows * h, b_dram=False),
                        Gemm(part, "attn_values", steps, steps, hd, rows * h, b_dram=False)]
            w.vector_ops.append(VectorOp(part, "softmax", rows * h * steps * steps))
        w.gemms += [
            Gemm(part, "attn_out", m, q, d, passes),
            Gemm(part, "cross_q", m, d, q, passes),
            # K|V of the attended encoder layers, for every beam row, once (then cached)
            Gemm(part, "cross_kv", rows * keys, e, 2 * q, a_dram=True, write=rows * keys * 2 * q),
            Gemm(part, "cross_scores", tokens, cd, keys, rows * c * passes),
            Gemm(part, "cross_values", tokens, keys, cd, rows * c * passes),
            Gemm(part, "cross_out", m, q, d, passes),
            Gemm(part, "ffn1", m, d, f, passes),
            Gemm(part, "ffn2", m, f, d, passes),
        ]
        w.vector_ops += [
            VectorOp(part, "softmax", rows * c * tokens * keys, passes),
            VectorOp(part, "elementwise", m * d, 3 * passes),  # residual adds
            VectorOp(part, "layernorm", m * d, 3 * passes),
            VectorOp(part, "relu", m * f, passes),
        ]
    if vocab:
        w.gemms.append(Gemm(part, "output_proj", m, d, vocab, passes))
