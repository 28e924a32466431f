"""Inputs of a search: the SuperTransformer checkpoint, the validation batches, predictors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hat_ray.checkpoint import load_checkpoint, model_from_checkpoint
from hat_ray.data.batching import Batch, collate, encode_corpus, make_batches
from hat_ray.data.datasets import load_split
from hat_ray.data.tokenizer import FairseqDictTokenizer, tokenizer_from_checkpoint
from hat_ray.errors import DataError, HatRayError
from hat_ray.model.transformer import Transformer
from hat_ray.space import SearchSpace


def load_supernet(path: str | Path) -> tuple[Transformer, SearchSpace, dict[str, Any]]:
    """A SuperTransformer checkpoint (not a static subnet), its space, and the raw checkpoint."""
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "supernet":
        raise DataError(f"{path} holds a trained SubTransformer, not a SuperTransformer: search needs the "
                        "checkpoint of `hat-ray train supernet`")
    model, space = model_from_checkpoint(ckpt)
    return model.eval(), space, ckpt


def validation_batches(ckpt: dict[str, Any], data: str, data_dir: str | None, max_positions: int,
                       max_tokens: int = 4096, sentences: int | None = None, source: str = "checkpoint") -> list[Batch]:
    """The fixed validation subset (first ``sentences`` pairs, default all), tokenised with the
    checkpoint's tokenizer, in length-sorted batches of at most ``max_tokens`` tokens. The
    translation direction recorded in the checkpoint applies when ``data`` is its training data."""
    tokenizer = tokenizer_from_checkpoint(ckpt, source)
    info = ckpt.get("data") or {}
    same = data == info.get("data") or str(Path(data).resolve()) == info.get("data")
    corpus = load_split(data, "valid", data_dir, src_lang=info.get("src_lang") if same else None,
                        tgt_lang=info.get("tgt_lang") if same else None,
                        segmented=isinstance(tokenizer, FairseqDictTokenizer))
    if sentences is not None:
        if sentences < 1:
            raise HatRayError(f"--valid-sentences must be positive, got {sentences}")
        corpus = corpus.subset(range(min(sentences, len(corpus))))
    encoded = encode_corpus(corpus, tokenizer, max_positions)
    if len(encoded) == 0:
        raise DataError(f"{corpus.source}: no validation pair fits in {max_positions} tokens")
    order = make_batches(encoded.src_lens, encoded.tgt_lens, max_tokens, seed=None)
    return [collate(encoded, idx) for idx in order]


def load_predictors(specs: list[str], devices: list[str], space: SearchSpace) -> dict[str, Any]:
    """``DEVICE:PATH`` specs -> {device: LatencyPredictor}; every constrained device needs one,
    fit on this space (or its latency space) and for that device."""
    from hat_ray.latency.predictor import LatencyPredictor

    out: dict[str, Any] = {}
    for spec in specs:
        device, sep, path = spec.partition(":")
        if not sep or not device or not path:
            raise HatRayError(f"--predictor {spec!r}: expected DEVICE:PATH (e.g. local_cpu:runs/pred.pt)")
        pred = LatencyPredictor.load(path)
        pred_device = getattr(pred, "device", device)
        if pred_device not in (device, None):
            raise HatRayError(f"--predictor {spec}: {path} was fit on device {pred_device!r}, not {device!r}; "
                              f"fit one for {device} with `hat-ray latency fit`")
        pred_space = getattr(pred, "space_name", None)
        if pred_space not in (None, space.name, f"{space.name}/latency"):
            raise HatRayError(f"--predictor {spec}: {path} was fit on space {pred_space!r}, the supernet's space is "
                              f"{space.name!r}; fit a predictor on {space.name} measurements")
        out[device] = pred
    missing = [d for d in devices if d not in out]
    if missing:
        raise HatRayError(f"no latency predictor for device(s) {', '.join(missing)}: pass --predictor "
                          f"{missing[0]}:PATH (fit one with `hat-ray latency fit`)")
    return out
