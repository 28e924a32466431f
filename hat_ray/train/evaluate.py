"""Evaluation: translation (greedy / beam), detokenised SacreBLEU with its signature, HAT's
tokenized BLEU with compound splitting, validation loss (bits), and checkpoint averaging.

- SacreBLEU: 13a tokenisation, mixed case, on detokenised text (the subword model's decode is
  exact, so hypotheses are raw text like the references): the shareable score.
- Tokenized BLEU (HAT's paper numbers): hypotheses and references tokenised (13a, standing in
  for the Moses tokenizer), then every hyphen between two non-space characters split as
  ``a ##AT##-##AT## b`` (HAT's ``compound_split_bleu.sh``), then BLEU on whitespace tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from hat_ray.arch import Arch
from hat_ray.checkpoint import load_checkpoint
from hat_ray.data.batching import encode_corpus, make_batches
from hat_ray.data.corpus import ParallelCorpus
from hat_ray.errors import DataError
from hat_ray.model.decode import beam_search, greedy_decode
from hat_ray.tokens import EOS, PAD
from hat_ray.train.loss import validation_loss
from hat_ray.train.trainer import batches_of

_COMPOUND = re.compile(r"(\S)-(\S)")
_TOK13A = Tokenizer13a()


@dataclass(frozen=True)
class EvalResult:
    sacrebleu: float
    signature: str
    tok_bleu: float
    valid_loss: float  # label-smoothed CE, bits per target token
    hypotheses: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Exactly the CLI's JSON contract."""
        return {"sacrebleu": float(self.sacrebleu), "signature": self.signature, "tok_bleu": float(self.tok_bleu),
                "valid_loss": float(self.valid_loss)}


def translate(model: torch.nn.Module, arch: Arch | None, tokenizer, lines: Sequence[str], beam: int = 1,
              lenpen: float = 1.0, max_tokens: int = 4096, max_len_a: float = 1.2, max_len_b: int = 10) -> list[str]:
    """Detokenised translations of ``lines``, in input order. ``beam`` 1 is greedy search.
    Sources longer than the model's positions are truncated (keeping the final EOS)."""
    limit = model.config.max_positions
    srcs = [ids[:limit - 1] + [EOS] for ids in tokenizer.encode_batch(lines, "src")]
    lens = np.array([len(s) for s in srcs], dtype=np.int64)
    out: list[str] = [""] * len(srcs)
    was_training = model.training
    model.eval()
    try:
        for idx in make_batches(lens, lens, max(max_tokens // max(beam, 1), int(lens.max(initial=1))), seed=None):
            width = int(lens[idx].max())
            src = torch.full((len(idx), width), PAD, dtype=torch.long)
            for row, i in enumerate(idx):
                src[row, width - lens[i]:] = torch.tensor(srcs[i])
            if beam <= 1:
                hyps = greedy_decode(model, src, arch, max_len_a, max_len_b)
            else:
                hyps = beam_search(model, src, arch, beam, lenpen, max_len_a, max_len_b)
            for i, hyp in zip(idx, hyps):
                out[int(i)] = tokenizer.decode(hyp, "tgt")
    finally:
        model.train(was_training)
    return out


def split_compounds(text: str) -> str:
    """HAT's compound splitting: ``a-b`` -> ``a ##AT##-##AT## b`` (non-overlapping, left to right)."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", text)


def sacre_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus SacreBLEU (13a, cased) and its signature string."""
    metric = BLEU()
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


def tokenized_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """HAT's tokenized BLEU with compound splitting (see module docstring)."""
    def prep(lines: Sequence[str]) -> list[str]:
        return [split_compounds(_TOK13A(line)) for line in lines]

    metric = BLEU(tokenize="none", force=True)
    return float(metric.corpus_score(prep(hypotheses), [prep(references)]).score)


def evaluate(model: torch.nn.Module, arch: Arch | None, tokenizer, corpus: ParallelCorpus, beam: int = 4,
             lenpen: float = 0.6, max_tokens: int = 4096, eps: float = 0.1) -> EvalResult:
    """Translate ``corpus.src`` and score against ``corpus.tgt``; validation loss on the pairs."""
    hyps = translate(model, arch, tokenizer, corpus.src, beam, lenpen, max_tokens)
    refs = [tokenizer.reference(t) for t in corpus.tgt]
    score, signature = sacre_bleu(hyps, refs)
    encoded = encode_corpus(corpus, tokenizer, model.config.max_positions)
    loss = validation_loss(model, arch, batches_of(encoded, max_tokens), eps) if len(encoded) else float("nan")
    return EvalResult(score, signature, tokenized_bleu(hyps, refs), loss, tuple(hyps))


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Mean of the model weights of ``paths`` (same model shapes); other entries from the last."""
    if not paths:
        raise DataError("no checkpoints to average")
    ckpts = [load_checkpoint(p) for p in paths]
    base = ckpts[-1]
    for path, ckpt in zip(paths, ckpts):
        if ckpt["model_config"] != base["model_config"] or ckpt.get("arch") != base.get("arch"):
            raise DataError(f"cannot average {path} with {paths[-1]}: different model shapes or Arch")
    averaged = {}
    for key, value in base["model"].items():
        if torch.is_floating_point(value):
            total = sum(c["model"][key].double() for c in ckpts)
            averaged[key] = (total / len(ckpts)).to(value.dtype)
        else:
            averaged[key] = value
    return {**base, "model": averaged, "meta": {**base.get("meta", {}), "averaged": [str(p) for p in paths]}}
