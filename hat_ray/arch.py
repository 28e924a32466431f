"""Arch: one SubTransformer, frozen and hashable, plus HAT YAML conversion and HAT's features.

An Arch holds only ACTIVE layers: ``len(encoder_ffn_embed_dim)`` is the encoder depth and
``len(decoder_ffn_embed_dim)`` the decoder depth. Two Archs compare equal exactly when they
describe the same network, so an Arch is a safe cache key for scores. (HAT's gene also carries
values for inactive layers; search/evolution pads them when it needs a full gene.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from hat_ray.errors import ArchError

# Per-stack scalar genes and per-layer genes, in HAT's gene order.
SCALAR_KEYS = ("encoder_embed_dim", "decoder_embed_dim")
ENCODER_LAYER_KEYS = ("encoder_ffn_embed_dim", "encoder_self_attention_heads")
DECODER_LAYER_KEYS = (
    "decoder_ffn_embed_dim",
    "decoder_self_attention_heads",
    "decoder_ende_attention_heads",
    "decoder_arbitrary_ende_attn",
)
LAYER_KEYS = ENCODER_LAYER_KEYS + DECODER_LAYER_KEYS

# HAT's released sub-architecture YAML keys (spec section 8).
_HAT_SCALAR = {
    "encoder_embed_dim": "encoder-embed-dim-subtransformer",
    "decoder_embed_dim": "decoder-embed-dim-subtransformer",
}
_HAT_LAYERS = {
    "encoder": "encoder-layer-num-subtransformer",
    "decoder": "decoder-layer-num-subtransformer",
}
_HAT_LISTS = {
    "encoder_ffn_embed_dim": "encoder-ffn-embed-dim-all-subtransformer",
    "encoder_self_attention_heads": "encoder-self-attention-heads-all-subtransformer",
    "decoder_ffn_embed_dim": "decoder-ffn-embed-dim-all-subtransformer",
    "decoder_self_attention_heads": "decoder-self-attention-heads-all-subtransformer",
    "decoder_ende_attention_heads": "decoder-ende-attention-heads-all-subtransformer",
    "decoder_arbitrary_ende_attn": "decoder-arbitrary-ende-attn-all-subtransformer",
}
HAT_KEYS = frozenset([*_HAT_SCALAR.values(), *_HAT_LAYERS.values(), *_HAT_LISTS.values()])

FEATURE_NAMES = (
    "encoder_embed_dim",
    "encoder_layer_num",
    "encoder_ffn_embed_dim_avg",
    "encoder_self_attention_heads_avg",
    "decoder_embed_dim",
    "decoder_layer_num",
    "decoder_ffn_embed_dim_avg",
    "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg",
    "decoder_arbitrary_ende_attn_avg",
)
# HAT's predictor input normaliser (spec section 5), in FEATURE_NAMES order.
FEATURE_NORM = (640.0, 6.0, 2048.0, 6.0, 640.0, 6.0, 2048.0, 6.0, 6.0, 2.0)


def encoder_layers_attended(arbitrary: int) -> int:
    """HAT's arbitrary enc-dec attention value -> number of last encoder layers attended."""
    return {-1: 1, 1: 2, 2: 3}[arbitrary]


