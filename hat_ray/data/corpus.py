"""Parallel raw-text corpora: one sentence per line, line i of the source aligned with line i of
the target; plain or gzip files, UTF-8.

Every reading problem is a :class:`~hat_ray.errors.DataError` naming the file (and the line when
there is one): missing or unreadable files, broken gzip streams, empty files, bytes that are not
UTF-8, NUL bytes (a binary file), absurdly long lines (a file that is not sentence-per-line) and
source/target files with different line counts.

Lines are split on ``"\\n"`` only (``str.splitlines`` would also split on U+2028, U+0085, ...,
which occur inside real sentences and would silently break the alignment).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hat_ray.errors import DataError

log = logging.getLogger(__name__)

MAX_LINE_CHARS = 10_000  # a "sentence" longer than this means the file is not sentence-per-line
_MOSES_ESCAPES = (("&apos;", "'"), ("&quot;", '"'), ("&lt;", "<"), ("&gt;", ">"), ("&#91;", "["),
                  ("&#93;", "]"), ("&#124;", "|"), ("&amp;", "&"))


@dataclass(frozen=True)
class ParallelCorpus:
    """Aligned sentence pairs of one split (``len(src) == len(tgt)``), raw text."""

    src: tuple[str, ...]
    tgt: tuple[str, ...]
    src_lang: str
    tgt_lang: str
    source: str = ""  # where it came from (paths or a generator), for messages

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise DataError(f"{self.source or 'corpus'}: {len(self.src)} source but {len(self.tgt)} target sentences")

    def __len__(self) -> int:
        return len(self.src)

    def without_empty(self) -> ParallelCorpus:
        """Drop pairs where either side is empty (training only: evaluation keeps alignment)."""
        keep = [i for i, (s, t) in enumerate(zip(self.src, self.tgt)) if s and t]
        if len(keep) < len(self):
            log.info("%s: dropped %d pairs with an empty side", self.source, len(self) - len(keep))
        return self.subset(keep)

    def subset(self, indices: Sequence[int]) -> ParallelCorpus:
        return ParallelCorpus(tuple(self.src[i] for i in indices), tuple(self.tgt[i] for i in indices),
                              self.src_lang, self.tgt_lang, self.source)


def read_bytes(path: str | Path) -> bytes:
    """Whole file contents, gunzipped when the file is gzip (by magic number, not name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        if path.suffix == ".gz":
            raise DataError(f"corpus file {path} is named .gz but is not gzip data")
        return raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"corpus file {path} is a corrupted or truncated gzip file ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None


def read_lines(path: str | Path, max_chars: int = MAX_LINE_CHARS, unescape: bool = False) -> list[str]:
    """The lines of a sentence-per-line file, stripped of surrounding whitespace.

    A final newline does not make an extra line. ``unescape`` undoes Moses' XML escaping
    (``&apos;`` -> ``'``), for Moses-tokenised corpora. Raises DataError (file and line) for the
    problems listed in the module docstring.
    """
    path = Path(path)
    data = read_bytes(path)
    if not data.strip():
        raise DataError(f"corpus file {path} is empty; give a file with one sentence per line")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}, line {line}: NUL byte (a binary file, not text)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path}, line {line}, byte {col}: not UTF-8 ({data[exc.start:exc.start + 4]!r}); "
                        "convert the file to UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if len(line) > max_chars:
            raise DataError(f"{path}, line {number}: {len(line)} characters (limit {max_chars}); "
                            "is this a sentence-per-line file?")
    lines = [line.strip() for line in lines]
    if unescape:
        lines = [moses_unescape(line) for line in lines]
    return lines


def moses_unescape(line: str) -> str:
    """Undo Moses tokenizer escaping (``&apos;``, ``&quot;``, ``&amp;``, ...)."""
    if "&" not in line:
        return line
    for escaped, char in _MOSES_ESCAPES:
        line = line.replace(escaped, char)
    return line


def read_parallel(src_path: str | Path, tgt_path: str | Path, src_lang: str, tgt_lang: str,
                  unescape: bool = False, max_chars: int = MAX_LINE_CHARS) -> ParallelCorpus:
    """Read and validate an aligned file pair; DataError when the line counts differ."""
    src = read_lines(src_path, max_chars, unescape)
    tgt = read_lines(tgt_path, max_chars, unescape)
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: line i of one "
                        "must be the translation of line i of the other, so give both the same number of lines")
    return ParallelCorpus(tuple(src), tuple(tgt), src_lang, tgt_lang, f"{src_path} + {tgt_path}")
