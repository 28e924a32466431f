"""SuperTransformer (weight-shared, elastic) and the static SubTransformer built by extract_subnet.

Both are :class:`Transformer`: a SuperTransformer has the space's max shapes and any Arch of the
space runs on it by first-k slicing; a static SubTransformer has exactly one Arch's shapes and
that Arch bound. Tensors are batch-first; sources are LEFT-padded (HAT), targets right-padded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from hat_ray.arch import Arch, encoder_layers_attended
from hat_ray.model.layers import DecoderLayer, EncoderLayer, make_positions, sinusoid_table
from hat_ray.space import SearchSpace
from hat_ray.tokens import PAD


@dataclass(frozen=True)
class ModelConfig:
    """Max shapes of a Transformer plus the constants every Arch run on it shares."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder_ffn_dims: tuple[int, ...]  # max FFN width per encoder layer
    decoder_ffn_dims: tuple[int, ...]
    qkv_dim: int
    src_vocab: int
    tgt_vocab: int
    share_embeddings: bool
    dropout: float  # base dropout, scaled by sub_dim / dropout_ref_dim
    attention_dropout: float
    dropout_ref_dim: int  # super embed dim (HAT scales dropout by the embed ratio)
    position_dim: int  # super embed dim: the sinusoid table is built at it and sliced
    max_positions: int = 1024
    padding_idx: int = PAD

    @classmethod
    def for_space(cls, space: SearchSpace, src_vocab: int, tgt_vocab: int) -> ModelConfig:
        s = space.super
        return cls(
            s.encoder_embed_dim, s.decoder_embed_dim,
            (s.encoder_ffn_embed_dim,) * s.encoder_layers,
            (s.decoder_ffn_embed_dim,) * s.decoder_layers,
            s.qkv_dim, src_vocab, tgt_vocab, s.share_embeddings, s.dropout,
            s.attention_dropout, s.encoder_embed_dim, s.encoder_embed_dim, s.max_positions,
        )

    @classmethod
    def for_arch(cls, base: ModelConfig, arch: Arch) -> ModelConfig:
        """Exact shapes of ``arch``, constants (dropout reference, positions) from ``base``."""
        return cls(
            arch.encoder_embed_dim, arch.decoder_embed_dim, arch.encoder_ffn_embed_dim,
            arch.decoder_ffn_embed_dim, base.qkv_dim, base.src_vocab, base.tgt_vocab,
            base.share_embeddings, base.dropout, base.attention_dropout, base.dropout_ref_dim,
            base.position_dim, base.max_positions, base.padding_idx,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["encoder_ffn_dims"] = list(self.encoder_ffn_dims)
        out["decoder_ffn_dims"] = list(self.decoder_ffn_dims)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        data["encoder_ffn_dims"] = tuple(data["encoder_ffn_dims"])
        data["decoder_ffn_dims"] = tuple(data["decoder_ffn_dims"])
        return cls(**data)

    @property
    def embed_width(self) -> int:
        """Width of the token embedding matrix (a tied matrix serves both stacks)."""
        if self.share_embeddings:
            return max(self.encoder_embed_dim, self.decoder_embed_dim)
        return self.encoder_embed_dim


class EncoderOut(NamedTuple):
    layers: list[Tensor]  # output of every active encoder layer, each (B, S, E)
    padding_mask: Tensor  # (B, S) bool, True = pad


DecoderState = dict[str, Any]  # {"layers": [{"self": {...}, "cross": {...}}, ...]}


def _embedding(rows: int, dim: int, padding_idx: int) -> nn.Parameter:
    w = torch.empty(rows, dim)
    nn.init.normal_(w, mean=0.0, std=dim**-0.5)
    w[padding_idx] = 0
    return nn.Parameter(w)


class Transformer(nn.Module):
    """Encoder-decoder Transformer with elastic (first-k) shapes. See module docstring."""

    def __init__(self, config: ModelConfig, arch: Arch | None = None) -> None:
        super().__init__()
        self.config = config
        self.bound_arch = arch  # set for a static SubTransformer
        c = config
        self.encoder_embed = _embedding(c.src_vocab, c.embed_width, c.padding_idx)
        if c.share_embeddings:
            if c.src_vocab != c.tgt_vocab:
                raise ValueError("shared embeddings need one joined vocabulary (src_vocab == tgt_vocab)")
            self.decoder_embed = self.encoder_embed
            self.output_proj = None
        else:
            self.decoder_embed = _embedding(c.tgt_vocab, c.decoder_embed_dim, c.padding_idx)
            self.output_proj = _embedding(c.tgt_vocab, c.decoder_embed_dim, c.padding_idx)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(c.encoder_embed_dim, f, c.qkv_dim, c.attention_dropout) for f in c.encoder_ffn_dims
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(c.decoder_embed_dim, c.encoder_embed_dim, f, c.qkv_dim, c.attention_dropout)
            for f in c.decoder_ffn_dims
        )
        table = sinusoid_table(c.max_positions + c.padding_idx + 1, c.position_dim, c.padding_idx)
        self.register_buffer("positions", table, persistent=False)

    # ---- arch handling ----
    def resolve(self, arch: Arch | None) -> Arch:
        """The Arch to run: the bound one for a static model, else the argument (checked)."""
        if self.bound_arch is not None:
            if arch is not None and arch != self.bound_arch:
                raise ValueError("this static SubTransformer is bound to another Arch")
            return self.bound_arch
        if arch is None:
            raise ValueError("a SuperTransformer needs an Arch")
        self._check_fits(arch)
        return arch

    def _check_fits(self, arch: Arch) -> None:
        c = self.config
        ok = (
            arch.encoder_embed_dim <= c.encoder_embed_dim
            and arch.decoder_embed_dim <= c.decoder_embed_dim
            and arch.encoder_layers <= len(c.encoder_ffn_dims)
            and arch.decoder_layers <= len(c.decoder_ffn_dims)
            and all(f <= m for f, m in zip(arch.encoder_ffn_embed_dim, c.encoder_ffn_dims))
            and all(f <= m for f, m in zip(arch.decoder_ffn_embed_dim, c.decoder_ffn_dims))
            and all(c.qkv_dim % h == 0 for h in (*arch.encoder_self_attention_heads,
                    *arch.decoder_self_attention_heads, *arch.decoder_ende_attention_heads))
            and all(encoder_layers_attended(a) <= arch.encoder_layers for a in arch.decoder_arbitrary_ende_attn)
        )
        if not ok:
            raise ValueError(f"Arch does not fit this model's shapes: {arch.key()}")

    def _dropout(self, dim: int, ref: int) -> float:
        return self.config.dropout * dim / ref

    def _embed(self, tokens: Tensor, weight: Tensor, dim: int) -> Tensor:
        """scale * E[tokens][:, :, :dim] + sinusoid[positions][:, :, :dim]  -> (B, T, dim)."""
        x = math.sqrt(dim) * nn.functional.embedding(tokens, weight[:, :dim])
        return x + self.positions[make_positions(tokens, self.config.padding_idx)][..., :dim]

    # ---- encoder ----
    def encode(self, src_tokens: Tensor, arch: Arch | None = None) -> EncoderOut:
        """src_tokens (B, S), left-padded -> every active layer's output (B, S, E)."""
        arch = self.resolve(arch)
        dim = arch.encoder_embed_dim
        p = self._dropout(dim, self.config.dropout_ref_dim)
        pad = src_tokens.eq(self.config.padding_idx)
        mask = ~pad[:, None, None, :]  # (B, 1, 1, S) True = attend
        x = nn.functional.dropout(self._embed(src_tokens, self.encoder_embed, dim), p, self.training)
        outs = []
        for i in range(arch.encoder_layers):
            x = self.encoder_layers[i](x, mask, dim, arch.encoder_ffn_embed_dim[i],
                                       arch.encoder_self_attention_heads[i], p)
            outs.append(x)
        return EncoderOut(outs, pad)

    # ---- decoder ----
    def decode(self, prev_tokens: Tensor, enc: EncoderOut, arch: Arch | None = None,
               state: DecoderState | None = None, project: bool = True) -> Tensor:
        """Teacher-forced (``state=None``): prev_tokens (B, T) -> logits (B, T, V) (``project``
        False: the decoder's output features (B, T, dim), before :meth:`project_out`).
        Incremental (``state`` a dict, initially empty): prev_tokens is the whole prefix
        (B, t); only its last token is run, caches in ``state`` are extended, and the result
        is (B, 1, V)."""
        arch = self.resolve(arch)
        dim, enc_dim = arch.decoder_embed_dim, arch.encoder_embed_dim
        p = self._dropout(dim, self.config.dropout_ref_dim)
        if state is None:
            x = self._embed(prev_tokens, self.decoder_embed, dim)
            t = prev_tokens.shape[1]
            self_mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()[None, None]
        else:
            step = prev_tokens.shape[1]
            pos = self.config.padding_idx + step
            tok = prev_tokens[:, -1:]
            x = math.sqrt(dim) * nn.functional.embedding(tok, self.decoder_embed[:, :dim])
            x = x + self.positions[pos, :dim]
            self_mask = None
            if "layers" not in state:
                state["layers"] = [{"self": {}, "cross": {}} for _ in range(arch.decoder_layers)]
        x = nn.functional.dropout(x, p, self.training)
        for i in range(arch.decoder_layers):
            n = encoder_layers_attended(arch.decoder_arbitrary_ende_attn[i])
            # Arbitrary enc-dec attention: keys/values = time-concatenation of the last n outputs.
            memory = enc.layers[-1] if n == 1 else torch.cat(enc.layers[::-1][:n], dim=1)
            memory_mask = ~enc.padding_mask.repeat(1, n)[:, None, None, :]
            cache = None if state is None else state["layers"][i]
            x = self.decoder_layers[i](
                x, self_mask, memory, memory_mask, dim, enc_dim, arch.decoder_ffn_embed_dim[i],
                arch.decoder_self_attention_heads[i], arch.decoder_ende_attention_heads[i], p, cache,
            )
        return self.project_out(x, dim) if project else x

    def project_out(self, x: Tensor, dim: int) -> Tensor:
        """The output projection (B, T, dim) -> (B, T, V): the tied embedding's first ``dim``
        columns, or the separate output matrix's."""
        out_w = self.decoder_embed if self.output_proj is None else self.output_proj
        return nn.functional.linear(x, out_w[:, :dim])

    def forward(self, src_tokens: Tensor, prev_tokens: Tensor, arch: Arch | None = None) -> Tensor:
        """Teacher-forced pass: (B, S) source, (B, T) previous target tokens -> (B, T, V)."""
        arch = self.resolve(arch)
        return self.decode(prev_tokens, self.encode(src_tokens, arch), arch)


