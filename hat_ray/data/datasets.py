"""Named datasets (multi30k, wmt14_en_de, iwslt14_de_en), a plain folder of files, or the
synthetic corpus, resolved to :class:`~hat_ray.data.corpus.ParallelCorpus` splits.

``load_split(data, split, data_dir=None)``:
- ``data`` a dataset name and ``data_dir`` given: read that folder, which already holds the
  dataset's files under their usual names (e.g. ``val.en.gz`` for Multi30k); nothing is downloaded.
- ``data`` a dataset name alone: the cache folder ``$HAT_RAY_DATA`` (default
  ``~/.cache/hat-ray/datasets``) ``/<name>``; on first use the files are downloaded from their
  public sources and prepared there (:mod:`hat_ray.data.download`).
- ``data`` a folder: ``{split}.{lang}[.gz]`` files (``train``/``valid``/``test``; ``val``, ``dev``
  accepted); languages from ``src_lang``/``tgt_lang`` or, when the folder holds exactly two,
  ``.src``/``.tgt`` or the pair the caller names.
- ``data == "synthetic"``: the deterministic synthetic corpus (:mod:`hat_ray.data.synthetic`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hat_ray.data.corpus import ParallelCorpus, read_parallel
from hat_ray.errors import DataError

SPLITS = ("train", "valid", "test")
# (file stem, Moses-escaped): the stems tried for a split, in order; files are STEM.LANG[.gz].
Stem = tuple[str, bool]
_GENERIC: dict[str, tuple[Stem, ...]] = {
    "train": (("train", False),),
    "valid": (("valid", False), ("val", False), ("dev", False)),
    "test": (("test", False),),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: translation direction and the usual file names of each split."""

    name: str
    src_lang: str
    tgt_lang: str
    stems: dict[str, tuple[Stem, ...]]
    # Pre-segmented (BPE'd, ``@@ `` continuation) files for fairseq-dictionary checkpoints.
    segmented: dict[str, tuple[str, ...]] = field(default_factory=dict)
    note: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "multi30k": DatasetSpec(
        "multi30k", "en", "de",
        {"train": (("train", False),), "valid": (("val", False), ("valid", False)),
         "test": (("test_2016_flickr", False), ("test", False)),
         # further test sets (``--split test2017_flickr``): reported beside ``test`` (test2016), tuned on by nobody
         "test2017_flickr": (("test_2017_flickr", False),), "test2017_mscoco": (("test_2017_mscoco", False),),
         "test2018_flickr": (("test_2018_flickr", False),)},
        note="Multi30k task 1 En-De raw (Elliott et al. 2016); non-commercial research use",
    ),
    "wmt14_en_de": DatasetSpec(
        "wmt14_en_de", "en", "de",
        {"train": (("train", False), ("train.tok", True)),
         "valid": (("valid", False), ("newstest2013", False), ("newstest2013.tok", True)),
         "test": (("test", False), ("newstest2014", False), ("newstest2014.filtered.tok", True))},
        note="WMT14 En-De (Europarl v7 + CommonCrawl + News Commentary v12; newstest2013 / 2014)",
    ),
    "iwslt14_de_en": DatasetSpec(
        "iwslt14_de_en", "de", "en",
        {"train": (("train", False), ("train.tok.lc", True)),
         "valid": (("valid", False), ("valid.tok.lc", True)),
         "test": (("test", False), ("test.tok.lc", True))},
        segmented={"train": ("train.bpe10k",), "valid": ("valid.bpe10k",), "test": ("test.bpe10k",)},
        note="IWSLT14 De-En TED talks (CC BY-NC-ND 4.0)",
    ),
}
NAMES = (*DATASETS, "synthetic")


def splits_of(data: str) -> tuple[str, ...]:
    """The split names ``data`` has: train / valid / test, and a named dataset's further test sets
    (Multi30k: test2017_flickr, test2017_mscoco, test2018_flickr)."""
    spec = DATASETS.get(data)
    return SPLITS + tuple(s for s in spec.stems if s not in SPLITS) if spec else SPLITS


