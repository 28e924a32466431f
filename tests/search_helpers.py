"""Shared fixtures for search tests: a tiny space, a random SuperTransformer, random batches,
and a fake latency predictor (FLOPs-proportional)."""

from __future__ import annotations

import numpy as np
import torch

from hat_ray.data.batching import Batch
from hat_ray.model.accounting import count_flops
from hat_ray.model.transformer import build_super
from hat_ray.space import SearchSpace
from hat_ray.tokens import EOS, PAD

TINY = {
    "name": "tiny",
    "super": {"encoder_embed_dim": 32, "decoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
              "decoder_ffn_embed_dim": 64, "encoder_layers": 3, "decoder_layers": 3,
              "encoder_attention_heads": 4, "decoder_attention_heads": 4, "qkv_dim": 32,
              "share_embeddings": True, "dropout": 0.1, "attention_dropout": 0.0, "max_positions": 64,
              "seq_len": 10},
    "choices": {"encoder_embed_dim": [32, 24], "decoder_embed_dim": [32, 24], "encoder_layers": [3],
                "decoder_layers": [1, 2, 3], "encoder_ffn_embed_dim": [64, 48, 32],
                "decoder_ffn_embed_dim": [64, 48, 32], "encoder_self_attention_heads": [4, 2],
                "decoder_self_attention_heads": [4, 2], "decoder_ende_attention_heads": [4, 2],
                "decoder_arbitrary_ende_attn": [-1, 1, 2]},
}
VOCAB = 40


def tiny_space() -> SearchSpace:
    return SearchSpace.from_dict(TINY)


def tiny_super(seed: int = 0):
    return build_super(tiny_space(), VOCAB, seed=seed).eval()


def random_batches(n: int = 3, b: int = 4, s: int = 9, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        src = torch.randint(4, VOCAB, (b, s), generator=g)
        src[0, :3] = PAD
        src[:, -1] = EOS
        target = torch.randint(4, VOCAB, (b, s), generator=g)
        target[:, -1] = EOS
        prev = torch.cat([torch.full((b, 1), EOS), target[:, :-1]], dim=1)
        out.append(Batch(src, prev, target, int(target.ne(PAD).sum()), np.arange(b)))
    return out


class FakePredictor:
    """Latency ~ FLOPs of the tiny space (ms), with a 3% 'uncertainty'."""

    device = "fake"
    space_name = "tiny"

    def predict_with_uncertainty(self, archs):
        mean = np.array([count_flops(a, 32, 10) / 2e4 for a in archs])
        return mean, 0.03 * mean

    def predict(self, archs):
        return self.predict_with_uncertainty(archs)[0]


def write_supernet_checkpoint(path, seed: int = 0):
    """A tiny SuperTransformer checkpoint with a real sentencepiece tokenizer trained on the
    synthetic corpus (the checkpoint format `hat-ray train supernet` writes)."""
    import json as _json

    from hat_ray.checkpoint import make_checkpoint, save_checkpoint
    from hat_ray.data.synthetic import synthetic_split
    from hat_ray.data.tokenizer import SentencePieceTokenizer

    corpus = synthetic_split("train", size=600)
    tok = SentencePieceTokenizer.train([*corpus.src, *corpus.tgt], vocab_size=300)
    space = tiny_space()
    model = build_super(space, tok.vocab_size, seed=seed).eval()
    save_checkpoint(path, make_checkpoint(model, space, meta={"note": _json.dumps("test")},
                                          tokenizer=tok.to_state()))
    return model, tok


def write_fake_predictor(path, n: int = 120, seed: int = 0, device: str = "fake"):
    """A real LatencyPredictor fit on FakePredictor 'measurements' of tiny-space Archs, labelled
    as a predictor for ``device`` (e.g. ``local_cpu``, so a search can re-measure on it)."""
    import json as _json

    import pandas as pd

    from hat_ray.arch import FEATURE_NAMES
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.predictor import LatencyPredictor

    space = tiny_space()
    rng = np.random.default_rng(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(n)))
    lat = FakePredictor().predict(archs)
    rows = []
    for arch, ms in zip(archs, lat):
        row = {"space": "tiny", "device": device, "arch_key": arch.key(), "arch": _json.dumps(arch.to_dict()),
               "source": "test", "latency_ms": float(ms), "encoder_ms": 0.1 * float(ms), "decoder_ms": 0.9 * float(ms)}
        row.update(dict(zip(FEATURE_NAMES, arch.features())))
        rows.append(row)
    pred = LatencyPredictor.fit(LatencyDataset(pd.DataFrame(rows), source="fake"), space=space, device=device)
    pred.save(path)
    return pred
