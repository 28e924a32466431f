"""Baseline Transformers of a search space: uniform Archs (every layer alike, decoder layers
attending the last encoder layer only, as in a vanilla Transformer) scaled by width and depth,
the comparison HAT draws its searched models against (spec section 7)."""

from __future__ import annotations

from typing import Any

from hat_ray.arch import SCALAR_KEYS, Arch
from hat_ray.space import SearchSpace

# name -> (width level, depth level), each 0 (smallest choice) .. 1 (largest choice)
BASELINES: dict[str, tuple[float, float]] = {
    "largest": (1.0, 1.0),
    "shallow": (1.0, 0.0),
    "medium": (0.5, 0.5),
    "narrow": (0.0, 1.0),
    "smallest": (0.0, 0.0),
}
_WIDTH_KEYS = (*SCALAR_KEYS, "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "encoder_self_attention_heads",
               "decoder_self_attention_heads", "decoder_ende_attention_heads")


def _level(options: Any, level: float) -> int:
    ordered = sorted(options)
    return int(ordered[round(level * (len(ordered) - 1))])


def uniform_arch(space: SearchSpace, width: float, depth: float) -> Arch:
    """The uniform Arch at ``width`` / ``depth`` levels in [0, 1] of the space's choices."""
    c = space.choices
    gene: dict[str, Any] = {k: _level(c[k], width) for k in _WIDTH_KEYS}
    gene["encoder_layers"] = _level(c["encoder_layers"], depth)
    gene["decoder_layers"] = _level(c["decoder_layers"], depth)
    ende = c["decoder_arbitrary_ende_attn"]
    dense = -1 if -1 in ende else min(ende)
    for key in _WIDTH_KEYS[len(SCALAR_KEYS):]:
        gene[key] = [gene[key]] * space.max_layers(key)
    gene["decoder_arbitrary_ende_attn"] = [dense] * space.max_layers("decoder_arbitrary_ende_attn")
    return space.from_gene(gene)


def baselines(space: SearchSpace, names: tuple[str, ...] | list[str]) -> dict[str, Arch]:
    """Named baseline Archs; names mapping to the same Arch are kept once (first name wins)."""
    out: dict[str, Arch] = {}
    for name in names:
        arch = uniform_arch(space, *BASELINES[name])
        if arch not in out.values():
            out[name] = arch
    return out
