"""Design matrices for the default latency predictor: additive per-layer cost terms.

Latency on one device is, to a good approximation, a sum of per-layer costs plus a per-model
cost (embeddings, output projection, per-step overhead), and each layer's cost is close to
linear in its genes once the stack's embed width is fixed. Summed over layers, every such term
only needs per-stack SUMS of the per-layer genes, and a sum is ``layers x average``: HAT's 10
features determine these terms exactly. So one basis serves both data kinds:

``features`` mode (36 columns, from HAT's 10 features or from full Archs): for each multiplier
``m`` in ``{1, e, d, e*d}`` (``e, d`` = encoder / decoder embed dim / 512) the 9 stack sums
``[1, nE, sum fE, sum hE, nD, sum fD, sum hD, sum cD, sum aD]`` times ``m`` (n = layers, f = FFN
dim / 1024, h = self heads, c = enc-dec heads, a = encoder layers attended). The analytic FLOPs
and weight bytes of every matmul (``accounting.count_flops`` terms, the output projection V x D,
cross-attention keys S x a) are linear combinations of these columns, so they are in the span
(adding them as columns would only make the system rank-deficient).

``arch`` mode (54 columns, full Archs only) adds per-layer terms that averages cannot give:
for the decoder ``sum f^2, sum h^2, sum c^2, sum a^2, sum c*a, sum f*h`` times ``{1, d}``, for the
encoder ``sum f^2, sum h^2, sum f*h`` times ``{1, e}`` (non-linear per-layer costs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hat_ray.arch import Arch, encoder_layers_attended

MODES = ("features", "arch")
_BASE = ("1", "nE", "sum_fE", "sum_hE", "nD", "sum_fD", "sum_hD", "sum_cD", "sum_aD")
_MULT = ("1", "e", "d", "ed")
_DEC_EXTRA = ("sum_fD2", "sum_hD2", "sum_cD2", "sum_aD2", "sum_cDaD", "sum_fDhD")
_ENC_EXTRA = ("sum_fE2", "sum_hE2", "sum_fEhE")
EMBED_UNIT = 512.0
FFN_UNIT = 1024.0


def column_names(mode: str) -> list[str]:
    """Names of the design-matrix columns of ``mode``."""
    names = [f"{b}*{m}" for m in _MULT for b in _BASE]
    if mode == "arch":
        names += [f"{t}*{m}" for m in ("1", "d") for t in _DEC_EXTRA]
        names += [f"{t}*{m}" for m in ("1", "e") for t in _ENC_EXTRA]
    return names


def from_features(features: np.ndarray) -> np.ndarray:
    """(n, 10) HAT features (FEATURE_NAMES order, raw) -> (n, 36) ``features``-mode matrix."""
    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or x.shape[1] != 10:
        raise ValueError(f"expected (n, 10) HAT features, got shape {x.shape}")
    e_dim, n_e, f_e, h_e, d_dim, n_d, f_d, h_d, c_d, a_d = x.T
    sums = np.stack([np.ones(len(x)), n_e, n_e * f_e / FFN_UNIT, n_e * h_e,
                     n_d, n_d * f_d / FFN_UNIT, n_d * h_d, n_d * c_d, n_d * a_d], axis=1)
    return _multiply(sums, e_dim / EMBED_UNIT, d_dim / EMBED_UNIT)


def from_archs(archs: Sequence[Arch], mode: str) -> np.ndarray:
    """Full Archs -> design matrix of ``mode`` ((n, 36) or (n, 54))."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    base = from_features(np.array([a.features() for a in archs], dtype=float).reshape(len(archs), 10))
    if mode == "features":
        return base
    return np.hstack([base, np.array([_extras(a) for a in archs], dtype=float).reshape(len(archs), -1)])


def _multiply(sums: np.ndarray, e: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.hstack([sums * m[:, None] for m in (np.ones_like(e), e, d, e * d)])


def _extras(arch: Arch) -> list[float]:
    f_d = np.array(arch.decoder_ffn_embed_dim, dtype=float) / FFN_UNIT
    h_d = np.array(arch.decoder_self_attention_heads, dtype=float)
    c_d = np.array(arch.decoder_ende_attention_heads, dtype=float)
    a_d = np.array([encoder_layers_attended(a) for a in arch.decoder_arbitrary_ende_attn], dtype=float)
    f_e = np.array(arch.encoder_ffn_embed_dim, dtype=float) / FFN_UNIT
    h_e = np.array(arch.encoder_self_attention_heads, dtype=float)
    dec = [(f_d**2).sum(), (h_d**2).sum(), (c_d**2).sum(), (a_d**2).sum(), (c_d * a_d).sum(), (f_d * h_d).sum()]
    enc = [(f_e**2).sum(), (h_e**2).sum(), (f_e * h_e).sum()]
    d, e = arch.decoder_embed_dim / EMBED_UNIT, arch.encoder_embed_dim / EMBED_UNIT
    return dec + [v * d for v in dec] + enc + [v * e for v in enc]
