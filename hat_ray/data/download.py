"""Download and prepare the named datasets into the cache (the only network code in hat-ray).

Cache layout (``cache_root()/<name>``)::

    <name>/                 files under their usual names, e.g. train.en.gz, val.de.gz (multi30k)
    <name>/.complete.json   written last: the sources used; its absence means "not ready"
    .<name>.partial/        staging while downloading; renamed to <name>/ when complete, so a
                            half-finished download is never mistaken for a dataset, and a re-run
                            reuses the archives already fetched there.

Sources (public):
- multi30k: github.com/multi30k/dataset, ``data/task1/raw`` at a pinned commit, sha256-checked.
- wmt14_en_de: statmt.org, the archives fairseq's ``prepare-wmt14en2de.sh`` reads (Europarl v7,
  CommonCrawl, News Commentary v12, dev = newstest2013, test-full = newstest2014). Kept RAW
  (no Moses tokenisation: hat-ray's subword model reads raw text); training pairs with an empty
  side or over 250 words are dropped (fairseq's clean-corpus-n length limit).
- iwslt14_de_en: fairseq's mirror of the IWSLT'14 De-En archive; tags stripped as
  ``prepare-iwslt14.sh`` does, valid = every 23rd training line, test = dev2010 + tedx.dev2012 +
  tst2010-2012. Kept raw and cased (fairseq's files are Moses-tokenised and lowercased: pass
  those with ``--data-dir`` to reproduce HAT's IWSLT numbers).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hat_ray.errors import DataError
from hat_ray.io import file_sha256

log = logging.getLogger(__name__)

MARKER = ".complete.json"
MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
_M30K = f"https://raw.githubusercontent.com/multi30k/dataset/{MULTI30K_COMMIT}/data/task1/raw/"
MAX_TRAIN_WORDS = 250


@dataclass(frozen=True)
class Source:
    url: str
    file: str  # name in the staging folder
    sha256: str | None = None


SOURCES: dict[str, list[Source]] = {
    "multi30k": [
        Source(_M30K + "train.en.gz", "train.en.gz", "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
        Source(_M30K + "train.de.gz", "train.de.gz", "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
        Source(_M30K + "val.en.gz", "val.en.gz", "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
        Source(_M30K + "val.de.gz", "val.de.gz", "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
        Source(_M30K + "test_2016_flickr.en.gz", "test_2016_flickr.en.gz",
               "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
        Source(_M30K + "test_2016_flickr.de.gz", "test_2016_flickr.de.gz",
               "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),

        # the test sets nobody tunes on (issue 20): reported next to test2016
        Source(_M30K + "test_2017_flickr.en.gz", "test_2017_flickr.en.gz",
               "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074"),
        Source(_M30K + "test_2017_flickr.de.gz", "test_2017_flickr.de.gz",
               "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee"),
        Source(_M30K + "test_2017_mscoco.en.gz", "test_2017_mscoco.en.gz",
               "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58"),
        Source(_M30K + "test_2017_mscoco.de.gz", "test_2017_mscoco.de.gz",
               "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338"),
        Source(_M30K + "test_2018_flickr.en.gz", "test_2018_flickr.en.gz",
               "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d"),
        Source(_M30K + "test_2018_flickr.de.gz", "test_2018_flickr.de.gz",
               "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608"),
    ],
    "wmt14_en_de": [
        Source("http://statmt.org/wmt13/training-parallel-europarl-v7.tgz", "europarl.tgz"),
        Source("http://statmt.org/wmt13/training-parallel-commoncrawl.tgz", "commoncrawl.tgz"),
        Source("http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz", "nc-v12.tgz"),
        Source("http://data.statmt.org/wmt17/translation-task/dev.tgz", "dev.tgz"),
        Source("http://statmt.org/wmt14/test-full.tgz", "test-full.tgz"),
    ],
    "iwslt14_de_en": [Source("http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz", "de-en.tgz")],
}


def ensure_cached(name: str, root: Path, download: bool = True) -> Path:
    """``root/name`` ready to read: downloaded and prepared on first use (see module docstring)."""
    folder = root / name
    if (folder / MARKER).is_file():
        return folder
    if folder.exists():
        raise DataError(f"cache folder {folder} exists but is incomplete (no {MARKER}); delete it to "
                        "download again, or point --data-dir at a folder with the files")
    if not download:
        raise DataError(f"{name} is not in the cache {root}; download it or pass --data-dir DIR")
    staging = root / f".{name}.partial"
    (staging / "downloads").mkdir(parents=True, exist_ok=True)
    log.info("preparing %s in %s (first use: downloading from its public sources)", name, staging)
    fetched = [download_file(s.url, staging / "downloads" / s.file, s.sha256) for s in SOURCES[name]]
    PREPARE[name](fetched, staging)
    shutil.rmtree(staging / "downloads")
    (staging / MARKER).write_text(json.dumps({"name": name, "sources": [s.url for s in SOURCES[name]]}))
    os.replace(staging, folder)
    return folder


def download_file(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` (via ``dest.part``, renamed when complete and verified).
    An existing verified ``dest`` is kept (a re-run after an interruption)."""
    if not url.startswith(("https://", "http://", "file://")):
        raise DataError(f"refusing to download {url}: only http(s) and file URLs")
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256):
        return dest
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"cannot download {url} ({reason}); without network, put the dataset's files in a "
                        "folder and pass --data-dir DIR") from None
    if sha256 is not None and file_sha256(part) != sha256:
        part.unlink()
        raise DataError(f"{url}: downloaded file does not have the expected sha256 {sha256[:12]}...")
    os.replace(part, dest)
    return dest


