"""SearchSpace: a validated, frozen description of a SuperTransformer and its SubTransformer choices.

File format (``search_spaces/*.yaml``)::

    name: wmt14_en_de
    super:     {encoder_embed_dim, decoder_embed_dim, encoder_ffn_embed_dim, decoder_ffn_embed_dim,
                encoder_layers, decoder_layers, encoder_attention_heads, decoder_attention_heads,
                qkv_dim, share_embeddings, dropout, attention_dropout, max_positions, seq_len}
    choices:   {encoder_embed_dim, decoder_embed_dim, encoder_layers, decoder_layers,
                encoder_ffn_embed_dim, decoder_ffn_embed_dim, encoder_self_attention_heads,
                decoder_self_attention_heads, decoder_ende_attention_heads,
                decoder_arbitrary_ende_attn}
    latency_choices: {...}   # optional: wider choices used to sample latency datasets

Every random operation takes an explicit ``np.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hat_ray.arch import (
    DECODER_LAYER_KEYS,
    ENCODER_LAYER_KEYS,
    LAYER_KEYS,
    SCALAR_KEYS,
    Arch,
    encoder_layers_attended,
)
from hat_ray.errors import ArchError, ConfigError
from hat_ray.resources import load_named_yaml

CHOICE_KEYS = (*SCALAR_KEYS, "encoder_layers", "decoder_layers", *LAYER_KEYS)
_INT_SUPER = (
    "encoder_embed_dim",
    "decoder_embed_dim",
    "encoder_ffn_embed_dim",
    "decoder_ffn_embed_dim",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "qkv_dim",
    "max_positions",
    "seq_len",
)
_FLOAT_SUPER = ("dropout", "attention_dropout")
_SUPER_DEFAULTS: dict[str, Any] = {
    "dropout": 0.3,
    "attention_dropout": 0.1,
    "max_positions": 1024,
    "share_embeddings": True,
    "seq_len": 30,
}
# How to fix a space file: every problem message ends with where a complete example is.
SPACE_HINT = "compare with a bundled space: `hat-ray space show demo --json`"
# Which super dimension bounds each choice (heads are bounded by the super head count).
CHOICE_BOUND = {
    "encoder_embed_dim": "encoder_embed_dim",
    "decoder_embed_dim": "decoder_embed_dim",
    "encoder_layers": "encoder_layers",
    "decoder_layers": "decoder_layers",
    "encoder_ffn_embed_dim": "encoder_ffn_embed_dim",
    "decoder_ffn_embed_dim": "decoder_ffn_embed_dim",
    "encoder_self_attention_heads": "encoder_attention_heads",
    "decoder_self_attention_heads": "decoder_attention_heads",
    "decoder_ende_attention_heads": "decoder_attention_heads",
}


@dataclass(frozen=True)
class SuperConfig:
    """Dimensions and regularisation of the SuperTransformer (the largest shapes)."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder_ffn_embed_dim: int
    decoder_ffn_embed_dim: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    qkv_dim: int
    share_embeddings: bool = True
    dropout: float = 0.3
    attention_dropout: float = 0.1
    max_positions: int = 1024
    seq_len: int = 30  # HAT's measurement / FLOPs sequence length (30 WMT, 23 IWSLT)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build with :meth:`load` or :meth:`from_dict`."""

    name: str
    super: SuperConfig
    choices: Mapping[str, tuple[int, ...]]
    latency_choices: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    description: str = ""

    # ---- construction ----
    @classmethod
    def load(cls, name_or_path: str | Path) -> SearchSpace:
        """Load a bundled space by name (``wmt14_en_de``) or a YAML file path."""
        data, source = load_named_yaml("search_spaces", name_or_path, "search space")
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "search space") -> SearchSpace:
        """Validate a plain dict; raises ConfigError listing every problem."""
        if not isinstance(data, Mapping):
            raise ConfigError(source, [f"expected a mapping at top level, got {type(data).__name__}"], SPACE_HINT)
        problems: list[str] = []
        known = {"name", "description", "super", "choices", "latency_choices"}
        problems += [f"unknown top-level key {k!r} (allowed: {sorted(known)})" for k in data if k not in known]
        for key in ("name", "super", "choices"):
            if key not in data:
                problems.append(f"missing top-level key {key!r}")
        name = data.get("name", "")
        if "name" in data and (not isinstance(name, str) or not name):
            problems.append(f"name must be a non-empty string, got {name!r}")
        sup = _parse_super(data.get("super"), problems) if "super" in data else None
        choices = _parse_choices(data["choices"], "choices", problems, required=True) if "choices" in data else None
        latency = _parse_choices(data.get("latency_choices", {}), "latency_choices", problems, required=False)
        if sup is not None and choices is not None:
            _check_choices(sup, choices, "choices", problems, bounded=True)
            if latency is not None:
                merged = {**choices, **latency}
                _check_choices(sup, merged, "latency_choices", problems, bounded=False, only=set(latency))
        if problems:
            raise ConfigError(source, problems, SPACE_HINT)
        assert sup is not None and choices is not None and latency is not None
        return cls(str(name), sup, choices, latency, str(data.get("description", "")))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict that :meth:`from_dict` accepts (round trip)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["super"] = dict(vars(self.super))
        out["choices"] = {k: list(v) for k, v in self.choices.items()}
        if self.latency_choices:
            out["latency_choices"] = {k: list(v) for k, v in self.latency_choices.items()}
        return out

    def latency_space(self) -> SearchSpace:
        """The wider space HAT samples latency datasets from (choices overridden by
        ``latency_choices``; super dims widened to cover them, since latency models use random
        weights and never load this SuperTransformer)."""
        choices = {**self.choices, **self.latency_choices}
        widen = {
            sup_key: max(max(choices[c]) for c, b in CHOICE_BOUND.items() if b == sup_key)
            for sup_key in set(CHOICE_BOUND.values())
        }
        sup = replace(self.super, **{k: max(v, getattr(self.super, k)) for k, v in widen.items()})
        return SearchSpace(f"{self.name}/latency", sup, choices, {}, self.description)

    # ---- membership ----
    def problems(self, arch: Arch) -> list[str]:
        """Every way ``arch`` fails to fit this space (empty list: it fits)."""
        out = []
        for key in SCALAR_KEYS:
            if getattr(arch, key) not in self.choices[key]:
                out.append(f"{key}={getattr(arch, key)} not in {list(self.choices[key])}")
        for stack, keys in (("encoder", ENCODER_LAYER_KEYS), ("decoder", DECODER_LAYER_KEYS)):
            n = getattr(arch, f"{stack}_layers")
            if n not in self.choices[f"{stack}_layers"]:
                out.append(f"{stack}_layers={n} not in {list(self.choices[f'{stack}_layers'])}")
            for key in keys:
                for i, value in enumerate(getattr(arch, key)):
                    if value not in self.choices[key]:
                        out.append(f"{key}[{i}]={value} not in {list(self.choices[key])}")
        for i, a in enumerate(arch.decoder_arbitrary_ende_attn):
            if a in (-1, 1, 2) and encoder_layers_attended(a) > arch.encoder_layers:
                out.append(
                    f"decoder_arbitrary_ende_attn[{i}]={a} attends to "
                    f"{encoder_layers_attended(a)} encoder layers but the encoder has {arch.encoder_layers}"
                )
        return out

    def contains(self, arch: Arch) -> bool:
        return not self.problems(arch)

    def check(self, arch: Arch, source: str = "arch") -> Arch:
        """Return ``arch`` if it fits, else raise ArchError listing every problem."""
        problems = self.problems(arch)
        if problems:
            raise ArchError(problems, f"{source} (space {self.name})")
        return arch

    # ---- operators (explicit generator) ----
    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform over each choice, independently per layer (HAT's sampler)."""
        return self._from_flat(self._random_flat(rng).tolist())

    def random_gene(self, rng: np.random.Generator) -> dict[str, Any]:
        """A full gene: scalars, layer counts and per-layer values for EVERY layer slot up to
        the maximum depth (inactive slots included, as in HAT's evolution)."""
        return self._gene_dict(self._random_flat(rng).tolist())

    def max_layers(self, key: str) -> int:
        stack = "encoder" if key in ENCODER_LAYER_KEYS else "decoder"
        return max(self.choices[f"{stack}_layers"])

    def to_gene(self, arch: Arch, rng: np.random.Generator) -> dict[str, Any]:
        """Full gene of ``arch``; inactive layer slots are filled with random choices."""
        return self._gene_dict(self._arch_flat(arch, rng))

    def from_gene(self, gene: Mapping[str, Any]) -> Arch:
        """Truncate a full gene to its active layers. Arbitrary attention values that would
        attend to more encoder layers than exist are clamped (only possible with an elastic
        encoder depth below 3)."""
        n_enc, n_dec = int(gene["encoder_layers"]), int(gene["decoder_layers"])
        kwargs: dict[str, Any] = {k: int(gene[k]) for k in SCALAR_KEYS}
        for key in ENCODER_LAYER_KEYS:
            kwargs[key] = tuple(int(v) for v in gene[key][:n_enc])
        for key in DECODER_LAYER_KEYS:
            kwargs[key] = tuple(int(v) for v in gene[key][:n_dec])
        return self._clamped(kwargs, n_enc)

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.3) -> Arch:
        """Resample each gene (scalars, depths and every layer slot) with probability ``prob``."""
        gene = self._arch_flat(arch, rng)
        fresh = self._random_flat(rng)
        resample = rng.random(len(gene)) < prob
        return self._from_flat(np.where(resample, fresh, gene).tolist())

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Each gene position from ``a`` or ``b`` with probability 0.5."""
        ga, gb = self._arch_flat(a, rng), self._arch_flat(b, rng)
        from_a = rng.random(len(ga)) < 0.5
        return self._from_flat(np.where(from_a, ga, gb).tolist())

    def __getstate__(self) -> dict[str, Any]:
        # the flat-gene cache holds numpy arrays: rebuilt where used, never shipped to another node
        # (a node may run another numpy build)
        return {k: v for k, v in self.__dict__.items() if k != "_gene_slots"}

    # ---- the flat gene (the operators' hot path: a search breeds tens of thousands of Archs) ----
    # One list of values in the order of _gene_slots(): scalars, depths, then every layer slot of
    # each LAYER_KEYS entry. Drawing all positions with one rng.integers(0, highs) call consumes
    # the generator exactly as one rng.integers(n) call per position in that order did (checked
    # by tests/test_space.py), so seeded searches keep their trajectories.
    @cached_property
    def _gene_slots(self) -> tuple[tuple[tuple[str, int, int], ...], np.ndarray, np.ndarray, dict[str, int]]:
        """((key, start, length) per gene key, highs, padded choice table, {key: start}) of the flat gene."""
        slots, start, options = [], 0, []
        for key in (*SCALAR_KEYS, "encoder_layers", "decoder_layers"):
            slots.append((key, start, 0))
            options.append(self.choices[key])
            start += 1
        for key in LAYER_KEYS:
            n = self.max_layers(key)
            slots.append((key, start, n))
            options += [self.choices[key]] * n
            start += n
        width = max(len(o) for o in options)
        table = np.array([[*o, *[o[-1]] * (width - len(o))] for o in options], dtype=np.int64)
        starts = {key: first for key, first, _ in slots}
        return tuple(slots), np.array([len(o) for o in options], dtype=np.int64), table, starts

    def _random_flat(self, rng: np.random.Generator) -> np.ndarray:
        _, highs, table, _ = self._gene_slots
        return table[np.arange(len(highs)), rng.integers(0, highs)]

    def _arch_flat(self, arch: Arch, rng: np.random.Generator) -> list[int]:
        """``arch``'s flat gene; inactive slots random (the draws of :meth:`random_gene`)."""
        flat = self._random_flat(rng).tolist()
        for key, start, n in self._gene_slots[0]:
            if n == 0:
                flat[start] = getattr(arch, key)
            else:
                active = getattr(arch, key)
                flat[start:start + len(active)] = active
        return flat

    def _gene_dict(self, flat: list[int]) -> dict[str, Any]:
        return {key: flat[start:start + n] if n else flat[start] for key, start, n in self._gene_slots[0]}

    def _from_flat(self, flat: list[int]) -> Arch:
        """:meth:`from_gene` of a flat gene."""
        starts = self._gene_starts
        n_enc, n_dec = flat[starts["encoder_layers"]], flat[starts["decoder_layers"]]
        kwargs: dict[str, Any] = {k: flat[starts[k]] for k in SCALAR_KEYS}
        for keys, depth in ((ENCODER_LAYER_KEYS, n_enc), (DECODER_LAYER_KEYS, n_dec)):
            for key in keys:
                kwargs[key] = tuple(flat[starts[key]:starts[key] + depth])
        return self._clamped(kwargs, n_enc)

    @property
    def _gene_starts(self) -> dict[str, int]:
        """Each gene key's first position in the flat gene."""
        return self._gene_slots[3]

    def _clamped(self, kwargs: dict[str, Any], n_enc: int) -> Arch:
        """The Arch of ``kwargs`` with arbitrary attention clamped to the ``n_enc`` encoder layers."""
        attn = kwargs["decoder_arbitrary_ende_attn"]
        if any(encoder_layers_attended(a) > n_enc for a in attn):
            fit = [a for a in self.choices["decoder_arbitrary_ende_attn"] if encoder_layers_attended(a) <= n_enc]
            widest = max(fit, key=encoder_layers_attended)
            kwargs["decoder_arbitrary_ende_attn"] = tuple(a if encoder_layers_attended(a) <= n_enc else widest
                                                          for a in attn)
        return Arch(**kwargs)

    def largest(self) -> Arch:
        """Every choice at its maximum (arbitrary attention: most encoder layers)."""
        return self._extreme(max)

    def smallest(self) -> Arch:
        """Every choice at its minimum (arbitrary attention: last encoder layer only)."""
        return self._extreme(min)

    def middle(self) -> Arch:
        """Every choice at its middle value (the lower of the two middles for an even count; arbitrary
        attention likewise in attended-layer order): a deterministic mid-size Arch, the latency
        reference of the space (see latency/measure.py)."""
        return self._extreme(_middle)

    def _extreme(self, pick: Any) -> Arch:
        gene: dict[str, Any] = {k: pick(self.choices[k]) for k in (*SCALAR_KEYS, "encoder_layers", "decoder_layers")}
        for key in LAYER_KEYS:
            order = encoder_layers_attended if key == "decoder_arbitrary_ende_attn" else None
            gene[key] = [pick(self.choices[key], key=order)] * self.max_layers(key)
        return self.from_gene(gene)

    def size(self) -> int:
        """Number of distinct SubTransformers (active layers only)."""
        c = {k: len(v) for k, v in self.choices.items()}
        total = c["encoder_embed_dim"] * c["decoder_embed_dim"]
        enc = sum((c["encoder_ffn_embed_dim"] * c["encoder_self_attention_heads"]) ** n for n in self.choices["encoder_layers"])
        per_dec = math.prod(c[k] for k in DECODER_LAYER_KEYS)
        dec = sum(per_dec**n for n in self.choices["decoder_layers"])
        return total * enc * dec


