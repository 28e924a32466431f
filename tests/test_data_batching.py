"""Batching by max tokens with length bucketing; padding layout; the resumable stream; synthetic data."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hat_ray.data.batching import BatchStream, EncodedCorpus, _flatten, collate, make_batches
from hat_ray.data.synthetic import generate_pairs, make_lexicon, synthetic_split
from hat_ray.tokens import EOS, PAD


def encoded(src: list[list[int]], tgt: list[list[int]]) -> EncodedCorpus:
    return EncodedCorpus(*_flatten(src), *_flatten(tgt))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=200),
       st.integers(8, 400), st.integers(0, 3))
def test_batches_never_exceed_max_tokens(lengths, max_tokens, seed):
    src = np.array([a for a, _ in lengths])
    tgt = np.array([b for _, b in lengths])
    batches = make_batches(src, tgt, max_tokens, seed)
    seen = np.concatenate(batches) if batches else np.array([], dtype=int)
    fits = np.flatnonzero(np.maximum(src, tgt) <= max_tokens)
    assert sorted(seen.tolist()) == fits.tolist()  # every fitting sentence exactly once
    for b in batches:
        assert len(b) * max(src[b].max(), tgt[b].max()) <= max_tokens


def test_collate_layout_and_bucketing():
    data = encoded([[5, 6, 7], [8]], [[9], [10, 11, 12]])
    b = collate(data, np.array([0, 1]))
    assert b.src.tolist() == [[5, 6, 7, EOS], [PAD, PAD, 8, EOS]]  # left-padded
    assert b.target.tolist() == [[9, EOS, PAD, PAD], [10, 11, 12, EOS]]  # right-padded
    assert b.prev.tolist() == [[EOS, 9, PAD, PAD], [EOS, 10, 11, 12]]  # EOS moved to the front
    assert b.ntokens == 6
    lens = np.array([30, 2, 29, 3, 31, 1])
    batches = make_batches(lens, lens, 64, seed=None)
    assert [sorted(lens[x].tolist()) for x in batches] == [[1, 2, 3], [29, 30], [31]]


def test_stream_is_a_pure_function_of_position():
    data = encoded([[4] * (i % 7 + 1) for i in range(50)], [[5] * (i % 5 + 1) for i in range(50)])
    batches = make_batches(data.src_lens, data.tgt_lens, 24, seed=3)
    a, b = BatchStream(data, batches, seed=3), BatchStream(data, batches, seed=3)
    order = [a.at(p).indices.tolist() for p in range(3 * len(batches))]
    assert [b.at(p).indices.tolist() for p in (5, 40, 2)] == [order[5], order[40], order[2]]
    first_epoch = sorted(i for x in order[:len(batches)] for i in x)
    assert first_epoch == list(range(50))
    assert order[:len(batches)] != order[len(batches):2 * len(batches)]  # reshuffled per epoch


def test_synthetic_corpus_is_deterministic_and_structured():
    assert generate_pairs(50, seed=4) == generate_pairs(50, seed=4)
    assert generate_pairs(50, seed=4) != generate_pairs(50, seed=5)
    c = synthetic_split("valid", size=400)
    assert len(c) == 400 and all(s.endswith(".") and t.endswith(".") for s, t in zip(c.src, c.tgt))
    assert set(c.src).isdisjoint(synthetic_split("train", size=2000).src)
    starts = {t.split()[0] for t in c.tgt}
    assert {"Der", "Die", "Das", "Ein", "Eine", "Einige"} <= starts  # gender / number / case agreement
    assert any("," in s for s in c.src)  # subordinate clauses (verb-final in the target)
    names = set(make_lexicon().names)  # the copy channel: names and numerals appear unchanged in the target
    copied = [(s, t) for s, t in zip(c.src, c.tgt) if names & set(s.rstrip(".").replace(",", "").split())]
    assert len(copied) > 40 and all(names & set(s.rstrip(".").split()) <= set(t.rstrip(".").split()) for s, t in copied)
    numerals = [(s, t) for s, t in zip(c.src, c.tgt) if any(w.isdigit() for w in s.split())]
    assert numerals and all(sorted(w for w in s.split() if w.isdigit()) == sorted(w for w in t.split() if w.isdigit())
                            for s, t in numerals)
    words = {w.strip(".,").lower() for s in c.src for w in s.split()}
    assert len(words) < 600  # a small lexicon: whole words are single subword pieces (the demo learns it in minutes)
