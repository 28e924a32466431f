"""A training run's files land in the DRIVER's output folder, whether or not the cluster's nodes
share a disk (the Ray edge of train/).

Ray Train workers write ``spec.out``, a path on the driver's machine. A worker that can write
that folder itself - it runs on the driver's node, or sees the same folder through a shared file
system (it finds the marker file the driver's sink created there) - writes it directly:
:attr:`OutputMirror.folder` is ``spec.out``. Any other worker trains in a node-local staging
folder (under ``TMPDIR``) that mirrors the driver's:

- at start it pulls the files the trainer reads back (``checkpoint_last.pt``, the ``*.jsonl``
  logs; a rank other than 0 only its own ``trace/rankR.jsonl``) and empty stand-ins for rank 0's
  other files, so that ``--resume``, the hard link to ``checkpoint_prev.pt``, the damaged-file
  fallback, the rotation of ``checkpoint_u*.pt`` and the log truncation behave as on one machine;
- after every checkpoint save (:class:`~hat_ray.train.trainer.Trainer`'s ``on_save``) and at the
  end it pushes what changed to an :class:`ArtifactSink` actor pinned to the driver's node, in
  an order that keeps the driver's folder resumable at every step: first the files that are
  hard links / renames of files the driver already has (``checkpoint_prev.pt`` is the previous
  ``checkpoint_last.pt``: linked there, not copied), then new or changed files (in 8 MiB chunks,
  a few in flight, into a temp file renamed over the target once complete: never a half-written
  file, never a whole checkpoint in memory; ``summary.json`` last), then deletions.
A file is "changed" when its (device, inode, size, mtime) differs from the last push.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hat_ray.errors import OutputError
from hat_ray.io import atomic_write
from hat_ray.train.state import LAST, SUMMARY

log = logging.getLogger(__name__)

CHUNK = 8 * 2**20  # bytes per transfer call
WINDOW = 4  # transfer calls in flight (bounds the object-store memory of one file's transfer)
MARKER_PREFIX = ".hat-ray-sink-"  # visible-folder marker: a worker that sees it shares the disk
PUSH_SUFFIX = ".hat-ray-push.tmp"
LEGACY_RAY_DIR = "ray"  # Ray Train's storage of earlier hat-ray versions: not a training output

Identity = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)


def _is_internal(name: str) -> bool:
    """Markers and temp files (the sink's, or an atomic write's left by a killed process)."""
    return name.startswith(MARKER_PREFIX) or (name.startswith(".") and name.endswith(".tmp"))


def scan(folder: Path) -> dict[str, Identity]:
    """Every regular file under ``folder`` (relative POSIX path -> identity), internals left out."""
    found: dict[str, Identity] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath) == folder and LEGACY_RAY_DIR in dirnames:
            dirnames.remove(LEGACY_RAY_DIR)
        for name in filenames:
            if _is_internal(name):
                continue
            path = Path(dirpath, name)
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(folder).as_posix()] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return found


@ray.remote(num_cpus=0)
class ArtifactSink:
    """Reads and atomically writes files under the driver's output folder (runs on its node)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for dirpath, _, filenames in os.walk(self.root):  # left by a driver killed mid-push
            for name in filenames:
                if name.endswith(PUSH_SUFFIX) or (dirpath == root and name.startswith(MARKER_PREFIX)):
                    Path(dirpath, name).unlink(missing_ok=True)
        self.marker = f"{MARKER_PREFIX}{uuid.uuid4().hex}"
        (self.root / self.marker).touch()
        self.pending: dict[str, tuple[BinaryIO, Path, Path]] = {}  # token -> (file, temp, target)

    def _path(self, rel: str) -> Path:
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts or _is_internal(parts[-1]):
            raise ValueError(f"not a relative path inside the output folder: {rel!r}")
        return self.root / rel

    def marker_name(self) -> str:
        return self.marker

    def listing(self) -> dict[str, int]:
        """Relative path -> size of every output file."""
        return {rel: ident[2] for rel, ident in scan(self.root).items()}

    def read(self, rel: str, offset: int, size: int) -> bytes:
        with open(self._path(rel), "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def begin(self, rel: str) -> str:
        """Open a temp file next to ``rel``; returns the token of the transfer."""
        target = self._path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PUSH_SUFFIX, dir=target.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600: the usual permissions, as atomic_write
        token = uuid.uuid4().hex
        self.pending[token] = (os.fdopen(fd, "wb"), Path(tmp), target)
        return token

    def write(self, token: str, offset: int, data: bytes) -> None:
        fh = self.pending[token][0]
        if fh.tell() != offset:
            raise ValueError(f"chunk at {offset} arrived at {fh.tell()} for {self.pending[token][2]}")
        fh.write(data)

    def commit(self, token: str, size: int) -> None:
        """fsync, check the size and rename over the target."""
        fh, tmp, target = self.pending.pop(token)
        try:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            if tmp.stat().st_size != size:
                raise ValueError(f"{target}: received {tmp.stat().st_size} bytes, expected {size}")
            os.replace(tmp, target)
        finally:
            fh.close()
            tmp.unlink(missing_ok=True)

    def abort(self, token: str) -> None:
        if token in self.pending:
            fh, tmp, _ = self.pending.pop(token)
            fh.close()
            tmp.unlink(missing_ok=True)

    def link(self, pairs: list[tuple[str, str]]) -> None:
        """Each ``(src, dst)``: ``dst`` becomes the file ``src`` is now (a hard link, or a copy
        where the file system has none). All sources are taken before any target changes, so
        chains (a -> b, b -> c) see the old files."""
        staged = []
        try:
            for src, dst in pairs:
                target = self._path(dst)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{PUSH_SUFFIX}")
                try:
                    os.link(self._path(src), tmp)
                except OSError:
                    shutil.copyfile(self._path(src), tmp)
                staged.append((tmp, target))
            for tmp, target in staged:
                os.replace(tmp, target)
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)

    def delete(self, rels: list[str]) -> None:
        for rel in rels:
            self._path(rel).unlink(missing_ok=True)

    def close(self) -> None:
        """Drop unfinished transfers and the marker."""
        for token in list(self.pending):
            self.abort(token)
        (self.root / self.marker).unlink(missing_ok=True)