def _middle(options: tuple[int, ...], key: Any = None) -> int:
    ordered = sorted(options, key=key)
    return int(ordered[(len(ordered) - 1) // 2])


def _parse_super(raw: Any, problems: list[str]) -> SuperConfig | None:
    if not isinstance(raw, Mapping):
        problems.append(f"super must be a mapping, got {type(raw).__name__}")
        return None
    allowed = set(_INT_SUPER) | set(_FLOAT_SUPER) | {"share_embeddings"}
    start = len(problems)
    problems += [f"super: unknown key {k!r}" for k in raw if k not in allowed]
    values = {**_SUPER_DEFAULTS, **raw}
    for key in _INT_SUPER:
        if key not in values:
            problems.append(f"super: missing key {key!r}")
        elif not _is_pos_int(values[key]):
            problems.append(f"super.{key} must be a positive integer, got {values[key]!r}")
    for key in _FLOAT_SUPER:
        v = values[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            problems.append(f"super.{key} must be a number in [0, 1), got {v!r}")
    if not isinstance(values["share_embeddings"], bool):
        problems.append(f"super.share_embeddings must be true or false, got {values['share_embeddings']!r}")
    if len(problems) > start:
        return None
    for key in ("encoder_attention_heads", "decoder_attention_heads"):
        if values["qkv_dim"] % values[key]:
            problems.append(f"super.{key}={values[key]} must divide qkv_dim={values['qkv_dim']}")
    if values["encoder_embed_dim"] != values["decoder_embed_dim"]:
        problems.append(
            "super.encoder_embed_dim and super.decoder_embed_dim must be equal (one embedding "
            "width is shared by the attention projections)"
        )
    if values["encoder_embed_dim"] % 2:
        problems.append("super.encoder_embed_dim must be even (sinusoidal positions)")
    return SuperConfig(**{k: values[k] for k in allowed})


def _parse_choices(raw: Any, where: str, problems: list[str], required: bool) -> dict[str, tuple[int, ...]] | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be a mapping, got {type(raw).__name__}")
        return None
    out: dict[str, tuple[int, ...]] = {}
    for key in raw:
        if key not in CHOICE_KEYS:
            problems.append(f"{where}: unknown key {key!r}")
    for key in CHOICE_KEYS:
        if key not in raw:
            if required:
                problems.append(f"{where}: missing key {key!r}")
            continue
        values = raw[key]
        if not isinstance(values, list) or not values:
            problems.append(f"{where}.{key} must be a non-empty list, got {values!r}")
        elif not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            problems.append(f"{where}.{key} must list integers, got {values!r}")
        elif len(set(values)) != len(values):
            problems.append(f"{where}.{key} lists a value twice: {values!r}")
        else:
            out[key] = tuple(values)
    return out


def _check_choices(sup: SuperConfig, choices: Mapping[str, tuple[int, ...]], where: str,
                   problems: list[str], bounded: bool, only: set[str] | None = None) -> None:
    """Check choice values. ``bounded``: values must fit inside the super dims (the searchable
    choices); latency choices are only measured on random weights, so they may exceed them."""
    for key, values in choices.items():
        if only is not None and key not in only:
            continue
        if key == "decoder_arbitrary_ende_attn":
            bad = [v for v in values if v not in (-1, 1, 2)]
            if bad:
                problems.append(f"{where}.{key} values must be -1, 1 or 2 (last 1, 2 or 3 encoder layers), got {bad}")
            elif "encoder_layers" in choices and min(map(encoder_layers_attended, values)) > min(choices["encoder_layers"]):
                problems.append(
                    f"{where}.{key} has no value that fits the shallowest encoder "
                    f"({min(choices['encoder_layers'])} layers): add -1"
                )
            continue
        if any(v < 1 for v in values):
            problems.append(f"{where}.{key} values must be positive, got {list(values)}")
            continue
        is_heads = key.endswith("heads")
        bound = getattr(sup, CHOICE_BOUND[key])
        if is_heads:
            bad = [v for v in values if sup.qkv_dim % v]
            if bad:
                problems.append(f"{where}.{key} {bad} must divide qkv_dim={sup.qkv_dim}")
        if not bounded:
            continue
        over = [v for v in values if v > bound]
        if over:
            problems.append(f"{where}.{key} {over} exceed(s) the super {CHOICE_BOUND[key]}={bound}")


def _is_pos_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
