"""The tiny search space shared by the training and evaluation tests (2+2 layers, width 32)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

_TINY: dict[str, Any] = {
    "name": "tiny",
    "super": {"encoder_embed_dim": 32, "decoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
              "decoder_ffn_embed_dim": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
              "decoder_attention_heads": 2, "qkv_dim": 32, "max_positions": 128, "dropout": 0.1},
    "choices": {"encoder_embed_dim": [32, 24], "decoder_embed_dim": [32, 24], "encoder_layers": [2],
                "decoder_layers": [1, 2], "encoder_ffn_embed_dim": [64, 32], "decoder_ffn_embed_dim": [64, 32],
                "encoder_self_attention_heads": [2, 1], "decoder_self_attention_heads": [2, 1],
                "decoder_ende_attention_heads": [2, 1], "decoder_arbitrary_ende_attn": [-1, 1]},
}


def tiny_space_dict(dropout: float = 0.1) -> dict[str, Any]:
    """A fresh copy (tests may write it to YAML or tweak it)."""
    data = copy.deepcopy(_TINY)
    data["super"]["dropout"] = dropout
    return data


def write_tiny_run_inputs(root: Path, sizes: tuple[int, int, int] = (300, 30, 30)) -> Path:
    """``root/tiny.yaml`` (this space) and ``root/data/{train,valid,test}.{src,tgt}`` (the synthetic
    corpus, train / valid / test sentences as ``sizes``): the inputs of a `hat-ray train` test."""
    import yaml

    from hat_ray.data.synthetic import synthetic_split

    (root / "tiny.yaml").write_text(yaml.safe_dump(tiny_space_dict()))
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), sizes):
        c = synthetic_split(split, size=n)
        (data / f"{split}.src").write_text("\n".join(c.src) + "\n")
        (data / f"{split}.tgt").write_text("\n".join(c.tgt) + "\n")
    return root
