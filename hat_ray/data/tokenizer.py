"""Subword tokenizers with fairseq's special ids (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3).

- :class:`SentencePieceTokenizer`: one JOINT BPE model trained on the source + target training
  text (HAT uses a joined dictionary for WMT). Library choice: sentencepiece reads raw text (no
  Moses pre-tokenisation), its model is one self-contained protobuf (stored as bytes in the
  checkpoint, so ``hat-ray evaluate --checkpoint CKPT`` needs nothing else), training is
  deterministic and takes ~1 s for Multi30k, and with ``byte_fallback`` and the ``identity``
  normaliser ``decode(encode(s)) == s`` for ANY UTF-8 text - which detokenised SacreBLEU needs.
  (HF ``tokenizers`` would also do; it needs a pre-tokeniser / decoder pipeline configured to
  get the same exact round trip.)
- :class:`FairseqDictTokenizer`: the ``dict.<lang>.txt`` vocabularies of imported HAT
  checkpoints, over text that is already segmented (space-separated BPE units with ``@@ ``
  continuation markers, as fairseq's prepared files are).

Both expose ``encode(text, side)`` / ``decode(ids, side)``, ``vocab_size`` and ``to_state()`` (plain
data for the checkpoint); :func:`tokenizer_from_checkpoint` rebuilds either.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sentencepiece as spm

from hat_ray.errors import DataError
from hat_ray.tokens import BOS, EOS, PAD, UNK

log = logging.getLogger(__name__)


class SentencePieceTokenizer:
    """A joint sentencepiece model: the same ids on both sides."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes) -> None:
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, OSError) as exc:
            raise DataError(f"not a sentencepiece model ({exc})") from None
        ids = (self.sp.bos_id(), self.sp.pad_id(), self.sp.eos_id(), self.sp.unk_id())
        if ids != (BOS, PAD, EOS, UNK):
            raise DataError(f"sentencepiece model has special ids {ids}, expected {(BOS, PAD, EOS, UNK)}")
        self.model_proto = model_proto

    @classmethod
    def train(cls, lines: Iterable[str], vocab_size: int = 8000, model_type: str = "bpe") -> SentencePieceTokenizer:
        """Train on ``lines`` (source and target training text together). ``vocab_size`` is an
        upper bound: a small corpus yields fewer pieces rather than an error."""
        lines = [line for line in lines if line]
        if not lines:
            raise DataError("cannot train a tokenizer on an empty corpus")
        # Every character of the corpus, the word-boundary mark, 256 byte pieces and 4 specials
        # must fit: a smaller vocab_size is raised to that minimum.
        chars = set().union(*map(set, lines))
        minimum = len(chars | {"\u2581"}) + 256 + 4
        if vocab_size < minimum:
            log.warning("vocab size %d is below this corpus' minimum %d (characters + 256 bytes + 4 specials): "
                        "using %d", vocab_size, minimum, minimum)
            vocab_size = minimum
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
                character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, bos_id=BOS, pad_id=PAD, eos_id=EOS, unk_id=UNK,
                bos_piece="<s>", pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
                hard_vocab_limit=False, num_threads=1, minloglevel=2,
                input_sentence_size=5_000_000, shuffle_input_sentence=True,
            )
        except RuntimeError as exc:
            raise DataError(f"sentencepiece training failed: {' '.join(str(exc).split())}") from None
        tok = cls(buf.getvalue())
        log.info("trained a %s sentencepiece model: %d pieces on %d lines", model_type, tok.vocab_size, len(lines))
        return tok

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def pieces(self) -> list[str]:
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]

    def encode(self, text: str, side: str = "src") -> list[int]:
        """Subword ids of ``text`` (no EOS appended)."""
        return self.sp.encode(text)

    def encode_batch(self, lines: Sequence[str], side: str = "src") -> list[list[int]]:
        return self.sp.encode(list(lines))

    def decode(self, ids: Sequence[int], side: str = "tgt") -> str:
        """Text of ``ids``; special ids (BOS/PAD/EOS) are dropped."""
        return self.sp.decode([i for i in ids if i not in (BOS, PAD, EOS)])

    def reference(self, text: str) -> str:
        """A corpus target line as the text hypotheses are compared with (raw: unchanged)."""
        return text

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_proto}


class FairseqDictTokenizer:
    """fairseq dictionaries (``vocab = {"src": tokens, "tgt": tokens}``) over pre-segmented text."""

    kind = "fairseq_dict"

    def __init__(self, vocab: Mapping[str, Sequence[str]]) -> None:
        self.vocab = {side: list(vocab[side]) for side in ("src", "tgt")}
        self.index = {side: {tok: i for i, tok in enumerate(toks)} for side, toks in self.vocab.items()}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab["tgt"])

    def encode(self, text: str, side: str = "src") -> list[int]:
        index = self.index[side]
        return [index.get(tok, UNK) for tok in text.split()]

    def encode_batch(self, lines: Sequence[str], side: str = "src") -> list[list[int]]:
        return [self.encode(line, side) for line in lines]

    def decode(self, ids: Sequence[int], side: str = "tgt") -> str:
        """Tokens joined by spaces with BPE continuations (``@@ ``) merged."""
        toks = self.vocab[side]
        text = " ".join(toks[i] for i in ids if i not in (BOS, PAD, EOS))
        return (text + " ").replace("@@ ", "").rstrip()

    def reference(self, text: str) -> str:
        """A segmented corpus target line with its BPE continuations merged."""
        return (text + " ").replace("@@ ", "").rstrip()

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": self.vocab}


Tokenizer = SentencePieceTokenizer | FairseqDictTokenizer


def tokenizer_from_state(state: Mapping[str, Any]) -> Tokenizer:
    kind = state.get("kind")
    if kind == SentencePieceTokenizer.kind:
        return SentencePieceTokenizer(state["model"])
    if kind == FairseqDictTokenizer.kind:
        return FairseqDictTokenizer(state["vocab"])
    raise DataError(f"unknown tokenizer kind {kind!r}")


def tokenizer_from_checkpoint(ckpt: Mapping[str, Any], source: str = "checkpoint") -> Tokenizer:
    """The checkpoint's sentencepiece model, else its fairseq vocabularies (imported HAT)."""
    if ckpt.get("tokenizer"):
        return tokenizer_from_state(ckpt["tokenizer"])
    if ckpt.get("vocab"):
        return FairseqDictTokenizer(ckpt["vocab"])
    raise DataError(f"{source} has neither a tokenizer nor a vocabulary (import HAT checkpoints with "
                    "`hat-ray import-hat --dict-dir DIR`)")
