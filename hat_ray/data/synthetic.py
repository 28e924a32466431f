"""A deterministic synthetic translation task: learnable, structured, and hard enough that model
capacity shows (the demo's default corpus when no data is given).

Two invented languages over a random lexicon (seeded). The source is English-like (SVO, plural
``-s``, verb ``-s`` for a singular subject); the target is German-like and needs:
- **agreement**: articles and adjective endings depend on the noun's (arbitrary, memorised)
  gender, its number and its case (subject nominative, object accusative, after a preposition
  dative); verb endings agree with the subject's number; per-noun plural suffixes, dative
  plural ``-n``;
- **reordering**: a sentence-initial time adverb moves the verb before the subject (verb
  second); subordinate clauses put the verb last, after object and prepositional phrase;
- **compounds**: a source noun-noun pair becomes ONE capitalised target word, whose gender and
  plural come from its head (the second noun);
- **a copy channel**: personal names (a vocabulary of invented names, the same in both languages)
  and numerals (``3 dogs`` -> ``3 Hunde``, strong adjective endings) are copied, not translated.
The lexicon is small enough (whole words are single subword pieces in a 1000-piece vocabulary,
except compounds) for a small Transformer to learn the task in minutes on 2 CPU cores, and the
grammar is rich enough that a larger one learns it better: the demo's 4-minute SuperTransformer
tells its Archs apart by BLEU (see BENCHMARKS.md, "The demo's language").
Everything is a function of ``seed``; the splits use independent sentence streams.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hat_ray.data.corpus import ParallelCorpus

SIZES = {"train": 20000, "valid": 500, "test": 500}
_SPLIT_STREAM = {"train": 1, "valid": 2, "test": 3}
_SRC_C, _SRC_V = "bdfgklmnprstvz", "aeiou"
_TGT_C, _TGT_V = "bdfghklmnprstwz", "aeiouäöü"
# Articles by (determiner kind, case) -> [masc, fem, neut, plural]
_ARTICLE = {
    ("def", "nom"): ["der", "die", "das", "die"], ("def", "acc"): ["den", "die", "das", "die"],
    ("def", "dat"): ["dem", "der", "dem", "den"],
    ("indef", "nom"): ["ein", "eine", "ein", ""], ("indef", "acc"): ["einen", "eine", "ein", ""],
    ("indef", "dat"): ["einem", "einer", "einem", ""],
    ("some", "nom"): ["", "", "", "einige"], ("some", "acc"): ["", "", "", "einige"],
    ("some", "dat"): ["", "", "", "einigen"],
    ("num", "nom"): ["", "", "", ""], ("num", "acc"): ["", "", "", ""], ("num", "dat"): ["", "", "", ""],
}
_ADJ_END = {
    ("def", "nom"): ["e", "e", "e", "en"], ("def", "acc"): ["en", "e", "e", "en"],
    ("def", "dat"): ["en", "en", "en", "en"],
    ("indef", "nom"): ["er", "e", "es", ""], ("indef", "acc"): ["en", "e", "es", ""],
    ("indef", "dat"): ["en", "en", "en", ""],
    ("some", "nom"): ["", "", "", "e"], ("some", "acc"): ["", "", "", "e"], ("some", "dat"): ["", "", "", "en"],
    ("num", "nom"): ["", "", "", "e"], ("num", "acc"): ["", "", "", "e"], ("num", "dat"): ["", "", "", "en"],
}
_SRC_DET = {"def": "the", "indef": "a", "some": "some"}
_NAME_C, _NAME_V = "bdklmnrstvz", "aeio"


@dataclass(frozen=True)
class Lexicon:
    nouns: list[tuple[str, str, int, str]]  # (source, target stem, gender 0-2, plural suffix)
    adjectives: list[tuple[str, str]]
    verbs: list[tuple[str, str]]  # (source stem, target stem)
    times: list[tuple[str, str]]
    preps: list[tuple[str, str]]
    conjs: list[tuple[str, str]]
    names: list[str]  # copied verbatim: the same word in both languages


def make_lexicon(seed: int = 0, nouns: int = 48, adjectives: int = 12, verbs: int = 16, names: int = 60) -> Lexicon:
    """Random but fixed word lists (distinct words, 2-3 syllables)."""
    rng = _rng(seed, 0)
    used: set[str] = set()

    def word(cons: str, vowels: str, lo: int = 2, hi: int = 3) -> str:
        while True:  # bounded in practice: the word space (>10^5) dwarfs the lexicon
            w = "".join(cons[_below(rng, len(cons))] + vowels[_below(rng, len(vowels))]
                        for _ in range(lo + _below(rng, hi - lo + 1)))
            if w not in used:
                used.add(w)
                return w

    def pairs(n: int, lo: int = 2, hi: int = 3) -> list[tuple[str, str]]:
        return [(word(_SRC_C, _SRC_V, lo, hi), word(_TGT_C, _TGT_V, lo, hi)) for _ in range(n)]

    plurals = ("en", "e", "er", "s", "")
    noun_list = [(s, t, _below(rng, 3), plurals[_below(rng, len(plurals))]) for s, t in pairs(nouns)]
    name_list = [word(_NAME_C, _NAME_V, 2, 3).capitalize() for _ in range(names)]
    return Lexicon(noun_list, pairs(adjectives), pairs(verbs), pairs(8), pairs(4, 1, 2), pairs(3, 1, 2), name_list)


class _Generator:
    """Builds one (source, target) sentence pair at a time from a Lexicon and a Generator."""

    def __init__(self, lex: Lexicon, rng: random.Random) -> None:
        self.lex, self.rng = lex, rng

    def pick(self, items: list) -> tuple:
        return items[_below(self.rng, len(items))]

    def noun_phrase(self, case: str) -> tuple[list[str], list[str], bool]:
        """-> (source words, target words, plural)."""
        rng, lex = self.rng, self.lex
        if rng.random() < 0.15:  # a name: copied, no article, singular
            name = self.pick(lex.names)
            return [name], [name], False
        plural = bool(rng.random() < 0.35)
        if plural:
            r = rng.random()
            det = "def" if r < 0.5 else "some" if r < 0.75 else "num"
        else:
            det = "def" if rng.random() < 0.6 else "indef"
        head = self.pick(lex.nouns)
        src_noun, tgt_noun = [head[0]], head[1].capitalize()
        if rng.random() < 0.25:  # compound: modifier + head -> one target word, head's gender
            mod = self.pick(lex.nouns)
            src_noun, tgt_noun = [mod[0], head[0]], mod[1].capitalize() + head[1]
        slot = 3 if plural else head[2]
        if plural:
            src_noun[-1] += "s"
            tgt_noun += head[3]
            if case == "dat" and not tgt_noun.endswith(("n", "s")):
                tgt_noun += "n"
        r = rng.random()
        adjs = [self.pick(lex.adjectives) for _ in range(0 if r < 0.5 else 1 if r < 0.85 else 2)]
        number = str(2 + _below(rng, 18)) if det == "num" else ""
        src = [number or _SRC_DET[det], *(a[0] for a in adjs), *src_noun]
        article = number or _ARTICLE[(det, case)][slot]
        tgt = ([article] if article else []) + [a[1] + _ADJ_END[(det, case)][slot] for a in adjs] + [tgt_noun]
        return src, tgt, plural

    def clause(self) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
        """Parts of a clause: (source words in order, target subject, verb, object, prep. phrase)."""
        s_src, s_tgt, plural = self.noun_phrase("nom")
        o_src, o_tgt, _ = self.noun_phrase("acc")
        verb = self.pick(self.lex.verbs)
        v_src = verb[0] if plural else verb[0] + "s"
        v_tgt = verb[1] + ("en" if plural else "t")
        pp_src, pp_tgt = [], []
        if self.rng.random() < 0.4:
            prep = self.pick(self.lex.preps)
            n_src, n_tgt, _ = self.noun_phrase("dat")
            pp_src, pp_tgt = [prep[0], *n_src], [prep[1], *n_tgt]
        return [*s_src, v_src, *o_src, *pp_src], s_tgt, [v_tgt], o_tgt, pp_tgt

    def sentence(self) -> tuple[str, str]:
        src, subj, verb, obj, pp = self.clause()
        if self.rng.random() < 0.3:  # time adverb: verb-second inversion in the target
            time = self.pick(self.lex.times)
            src, tgt = [time[0], *src], [time[1], *verb, *subj, *obj, *pp]
        else:
            tgt = [*subj, *verb, *obj, *pp]
        if self.rng.random() < 0.35:  # subordinate clause: verb-final in the target
            conj = self.pick(self.lex.conjs)
            s2, subj2, verb2, obj2, pp2 = self.clause()
            src, tgt = [*src, ",", conj[0], *s2], [*tgt, ",", conj[1], *subj2, *obj2, *pp2, *verb2]
        return _render(src), _render(tgt)


def _rng(seed: int, stream: int) -> random.Random:
    # random.Random: ~10x cheaper per draw than numpy's Generator. Only random() is used, whose
    # sequence for a given integer seed Python guarantees across versions.
    return random.Random(seed * 1009 + stream)


def _below(rng: random.Random, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def _render(words: list[str]) -> str:
    text = " ".join(words).replace(" ,", ",") + "."
    return text[0].upper() + text[1:]


def generate_pairs(n: int, seed: int = 0, stream: int = 1, lexicon: Lexicon | None = None) -> list[tuple[str, str]]:
    """``n`` sentence pairs; the same (seed, stream) always gives the same pairs."""
    gen = _Generator(lexicon or make_lexicon(seed), _rng(seed, stream))
    return [gen.sentence() for _ in range(n)]


def synthetic_split(split: str, seed: int = 0, size: int | None = None) -> ParallelCorpus:
    """One split of the synthetic corpus (sizes: :data:`SIZES`), languages ``src`` -> ``tgt``."""
    n = SIZES[split] if size is None else size
    pairs = generate_pairs(n, seed, _SPLIT_STREAM[split])
    return ParallelCorpus(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), "src", "tgt",
                          f"synthetic:{split} (seed {seed})")