# ---- preparation of each dataset (staging folder -> files under their usual names) ----
def _prepare_multi30k(fetched: list[Path], out: Path) -> None:
    for path in fetched:
        shutil.copyfile(path, out / path.name)


def _tar_lines(archive: Path, basename: str) -> Iterator[str]:
    """Lines of the member whose file name is ``basename`` (read in place: nothing extracted)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = next((m for m in tar if m.isfile() and Path(m.name).name == basename), None)
            if member is None:
                raise DataError(f"{archive}: no member named {basename}")
            fh = tar.extractfile(member)
            assert fh is not None
            for raw in fh:
                yield raw.decode("utf-8", errors="replace").strip()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive} is not a readable tar archive ({exc})") from None


def _clean_pairs(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    for s, t in pairs:
        if s and t and len(s.split()) <= MAX_TRAIN_WORDS and len(t.split()) <= MAX_TRAIN_WORDS:
            yield s, t


def _write_pairs(out: Path, stem: str, pairs: Iterable[tuple[str, str]], langs: tuple[str, str]) -> None:
    """Write aligned ``stem.<src>.gz`` / ``stem.<tgt>.gz`` (two passes would need the data twice)."""
    src_path, tgt_path = out / f"{stem}.{langs[0]}.gz", out / f"{stem}.{langs[1]}.gz"
    with gzip.open(src_path, "wt", encoding="utf-8", compresslevel=3) as fs, \
            gzip.open(tgt_path, "wt", encoding="utf-8", compresslevel=3) as ft:
        for s, t in pairs:
            fs.write(s + "\n")
            ft.write(t + "\n")


def _zip_aligned(a: Iterable[str], b: Iterable[str], what: str) -> Iterator[tuple[str, str]]:
    try:
        yield from zip(a, b, strict=True)
    except ValueError:
        raise DataError(f"{what}: source and target have different line counts") from None


_SEG = re.compile(r"<seg[^>]*>\s*(.*?)\s*</seg>")


def _segments(lines: Iterable[str]) -> Iterator[str]:
    """Text of each ``<seg id=..>text</seg>`` (SGM / IWSLT XML)."""
    for line in lines:
        m = _SEG.search(line)
        if m:
            yield m.group(1).replace("\u2019", "'")


def _prepare_wmt14(fetched: list[Path], out: Path) -> None:
    europarl, commoncrawl, nc, dev, test = fetched
    parts = [(europarl, "europarl-v7.de-en"), (commoncrawl, "commoncrawl.de-en"), (nc, "news-commentary-v12.de-en")]

    def train() -> Iterator[tuple[str, str]]:
        for archive, stem in parts:
            yield from _clean_pairs(_zip_aligned(_tar_lines(archive, f"{stem}.en"),
                                                 _tar_lines(archive, f"{stem}.de"), f"{archive}:{stem}"))

    _write_pairs(out, "train", train(), ("en", "de"))
    _write_pairs(out, "valid", _zip_aligned(_tar_lines(dev, "newstest2013.en"), _tar_lines(dev, "newstest2013.de"),
                                            "newstest2013"), ("en", "de"))
    src = _segments(_tar_lines(test, "newstest2014-deen-src.en.sgm"))
    ref = _segments(_tar_lines(test, "newstest2014-deen-ref.de.sgm"))
    _write_pairs(out, "test", _zip_aligned(src, ref, "newstest2014"), ("en", "de"))


_IWSLT_DROP = re.compile(r"<(url|talkid|keywords|speaker|reviewer|translator|doc|/doc)")
_IWSLT_TAGS = re.compile(r"</?(title|description)>")
IWSLT_TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
                   "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012")


def _iwslt_train(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if not _IWSLT_DROP.search(line):
            yield _IWSLT_TAGS.sub("", line).strip()


def _prepare_iwslt14(fetched: list[Path], out: Path) -> None:
    (archive,) = fetched
    pairs = list(_zip_aligned(_iwslt_train(_tar_lines(archive, "train.tags.de-en.de")),
                              _iwslt_train(_tar_lines(archive, "train.tags.de-en.en")), "train.tags.de-en"))
    pairs = [p for p in pairs if p[0] and p[1]]
    _write_pairs(out, "valid", (p for i, p in enumerate(pairs, 1) if i % 23 == 0), ("de", "en"))
    _write_pairs(out, "train", (p for i, p in enumerate(pairs, 1) if i % 23 != 0), ("de", "en"))

    def test() -> Iterator[tuple[str, str]]:
        for name in IWSLT_TEST_SETS:
            de = _segments(_tar_lines(archive, f"{name}.de-en.de.xml"))
            en = _segments(_tar_lines(archive, f"{name}.de-en.en.xml"))
            yield from _zip_aligned(de, en, name)

    _write_pairs(out, "test", test(), ("de", "en"))


PREPARE: dict[str, Callable[[list[Path], Path], None]] = {
    "multi30k": _prepare_multi30k,
    "wmt14_en_de": _prepare_wmt14,
    "iwslt14_de_en": _prepare_iwslt14,
}