def model_from_tensors(config: ModelConfig, tensors: dict[str, Tensor], arch: Arch | None = None) -> Transformer:
    """Build a Transformer around existing tensors WITHOUT copying them (``load_state_dict``
    with ``assign``): used to map SuperTransformer weights shared read-only through Ray's
    object store into a scorer. Tied embeddings stay tied; the position table is rebuilt."""
    with torch.device("meta"):
        model = Transformer(config, arch=arch)
    model.load_state_dict(tensors, assign=True, strict=True)
    if config.share_embeddings:
        model.decoder_embed = model.encoder_embed
    model.positions = sinusoid_table(config.max_positions + config.padding_idx + 1, config.position_dim,
                                     config.padding_idx)
    return model


def reorder_encoder_out(enc: EncoderOut, order: Tensor) -> EncoderOut:
    """Select/repeat batch rows of an encoder output (beam expansion)."""
    return EncoderOut([x.index_select(0, order) for x in enc.layers], enc.padding_mask.index_select(0, order))


def reorder_state(state: DecoderState, order: Tensor) -> None:
    """Reorder cached self-attention keys/values in place after beam selection (cross-attention
    caches depend only on the source and are expanded once, so they are reordered too)."""
    for layer in state.get("layers", []):
        for part in layer.values():
            for key in list(part):
                part[key] = part[key].index_select(0, order)


def build_super(space: SearchSpace, src_vocab: int, tgt_vocab: int | None = None,
                seed: int | None = None) -> Transformer:
    """A freshly initialised SuperTransformer for ``space``."""
    if seed is not None:
        torch.manual_seed(seed)
    tgt = src_vocab if tgt_vocab is None else tgt_vocab
    return Transformer(ModelConfig.for_space(space, src_vocab, tgt))