@dataclass(frozen=True)
class Arch:
    """One SubTransformer of a search space (active layers only)."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder_ffn_embed_dim: tuple[int, ...]
    encoder_self_attention_heads: tuple[int, ...]
    decoder_ffn_embed_dim: tuple[int, ...]
    decoder_self_attention_heads: tuple[int, ...]
    decoder_ende_attention_heads: tuple[int, ...]
    decoder_arbitrary_ende_attn: tuple[int, ...]

    def __post_init__(self) -> None:
        problems = []
        for key in SCALAR_KEYS:
            value = getattr(self, key)
            if not _is_int(value):
                problems.append(f"{key} must be an integer, got {value!r}")
        for key in LAYER_KEYS:
            value = getattr(self, key)
            if not isinstance(value, tuple) or not all(map(_is_int, value)):
                problems.append(f"{key} must be a tuple of integers, got {value!r}")
        if not problems:
            problems += _length_problems(self)
        if problems:
            raise ArchError(problems, malformed=True)

    @property
    def encoder_layers(self) -> int:
        return len(self.encoder_ffn_embed_dim)

    @property
    def decoder_layers(self) -> int:
        return len(self.decoder_ffn_embed_dim)

    # ---- plain-data round trip (hat-ray's own YAML / JSON) ----
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, ints) with explicit layer counts, for YAML/JSON."""
        out: dict[str, Any] = {k: int(getattr(self, k)) for k in SCALAR_KEYS}
        out["encoder_layers"] = self.encoder_layers
        out["decoder_layers"] = self.decoder_layers
        for key in LAYER_KEYS:
            out[key] = [int(v) for v in getattr(self, key)]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "arch") -> Arch:
        """Build from hat-ray's own format; every problem is reported at once (ArchError)."""
        if not isinstance(data, Mapping):
            raise ArchError([f"expected a mapping of arch keys, got {type(data).__name__}"], source, malformed=True)
        known = set(SCALAR_KEYS) | set(LAYER_KEYS) | {"encoder_layers", "decoder_layers", "space"}
        problems = [f"unknown key {k!r}" for k in data if k not in known]
        problems += [f"missing key {k!r}" for k in (*SCALAR_KEYS, *LAYER_KEYS) if k not in data]
        for key in LAYER_KEYS:
            if key in data and not isinstance(data[key], (list, tuple)):
                problems.append(f"{key} must be a list (one value per layer), got {data[key]!r}")
        for stack in ("encoder", "decoder"):
            declared = data.get(f"{stack}_layers")
            actual = data.get(f"{stack}_ffn_embed_dim")
            if declared is not None and isinstance(actual, (list, tuple)):
                if not _is_int(declared) or declared != len(actual):
                    problems.append(
                        f"{stack}_layers is {declared!r} but {stack}_ffn_embed_dim lists "
                        f"{len(actual)} layers"
                    )
        if problems:
            raise ArchError(problems, source, malformed=True)
        kwargs = {k: data[k] for k in SCALAR_KEYS}
        kwargs.update({k: tuple(data[k]) for k in LAYER_KEYS})
        try:
            return cls(**kwargs)
        except ArchError as exc:
            raise ArchError(exc.problems, source, malformed=True) from None

    # ---- HAT's released YAML ----
    def to_hat(self) -> dict[str, Any]:
        """HAT's sub-architecture YAML keys (lists hold active layers only)."""
        out: dict[str, Any] = {hat: int(getattr(self, k)) for k, hat in _HAT_SCALAR.items()}
        out[_HAT_LAYERS["encoder"]] = self.encoder_layers
        out[_HAT_LAYERS["decoder"]] = self.decoder_layers
        for key, hat in _HAT_LISTS.items():
            out[hat] = [int(v) for v in getattr(self, key)]
        return out

    @classmethod
    def from_hat(cls, data: Mapping[str, Any], source: str = "arch") -> Arch:
        """Build from HAT's keys. Lists may be longer than the layer count (inactive layers
        carried along, as HAT's search writes them): they are truncated to the active layers."""
        if not isinstance(data, Mapping):
            raise ArchError([f"expected a mapping of HAT keys, got {type(data).__name__}"], source, malformed=True)
        problems = [f"unknown key {k!r}" for k in data if k not in HAT_KEYS]
        problems += [f"missing key {k!r}" for k in sorted(HAT_KEYS) if k not in data]
        if problems:
            raise ArchError(problems, source, malformed=True)
        kwargs: dict[str, Any] = {k: data[hat] for k, hat in _HAT_SCALAR.items()}
        for key, hat in _HAT_LISTS.items():
            stack = key.split("_")[0]
            n = data[_HAT_LAYERS[stack]]
            values = data[hat]
            if not _is_int(n) or n < 1:
                problems.append(f"{_HAT_LAYERS[stack]} must be a positive integer, got {n!r}")
            elif not isinstance(values, (list, tuple)):
                problems.append(f"{hat} must be a list, got {values!r}")
            elif len(values) < n:
                problems.append(f"{hat} lists {len(values)} values but {stack} has {n} layers")
            else:
                kwargs[key] = tuple(values[:n])
        if problems:
            raise ArchError(sorted(set(problems)), source, malformed=True)
        try:
            return cls(**kwargs)
        except ArchError as exc:
            raise ArchError(exc.problems, source, malformed=True) from None

    # ---- HAT's 10 predictor features (spec section 5), raw (un-normalised) ----
    def features(self) -> list[float]:
        """The 10 HAT features in FEATURE_NAMES order; averages over active layers."""
        attended = [encoder_layers_attended(a) for a in self.decoder_arbitrary_ende_attn]
        return [
            float(self.encoder_embed_dim),
            float(self.encoder_layers),
            float(np.mean(self.encoder_ffn_embed_dim)),
            float(np.mean(self.encoder_self_attention_heads)),
            float(self.decoder_embed_dim),
            float(self.decoder_layers),
            float(np.mean(self.decoder_ffn_embed_dim)),
            float(np.mean(self.decoder_self_attention_heads)),
            float(np.mean(self.decoder_ende_attention_heads)),
            float(np.mean(attended)),
        ]

    def key(self) -> str:
        """A short, stable, human-readable identifier (used for file names and dedup)."""
        parts = [
            f"e{self.encoder_embed_dim}x{self.encoder_layers}",
            "f" + ".".join(map(str, self.encoder_ffn_embed_dim)),
            "h" + ".".join(map(str, self.encoder_self_attention_heads)),
            f"d{self.decoder_embed_dim}x{self.decoder_layers}",
            "f" + ".".join(map(str, self.decoder_ffn_embed_dim)),
            "h" + ".".join(map(str, self.decoder_self_attention_heads)),
            "c" + ".".join(map(str, self.decoder_ende_attention_heads)),
            "a" + ".".join(map(str, self.decoder_arbitrary_ende_attn)),
        ]
        return "_".join(parts)


def parse_arch(data: Mapping[str, Any], source: str = "arch") -> Arch:
    """Parse either format: HAT's (``*-subtransformer`` keys) or hat-ray's own."""
    if isinstance(data, Mapping) and any(str(k).endswith("-subtransformer") for k in data):
        return Arch.from_hat(data, source)
    return Arch.from_dict(data, source)


def _is_int(value: Any) -> bool:
    # type(...) is int first: every Arch a search breeds is checked here (tens of thousands)
    return type(value) is int or (isinstance(value, (int, np.integer)) and not isinstance(value, bool))


def _length_problems(arch: Arch) -> list[str]:
    problems = []
    n_enc, n_dec = arch.encoder_layers, arch.decoder_layers
    if n_enc < 1:
        problems.append("the encoder needs at least one layer")
    if n_dec < 1:
        problems.append("the decoder needs at least one layer")
    for key in ENCODER_LAYER_KEYS[1:]:
        if len(getattr(arch, key)) != n_enc:
            problems.append(f"{key} lists {len(getattr(arch, key))} layers, encoder has {n_enc}")
    for key in DECODER_LAYER_KEYS[1:]:
        if len(getattr(arch, key)) != n_dec:
            problems.append(f"{key} lists {len(getattr(arch, key))} layers, decoder has {n_dec}")
    return problems


ARCH_FIELDS = tuple(f.name for f in fields(Arch))