@dataclass(frozen=True)
class SinkInfo:
    """What the workers need to reach the driver's folder (travels in the train loop config)."""

    sink: Any  # ActorHandle[ArtifactSink]
    node_id: str  # the driver's node
    marker: str  # file name the sink created in the driver's folder


def start_sink(out: Path) -> SinkInfo:
    """An :class:`ArtifactSink` for ``out`` on this (the driver's) node."""
    node = ray.get_runtime_context().get_node_id()
    here = NodeAffinitySchedulingStrategy(node, soft=False)
    sink = ArtifactSink.options(num_cpus=0, scheduling_strategy=here).remote(str(out))
    try:
        return SinkInfo(sink, node, ray.get(sink.marker_name.remote()))
    except ray.exceptions.RayActorError as exc:  # its __init__ failed: the folder cannot be made
        reason = str(exc).strip().splitlines()[-1][:200]
        raise OutputError(f"cannot write the output folder {out}: {reason}; choose a writable --out") from None


def stop_sink(info: SinkInfo) -> None:
    try:
        ray.get(info.sink.close.remote(), timeout=60)
    except (ray.exceptions.RayError, TimeoutError) as exc:  # best effort: it holds no state we need
        log.warning("closing the output sink failed: %s", exc)
    ray.kill(info.sink)


