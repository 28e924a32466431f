"""Subword tokenizers: exact round trip, fairseq ids, checkpoint state, fairseq dictionaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hat_ray.data.synthetic import synthetic_split
from hat_ray.data.tokenizer import (
    FairseqDictTokenizer,
    SentencePieceTokenizer,
    tokenizer_from_checkpoint,
    tokenizer_from_state,
)
from hat_ray.errors import DataError


@pytest.fixture(scope="module")
def spm_tok():
    c = synthetic_split("train", size=800)
    return SentencePieceTokenizer.train([*c.src, *c.tgt], vocab_size=600)


def test_special_ids_and_pieces(spm_tok):
    assert spm_tok.pieces()[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert 300 < spm_tok.vocab_size <= 600


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60))
def test_round_trip_any_text(spm_tok, text):
    """decode(encode(s)) == s for any UTF-8 text: unseen characters fall back to bytes."""
    assert spm_tok.decode(spm_tok.encode(text)) == text


def test_round_trip_real_sentences_and_state(spm_tok, shared_data):
    from hat_ray.data.datasets import load_split

    test = load_split("multi30k", "test", shared_data / "multi30k")
    lines = [*test.src[:200], *test.tgt[:200]]
    assert [spm_tok.decode(ids) for ids in spm_tok.encode_batch(lines)] == lines
    again = tokenizer_from_state(spm_tok.to_state())
    assert again.encode_batch(lines) == spm_tok.encode_batch(lines)


def test_training_is_deterministic():
    c = synthetic_split("valid", size=300)
    a = SentencePieceTokenizer.train([*c.src, *c.tgt], 400)
    b = SentencePieceTokenizer.train([*c.src, *c.tgt], 400)
    assert a.model_proto == b.model_proto


def test_fairseq_dict_tokenizer_and_checkpoint_lookup():
    vocab = {"src": ["<s>", "<pad>", "</s>", "<unk>", "es", "pyrami@@", "de"],
             "tgt": ["<s>", "<pad>", "</s>", "<unk>", "it", "pyrami@@", "d", "."]}
    tok = tokenizer_from_checkpoint({"vocab": vocab})
    assert isinstance(tok, FairseqDictTokenizer)
    assert tok.encode("es pyrami@@ de ist", "src") == [4, 5, 6, 3]
    assert tok.decode([4, 5, 6, 7, 2], "tgt") == "it pyramid ."
    assert tok.reference("it pyrami@@ d .") == "it pyramid ."
    with pytest.raises(DataError, match="neither a tokenizer nor a vocabulary"):
        tokenizer_from_checkpoint({"vocab": None})
    with pytest.raises(DataError, match="not a sentencepiece model"):
        SentencePieceTokenizer(b"garbage")
