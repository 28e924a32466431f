"""Parameter and FLOPs accounting with HAT's conventions (spec section 3).

#Params exclude token embeddings and the output layer. FLOPs = 2 x MACs of one teacher-forced
pass at batch 1 with source = target length ``seq_len``, output layer excluded.
"""

from __future__ import annotations

from hat_ray.arch import Arch, encoder_layers_attended


def count_params(arch: Arch, qkv_dim: int) -> int:
    """Non-embedding parameters of ``arch`` (equals the static model's layer parameters)."""
    q, e, d = qkv_dim, arch.encoder_embed_dim, arch.decoder_embed_dim
    total = 0
    for h in arch.encoder_ffn_embed_dim:
        total += _attn(e, e, q) + 2 * e + _ffn(e, h) + 2 * e
    for h in arch.decoder_ffn_embed_dim:
        total += _attn(d, d, q) + 2 * d + _attn(d, e, q) + 2 * d + _ffn(d, h) + 2 * d
    return total


def _attn(query_dim: int, key_dim: int, q: int) -> int:
    # Q from the query side, K and V from the key side, bias 3q, output projection q -> query_dim.
    return query_dim * q + 2 * key_dim * q + 3 * q + q * query_dim + query_dim


def _ffn(dim: int, hidden: int) -> int:
    return dim * hidden + hidden + hidden * dim + dim


def count_flops(arch: Arch, qkv_dim: int, seq_len: int) -> int:
    """Analytic FLOPs (2 x MACs) of matmuls in one teacher-forced pass at batch 1."""
    q, e, d, t = qkv_dim, arch.encoder_embed_dim, arch.decoder_embed_dim, seq_len
    macs = 0
    for h in arch.encoder_ffn_embed_dim:
        macs += t * (3 * e * q + q * e + 2 * e * h) + 2 * t * t * q
    for h, a in zip(arch.decoder_ffn_embed_dim, arch.decoder_arbitrary_ende_attn):
        s = t * encoder_layers_attended(a)  # keys: time-concatenated encoder layers
        macs += t * (3 * d * q + q * d) + 2 * t * t * q  # self-attention
        macs += t * (d * q + q * d) + 2 * s * e * q + 2 * t * s * q  # encoder-decoder attention
        macs += 2 * t * d * h  # FFN
    return 2 * macs


def arch_info(arch: Arch, qkv_dim: int, seq_len: int) -> dict[str, object]:
    """The ``hat-ray arch info --json`` record."""
    params = count_params(arch, qkv_dim)
    flops = count_flops(arch, qkv_dim, seq_len)
    return {
        "params": params,
        "params_m": round(params / 1e6, 2),
        "flops": flops,
        "flops_g": round(flops / 1e9, 2),
        "features": arch.features(),
    }
