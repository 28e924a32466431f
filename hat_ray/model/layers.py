"""Elastic Transformer layers: max-size parameters, first-k slices taken from the call's arguments.

One recipe serves the SuperTransformer and the extracted SubTransformer: a static model is the
same module built with max shapes equal to the Arch's shapes, so every slice is the whole tensor.
Nothing here keeps an "active config": the sub-dimensions arrive as arguments to forward.

Shapes: batch-first, ``x`` is (B, T, C). ``qkv`` is the fixed Q/K/V width (HAT: 512); the head
count only changes head_dim = qkv / heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttnCache = dict[str, Tensor]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, out_dim: int, in_dim: int) -> Tensor:
    """First-k slice of a Linear: ``W[:out, :in]``, ``b[:out]``."""
    return F.linear(x, weight[:out_dim, :in_dim], None if bias is None else bias[:out_dim])


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, dim: int) -> Tensor:
    """LayerNorm over the first ``dim`` channels with gamma/beta ``[:dim]``."""
    return F.layer_norm(x, (dim,), weight[:dim], bias[:dim])


def _xavier(*shape: int) -> nn.Parameter:
    w = torch.empty(*shape)
    nn.init.xavier_uniform_(w)
    return nn.Parameter(w)


def _zeros(n: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(n))


class ElasticLayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, dim: int) -> Tensor:
        return layer_norm(x, self.weight, self.bias, dim)


class ElasticLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = _xavier(out_dim, in_dim)
        self.bias = _zeros(out_dim)

    def forward(self, x: Tensor, out_dim: int, in_dim: int) -> Tensor:
        return linear(x, self.weight, self.bias, out_dim, in_dim)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, t, c = x.shape  # (B, T, qkv) -> (B, H, T, qkv/H)
    return x.view(b, t, heads, c // heads).transpose(1, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, training: bool) -> Tensor:
    """q (B, H, T, hd), k/v (B, H, S, hd), mask bool (B|1, 1, T|1, S) True = may attend."""
    heads, head_dim = q.shape[1], q.shape[3]
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout if training else 0.0, scale=head_dim**-0.5
    )
    b, _, t, _ = out.shape
    return out.transpose(1, 2).reshape(b, t, heads * head_dim)


class SelfAttention(nn.Module):
    """Self-attention with a fused (3*qkv, E_max) input projection, rows Q|K|V (HAT layout)."""

    def __init__(self, embed_dim: int, qkv_dim: int) -> None:
        super().__init__()
        self.qkv_dim = qkv_dim
        self.in_proj_weight = _xavier(3 * qkv_dim, embed_dim)
        self.in_proj_bias = _zeros(3 * qkv_dim)
        self.out_proj = ElasticLinear(qkv_dim, embed_dim)

    def project_qkv(self, x: Tensor, dim: int) -> Tensor:
        """The fused input projection (B, T, dim) -> (B, T, 3*qkv) (a seam: the int8 latency
        backend replaces the projections of a static model by quantized Linear modules)."""
        return F.linear(x, self.in_proj_weight[:, :dim], self.in_proj_bias)

    def forward(self, x: Tensor, dim: int, heads: int, mask: Tensor | None, dropout: float,
                cache: AttnCache | None = None) -> Tensor:
        """x (B, T, dim) -> (B, T, dim). With ``cache``, keys/values of earlier steps are
        prepended and the cache is extended (incremental decoding)."""
        qkv = self.project_qkv(x, dim)  # (B, T, 3*qkv)
        q, k, v = (_split_heads(t, heads) for t in qkv.chunk(3, dim=-1))
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        out = _attend(q, k, v, mask, dropout, self.training)
        return self.out_proj(out, dim, self.qkv_dim)


class CrossAttention(nn.Module):
    """Encoder-decoder attention. Q projects from the decoder width (columns ``[:D]``), K/V from
    the encoder width (columns ``[:E]``); HAT stores both in one in_proj_weight, split here so a
    static model with E != D keeps exact shapes."""

    def __init__(self, query_dim: int, key_dim: int, qkv_dim: int) -> None:
        super().__init__()
        self.qkv_dim = qkv_dim
        self.q_proj_weight = _xavier(qkv_dim, query_dim)
        self.q_proj_bias = _zeros(qkv_dim)
        self.kv_proj_weight = _xavier(2 * qkv_dim, key_dim)
        self.kv_proj_bias = _zeros(2 * qkv_dim)
        self.out_proj = ElasticLinear(qkv_dim, query_dim)

    def project_q(self, x: Tensor, dim: int) -> Tensor:
        """(B, T, dim) -> (B, T, qkv)."""
        return F.linear(x, self.q_proj_weight[:, :dim], self.q_proj_bias)

    def project_kv_fused(self, memory: Tensor, key_dim: int) -> Tensor:
        """(B, S, key_dim) -> (B, S, 2*qkv), rows K|V."""
        return F.linear(memory, self.kv_proj_weight[:, :key_dim], self.kv_proj_bias)

    def project_kv(self, memory: Tensor, key_dim: int, heads: int) -> tuple[Tensor, Tensor]:
        """memory (B, S, E) -> k, v (B, H, S, hd)."""
        k, v = self.project_kv_fused(memory, key_dim).chunk(2, dim=-1)
        return _split_heads(k, heads), _split_heads(v, heads)

    def forward(self, x: Tensor, memory: Tensor, dim: int, key_dim: int, heads: int,
                mask: Tensor, dropout: float, cache: AttnCache | None = None) -> Tensor:
        q = _split_heads(self.project_q(x, dim), heads)
        if cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.project_kv(memory, key_dim, heads)
            if cache is not None:
                cache["k"], cache["v"] = k, v
        out = _attend(q, k, v, mask, dropout, self.training)
        return self.out_proj(out, dim, self.qkv_dim)


class EncoderLayer(nn.Module):
    """Post-LN block: x = LN(x + drop(attn(x))); x = LN(x + drop(fc2(relu(fc1(x)))))."""

    def __init__(self, embed_dim: int, ffn_dim: int, qkv_dim: int, attention_dropout: float) -> None:
        super().__init__()
        self.attention_dropout = attention_dropout
        self.self_attn = SelfAttention(embed_dim, qkv_dim)
        self.self_attn_layer_norm = ElasticLayerNorm(embed_dim)
        self.fc1 = ElasticLinear(embed_dim, ffn_dim)
        self.fc2 = ElasticLinear(ffn_dim, embed_dim)
        self.final_layer_norm = ElasticLayerNorm(embed_dim)

    def forward(self, x: Tensor, mask: Tensor, dim: int, ffn: int, heads: int, dropout: float) -> Tensor:
        h = self.self_attn(x, dim, heads, mask, self.attention_dropout)
        x = self.self_attn_layer_norm(x + F.dropout(h, dropout, self.training), dim)
        return self.final_layer_norm(x + _ffn(self, x, dim, ffn, dropout), dim)


class DecoderLayer(nn.Module):
    def __init__(self, embed_dim: int, encoder_dim: int, ffn_dim: int, qkv_dim: int,
                 attention_dropout: float) -> None:
        super().__init__()
        self.attention_dropout = attention_dropout
        self.self_attn = SelfAttention(embed_dim, qkv_dim)
        self.self_attn_layer_norm = ElasticLayerNorm(embed_dim)
        self.encoder_attn = CrossAttention(embed_dim, encoder_dim, qkv_dim)
        self.encoder_attn_layer_norm = ElasticLayerNorm(embed_dim)
        self.fc1 = ElasticLinear(embed_dim, ffn_dim)
        self.fc2 = ElasticLinear(ffn_dim, embed_dim)
        self.final_layer_norm = ElasticLayerNorm(embed_dim)

    def forward(self, x: Tensor, self_mask: Tensor | None, memory: Tensor, memory_mask: Tensor,
                dim: int, memory_dim: int, ffn: int, self_heads: int, cross_heads: int,
                dropout: float, cache: dict[str, AttnCache] | None = None) -> Tensor:
        p, att = dropout, self.attention_dropout
        h = self.self_attn(x, dim, self_heads, self_mask, att, None if cache is None else cache["self"])
        x = self.self_attn_layer_norm(x + F.dropout(h, p, self.training), dim)
        h = self.encoder_attn(x, memory, dim, memory_dim, cross_heads, memory_mask, att,
                              None if cache is None else cache["cross"])
        x = self.encoder_attn_layer_norm(x + F.dropout(h, p, self.training), dim)
        return self.final_layer_norm(x + _ffn(self, x, dim, ffn, p), dim)


def _ffn(layer: EncoderLayer | DecoderLayer, x: Tensor, dim: int, ffn: int, dropout: float) -> Tensor:
    h = F.relu(layer.fc1(x, ffn, dim))
    return F.dropout(layer.fc2(h, dim, ffn), dropout, layer.training)


def sinusoid_table(num_positions: int, dim: int, padding_idx: int) -> Tensor:
    """fairseq's table: ``[sin(half) | cos(half)]`` with frequency step log(1e4)/(half-1);
    row ``padding_idx`` is zero. Built at the SUPER dim and sliced by callers (HAT)."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -step)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[padding_idx] = 0
    return table


def make_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """Position ids: non-pad tokens count from padding_idx + 1 (left or right padding alike),
    pads get padding_idx (a zero row of the table)."""
    mask = tokens.ne(padding_idx).long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx
