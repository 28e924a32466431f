"""SuperTransformer vs extracted SubTransformer vs an independent dense reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hat_ray.arch import Arch
from hat_ray.model.accounting import count_params
from hat_ray.model.decode import beam_search, greedy_decode
from hat_ray.model.extract import extract_subnet
from hat_ray.model.transformer import build_super
from hat_ray.resources import bundled_names
from hat_ray.space import SearchSpace
from hat_ray.tokens import EOS, PAD

VOCAB = 48
N_ARCHS = 50


def batch(seed: int, b: int = 2, s: int = 7, t: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded sources (one row shorter) and right-padded previous targets."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (b, s), generator=g)
    src[0, :2] = PAD
    src[:, -1] = EOS
    prev = torch.randint(4, VOCAB, (b, t), generator=g)
    prev[:, 0] = EOS
    prev[1, -2:] = PAD
    return src, prev


@pytest.fixture(scope="module", params=bundled_names("search_spaces"))
def super_model(request):
    space = SearchSpace.load(request.param)
    model = build_super(space, VOCAB, seed=0).eval()
    return space, model


def test_supertransformer_equals_extracted_subnet(super_model):
    """For 50 random Archs (15 in the paper-sized spaces, whose models take ~0.25 s per Arch
    here): teacher-forced and step-by-step outputs equal (fp32, atol 1e-5)."""
    space, model = super_model
    rng = np.random.default_rng(123)
    src, prev = batch(1)
    with torch.inference_mode():
        for i in range(N_ARCHS if space.super.encoder_embed_dim <= 256 else 15):
            arch = space.sample(rng)
            sub = extract_subnet(model, arch)
            assert all(p.is_contiguous() for p in sub.parameters())
            want = model(src, prev, arch)
            got = sub(src, prev)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            if i % 5 == 0:  # incremental decoding with cached state, on both models
                _check_incremental(model, sub, arch, src, prev, want)


def _check_incremental(model, sub, arch, src, prev, teacher_forced):
    enc_super, enc_sub = model.encode(src, arch), sub.encode(src)
    s_super, s_sub = {}, {}
    for t in range(1, prev.shape[1] + 1):
        a = model.decode(prev[:, :t], enc_super, arch, s_super)
        b = sub.decode(prev[:, :t], enc_sub, None, s_sub)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        # row 0 has no target padding: step t equals teacher-forced position t-1
        torch.testing.assert_close(a[0, 0], teacher_forced[0, t - 1], atol=1e-5, rtol=0)


def test_extracted_subnet_has_exactly_the_arch_parameters(super_model):
    space, model = super_model
    rng = np.random.default_rng(7)
    for _ in range(5):
        arch = space.sample(rng)
        sub = extract_subnet(model, arch)
        layer_params = sum(p.numel() for n, p in sub.named_parameters() if "layers" in n)
        assert layer_params == count_params(arch, space.super.qkv_dim)
        if space.super.share_embeddings:
            assert sub.decoder_embed is sub.encoder_embed


def test_decoding_identical_on_super_and_subnet():
    space = SearchSpace.load("demo")
    model = build_super(space, VOCAB, seed=3).eval()
    rng = np.random.default_rng(5)
    src, _ = batch(9, b=3)
    for _ in range(3):
        arch = space.sample(rng)
        sub = extract_subnet(model, arch)
        assert greedy_decode(model, src, arch) == greedy_decode(sub, src)
        assert beam_search(model, src, arch, beam=4, lenpen=0.6) == beam_search(sub, src, beam=4, lenpen=0.6)


def test_beam_one_equals_greedy():
    space = SearchSpace.load("demo")
    model = build_super(space, VOCAB, seed=4).eval()
    arch = space.sample(np.random.default_rng(0))
    src, _ = batch(2, b=3)
    assert beam_search(model, src, arch, beam=1, lenpen=0.0) == greedy_decode(model, src, arch)


def test_training_mode_uses_scaled_dropout():
    space = SearchSpace.load("demo")
    model = build_super(space, VOCAB, seed=0)
    arch = space.smallest()
    assert model._dropout(arch.encoder_embed_dim, 256) == pytest.approx(0.3 * 192 / 256)
    src, prev = batch(3)
    model.train()
    torch.manual_seed(0)
    a = model(src, prev, arch)
    torch.manual_seed(1)
    b = model(src, prev, arch)
    assert not torch.allclose(a, b)  # dropout active
    loss = a.float().logsumexp(-1).mean()
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "decoder_layers.0.fc1.weight" in grads and "decoder_layers.3.fc1.weight" not in grads  # 1 layer


def test_arch_outside_model_is_refused():
    space = SearchSpace.load("demo")
    model = build_super(space, VOCAB, seed=0)
    too_big = Arch(512, 256, (1024,) * 4, (4,) * 4, (1024,), (4,), (4,), (-1,))
    with pytest.raises(ValueError, match="does not fit"):
        model(*batch(0), too_big)


# ---------------------------------------------------------------------------------------------
# Independent dense reference: fairseq-style time-first Transformer written with einsum, using
# the SuperTransformer's full tensors (no slicing). The largest Arch must match it.
# ---------------------------------------------------------------------------------------------
def _ref_positions(tokens: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    out = torch.zeros(*tokens.shape, dim)
    for b in range(tokens.shape[0]):
        pos = PAD
        for t in range(tokens.shape[1]):
            if tokens[b, t] != PAD:
                pos += 1
                ang = pos * freq
                out[b, t] = torch.cat([torch.sin(ang), torch.cos(ang)])
    return out


def _ref_mha(x, mem, wq, bq, wk, bk, wv, bv, wo, bo, heads, key_pad, causal):
    q, k, v = x @ wq.T + bq, mem @ wk.T + bk, mem @ wv.T + bv  # (T, B, qkv)
    hd = q.shape[-1] // heads
    q = q.reshape(q.shape[0], q.shape[1], heads, hd) * hd**-0.5
    k = k.reshape(k.shape[0], k.shape[1], heads, hd)
    v = v.reshape(v.shape[0], v.shape[1], heads, hd)
    w = torch.einsum("tbhd,sbhd->bhts", q, k)
    if key_pad is not None:
        w = w.masked_fill(key_pad[:, None, None, :], float("-inf"))
    if causal:
        t = w.shape[-1]
        w = w.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.einsum("bhts,sbhd->tbhd", w.softmax(-1), v).reshape(x.shape[0], x.shape[1], -1)
    return out @ wo.T + bo


def _ln(x, sd, name):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"])


def _ref_forward(sd, space, arch, src, prev):
    q = space.super.qkv_dim
    e = sd["encoder_embed"].shape[1]
    x = (math.sqrt(e) * sd["encoder_embed"][src] + _ref_positions(src, e)).transpose(0, 1)
    pad = src.eq(PAD)
    outs = []
    for i in range(arch.encoder_layers):
        p = f"encoder_layers.{i}."
        w, bb = sd[p + "self_attn.in_proj_weight"], sd[p + "self_attn.in_proj_bias"]
        h = _ref_mha(x, x, w[:q], bb[:q], w[q:2 * q], bb[q:2 * q], w[2 * q:], bb[2 * q:],
                     sd[p + "self_attn.out_proj.weight"], sd[p + "self_attn.out_proj.bias"],
                     arch.encoder_self_attention_heads[i], pad, False)
        x = _ln(x + h, sd, p + "self_attn_layer_norm")
        h = torch.relu(x @ sd[p + "fc1.weight"].T + sd[p + "fc1.bias"]) @ sd[p + "fc2.weight"].T + sd[p + "fc2.bias"]
        x = _ln(x + h, sd, p + "final_layer_norm")
        outs.append(x)
    y = (math.sqrt(e) * sd["decoder_embed"][prev] + _ref_positions(prev, e)).transpose(0, 1)
    for i in range(arch.decoder_layers):
        p = f"decoder_layers.{i}."
        w, bb = sd[p + "self_attn.in_proj_weight"], sd[p + "self_attn.in_proj_bias"]
        h = _ref_mha(y, y, w[:q], bb[:q], w[q:2 * q], bb[q:2 * q], w[2 * q:], bb[2 * q:],
                     sd[p + "self_attn.out_proj.weight"], sd[p + "self_attn.out_proj.bias"],
                     arch.decoder_self_attention_heads[i], None, True)
        y = _ln(y + h, sd, p + "self_attn_layer_norm")
        n = {-1: 1, 1: 2, 2: 3}[arch.decoder_arbitrary_ende_attn[i]]
        mem = torch.cat([outs[-1 - j] for j in range(n)], dim=0)
        kv, kvb = sd[p + "encoder_attn.kv_proj_weight"], sd[p + "encoder_attn.kv_proj_bias"]
        h = _ref_mha(y, mem, sd[p + "encoder_attn.q_proj_weight"], sd[p + "encoder_attn.q_proj_bias"],
                     kv[:q], kvb[:q], kv[q:], kvb[q:], sd[p + "encoder_attn.out_proj.weight"],
                     sd[p + "encoder_attn.out_proj.bias"], arch.decoder_ende_attention_heads[i],
                     pad.repeat(1, n), False)
        y = _ln(y + h, sd, p + "encoder_attn_layer_norm")
        h = torch.relu(y @ sd[p + "fc1.weight"].T + sd[p + "fc1.bias"]) @ sd[p + "fc2.weight"].T + sd[p + "fc2.bias"]
        y = _ln(y + h, sd, p + "final_layer_norm")
    out_w = sd.get("output_proj", sd["decoder_embed"])
    return (y @ out_w.T).transpose(0, 1)


@pytest.mark.parametrize("name", ["demo", "wmt14_en_de", "iwslt14_de_en"])
def test_largest_arch_equals_dense_reference(name):
    space = SearchSpace.load(name)
    model = build_super(space, VOCAB, seed=11).eval()
    sd = model.state_dict()
    arch = space.largest()
    # largest Arch uses every super tensor in full; also try heads/attention variations
    variants = [arch, Arch(**{**vars(arch), "decoder_arbitrary_ende_attn": (-1,) * arch.decoder_layers})]
    src, prev = batch(4)
    with torch.inference_mode():
        for a in variants:
            torch.testing.assert_close(model(src, prev, a), _ref_forward(sd, space, a, src, prev), atol=1e-4, rtol=1e-4)