def cache_root() -> Path:
    """``$HAT_RAY_DATA``, else ``$XDG_CACHE_HOME/hat-ray/datasets`` (``~/.cache/...``)."""
    env = os.environ.get("HAT_RAY_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hat-ray" / "datasets"


def dataset_dir(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding ``name``'s files: ``data_dir`` if given (must exist), else the cache
    folder, downloaded and prepared first when it is not complete."""
    spec = _spec(name)
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"--data-dir {folder} does not exist (expected a folder with the {name} files)")
        return folder
    from hat_ray.data.download import ensure_cached  # network code only when it is needed

    return ensure_cached(spec.name, cache_root(), download=download)


def load_split(data: str, split: str, data_dir: str | Path | None = None, *, src_lang: str | None = None,
               tgt_lang: str | None = None, segmented: bool = False, download: bool = True,
               synthetic_seed: int = 0) -> ParallelCorpus:
    """One split (``train``/``valid``/``test``) of ``data`` (see module docstring).

    ``segmented``: prefer pre-BPE'd files (for checkpoints imported with fairseq dictionaries).
    """
    if split not in splits_of(data):
        raise DataError(f"unknown split {split!r}: use one of {', '.join(splits_of(data))}")
    if data == "synthetic":
        from hat_ray.data.synthetic import synthetic_split

        if data_dir is not None:
            raise DataError("--data-dir is for named datasets; the synthetic corpus is generated")
        return synthetic_split(split, seed=synthetic_seed)
    if data in DATASETS:
        spec = DATASETS[data]
        folder = dataset_dir(data, data_dir, download)
        stems = spec.stems[split]
        if segmented and split in spec.segmented:
            stems = tuple((s, False) for s in spec.segmented[split]) + stems
        return _read_split(folder, split, stems, src_lang or spec.src_lang, tgt_lang or spec.tgt_lang)
    folder = Path(data)
    if data_dir is not None:
        raise DataError(f"--data-dir is for named datasets ({', '.join(DATASETS)}); --data {data} is not one")
    if not folder.is_dir():
        raise DataError(f"--data {data}: not a dataset name ({', '.join(NAMES)}) and not a folder")
    src, tgt = folder_languages(folder, src_lang, tgt_lang)
    return _read_split(folder, split, _GENERIC[split], src, tgt)


def folder_languages(folder: Path, src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    """Source and target language suffixes of a plain folder's ``train.*`` / ``valid.*`` files."""
    if src_lang and tgt_lang:
        return src_lang, tgt_lang
    langs = sorted({m.group(2) for p in folder.iterdir()
                    if (m := re.fullmatch(r"(train|valid|val|dev|test)\.([A-Za-z_-]+)(\.gz)?", p.name))})
    if set(langs) == {"src", "tgt"}:
        return "src", "tgt"
    if len(langs) == 2 and (src_lang in langs or tgt_lang in langs):
        other = [x for x in langs if x != (src_lang or tgt_lang)][0]
        return (src_lang, other) if src_lang else (other, tgt_lang)  # type: ignore[return-value]
    found = ", ".join(langs) or "none"
    raise DataError(f"{folder}: cannot tell the translation direction (languages found: {found}); "
                    "name it with --src-lang and --tgt-lang, or use *.src / *.tgt files")


def _read_split(folder: Path, split: str, stems: tuple[Stem, ...], src: str, tgt: str) -> ParallelCorpus:
    sp, tp, escaped = _find_split(folder, split, stems, src, tgt)
    return read_parallel(sp, tp, src, tgt, unescape=escaped)


def _find_split(folder: Path, split: str, stems: tuple[Stem, ...], src: str, tgt: str) -> tuple[Path, Path, bool]:
    """The (source, target) files of ``split`` and whether they are Moses-escaped; DataError when absent."""
    tried = []
    for stem, escaped in stems:
        for suffix in ("", ".gz"):
            sp, tp = folder / f"{stem}.{src}{suffix}", folder / f"{stem}.{tgt}{suffix}"
            tried.append(f"{sp.name}/{tp.name}")
            if sp.is_file() and tp.is_file():
                return sp, tp, escaped
            if sp.is_file() != tp.is_file():
                missing = tp if sp.is_file() else sp
                raise DataError(f"{folder}: {split} split has {(sp if sp.is_file() else tp).name} "
                                f"but not {missing.name}; add it (line i translating line i)")
    raise DataError(f"{folder}: no {split} split (looked for {', '.join(tried)}); add those files or choose "
                    "another --split")


def problems(data: str, data_dir: str | None = None, *, download: bool = True, src_lang: str | None = None,
             tgt_lang: str | None = None, splits: dict[str, str] | None = None, prefix: str = "") -> list[str]:
    """Why :func:`load_split` would fail on these settings, found without reading a corpus (the
    pipeline checks its ``data:`` section with it before any stage runs). ``splits`` maps each
    split to be read to the key that asked for it (default: every split, key ``name``); messages
    start with ``prefix`` + the key (``name``, ``data_dir``, ``src_lang``, ...)."""
    splits = splits if splits is not None else {s: "name" for s in SPLITS}
    out = [f"{prefix}{key}: unknown split {split!r}; use one of {', '.join(splits_of(data))}"
           for split, key in splits.items() if split not in splits_of(data)]
    for key, lang in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
        if lang is not None and not _LANGUAGE.fullmatch(lang):
            out.append(f"{prefix}{key}: {lang!r} is not a language suffix like 'en' (letters, '_' or '-'; "
                       "null: the dataset's own or the folder's)")
    folder: Path | None = None
    if data == "synthetic":
        if data_dir is not None:
            out.append(f"{prefix}data_dir: the synthetic corpus is generated, it reads no folder: drop data_dir")
    elif data in DATASETS:
        from hat_ray.data.download import MARKER

        if data_dir is not None:
            folder = Path(data_dir)
            if not folder.is_dir():
                out.append(f"{prefix}data_dir: {folder} is not a folder (expected one holding the {data} files)")
                folder = None
        elif (cache_root() / data / MARKER).is_file():
            folder = cache_root() / data
        elif (cache_root() / data).exists():
            out.append(f"{prefix}name: the cache folder {cache_root() / data} is incomplete (no {MARKER}): delete "
                       "it to download again, or give data_dir (a folder with the files)")
        elif not download:
            out.append(f"{prefix}download: {data} is not in the cache {cache_root()} and download is false: "
                       "allow the download, or give data_dir (a folder with its files)")
    elif Path(data).is_dir():
        folder = Path(data)
        if data_dir is not None:
            out.append(f"{prefix}data_dir: only for the named datasets ({', '.join(DATASETS)}); name {data} is "
                       "a folder already: drop data_dir")
    else:
        out.append(f"{prefix}name: {data!r} is not a dataset name ({', '.join(NAMES)}) and not a folder")
    if folder is not None and not out:
        try:
            if data in DATASETS:
                spec = DATASETS[data]
                src, tgt, stems = src_lang or spec.src_lang, tgt_lang or spec.tgt_lang, spec.stems
            else:
                src, tgt = folder_languages(folder, src_lang, tgt_lang)
                stems = _GENERIC
        except DataError as exc:
            return [f"{prefix}name: {exc}"]
        for split, key in splits.items():
            try:
                _find_split(folder, split, stems[split], src, tgt)
            except DataError as exc:
                out.append(f"{prefix}{key}: {exc}")
    return out


_LANGUAGE = re.compile(r"[A-Za-z_-]+")  # a language suffix of corpus files (train.LANG)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(NAMES)} or a folder")
    return DATASETS[name]