class OutputMirror:
    """Where a worker writes its outputs (:attr:`folder`), kept in step with the driver's
    ``out`` (see the module docstring). :meth:`push` is a no-op when ``folder`` is ``out``."""

    def __init__(self, info: SinkInfo, out: str, rank: int) -> None:
        self.info, self.out, self.rank = info, Path(out), rank
        here = ray.get_runtime_context().get_node_id()
        self.direct = here == info.node_id or (self.out / info.marker).is_file()
        self.synced: dict[str, Identity] = {}
        if self.direct:
            self.folder = self.out
            return
        self.folder = Path(tempfile.mkdtemp(prefix=f"hat-ray-out-rank{rank}-"))
        log.info("rank %d: %s is not visible on node %s; staging outputs in %s and copying them to the driver",
                 rank, self.out, here[:8], self.folder)
        self._pull()

    def _pull_mode(self, rel: str) -> str | None:
        """"content", "empty" (a stand-in) or None (not pulled) for a file of the driver's."""
        if rel.startswith("trace/"):
            return "content" if rel == f"trace/rank{self.rank}.jsonl" else None
        if self.rank != 0:
            return None
        return "content" if rel == LAST or rel.endswith(".jsonl") else "empty"

    def _pull(self) -> None:
        listing = ray.get(self.info.sink.listing.remote())
        for rel, size in sorted(listing.items()):
            mode = self._pull_mode(rel)
            if mode is None:
                continue
            dest = self.folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if mode == "empty":
                dest.touch()
                continue

            def fetch(tmp: str, rel: str = rel, size: int = size) -> None:
                with open(tmp, "wb") as fh:
                    for chunk in self._chunks(rel, size):
                        fh.write(chunk)

            atomic_write(dest, fetch)
        self.synced = scan(self.folder)

    def _chunks(self, rel: str, size: int) -> Iterator[bytes]:
        offsets = iter(range(0, size, CHUNK))
        pending: deque[Any] = deque()
        got = 0
        while True:
            while len(pending) < WINDOW and (offset := next(offsets, None)) is not None:
                pending.append(self.info.sink.read.remote(rel, offset, CHUNK))
            if not pending:
                break
            chunk = ray.get(pending.popleft())
            got += len(chunk)
            yield chunk
        if got != size:
            raise OSError(f"{rel}: got {got} of {size} bytes from the driver's {self.out}")

    def push(self) -> None:
        """Bring the driver's folder up to date with :attr:`folder` (links, files, deletions)."""
        if self.direct:
            return
        now = scan(self.folder)
        by_identity = {ident: rel for rel, ident in self.synced.items()}
        links, sends = [], []
        for rel, ident in sorted(now.items()):
            if self.synced.get(rel) == ident:
                continue
            src = by_identity.get(ident)
            if src is not None and src != rel:
                links.append((src, rel))
            else:
                sends.append(rel)
        deletes = [rel for rel in self.synced if rel not in now]
        if links:
            ray.get(self.info.sink.link.remote(links))
        for rel in sorted(sends, key=lambda r: r == SUMMARY):  # the summary marks the end: last
            if not self._send(rel):
                now.pop(rel)
        if deletes:
            ray.get(self.info.sink.delete.remote(deletes))
        self.synced = now  # identities from before reading: a file changed meanwhile goes again next time
        if links or sends or deletes:
            log.info("rank %d: pushed %d file(s), linked %d, deleted %d on the driver", self.rank, len(sends),
                     len(links), len(deletes))

    def _send(self, rel: str) -> bool:
        """Copy one file to the driver (False when it vanished meanwhile)."""
        sink = self.info.sink
        try:
            fh = open(self.folder / rel, "rb")  # noqa: SIM115 - a with block would hide the vanished case
        except FileNotFoundError:
            return False
        with fh:
            token = ray.get(sink.begin.remote(rel))
            try:
                pending: deque[Any] = deque()
                offset = 0
                while chunk := fh.read(CHUNK):
                    pending.append(sink.write.remote(token, offset, chunk))
                    offset += len(chunk)
                    if len(pending) >= WINDOW:
                        ray.get(pending.popleft())
                ray.get(list(pending))
                ray.get(sink.commit.remote(token, offset))
            except BaseException:
                sink.abort.remote(token)  # the driver keeps its previous file
                raise
        return True

    def close(self, pushed: bool) -> None:
        """Remove the staging folder once everything was pushed; otherwise keep it (it may hold
        the only copy of the last outputs) and say where it is."""
        if self.direct:
            return
        if pushed:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            log.warning("rank %d: outputs not fully copied to the driver's %s are kept in %s on this node",
                        self.rank, self.out, self.folder)
