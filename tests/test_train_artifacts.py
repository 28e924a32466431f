"""Outputs of a Ray Train worker that cannot see the driver's disk: the staging folder mirrored
through the sink actor leaves the driver's folder exactly as a local run leaves its own (fresh
run, --resume, checkpoint rotation, checkpoint_prev.pt, a damaged checkpoint_last.pt), and never
a half-written file. The worker side runs in this process, told that the driver is elsewhere;
tests/test_train_private_disk.py runs the real thing on two nodes."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_space import tiny_space_dict, write_tiny_run_inputs

from hat_ray.errors import HatRayError
from hat_ray.space import SearchSpace
from hat_ray.train.artifacts import (
    MARKER_PREFIX,
    PUSH_SUFFIX,
    ArtifactSink,
    OutputMirror,
    SinkInfo,
    scan,
    start_sink,
    stop_sink,
)
from hat_ray.train.config import TrainConfig
from hat_ray.train.ray_train import _summary
from hat_ray.train.run import DataOptions, make_spec
from hat_ray.train.spec import build_trainer
from hat_ray.train.state import DAMAGED, LAST, PREV, SUMMARY


def _spec(root: Path, out: Path, max_updates: int, resume: bool = False):
    cfg = TrainConfig(max_updates=max_updates, max_tokens=300, warmup_updates=2, validate_every=2, save_every=1,
                      keep_last=2, log_every=1, progress=False, tensorboard=True)
    return make_spec(SearchSpace.from_dict(tiny_space_dict()), cfg, DataOptions(str(root / "data"), vocab_size=300),
                     out, resume=resume)


def _local(root: Path, out: Path, max_updates: int, resume: bool = False) -> None:
    build_trainer(_spec(root, out, max_updates, resume)).train()


def _mirrored(root: Path, out: Path, max_updates: int, info: SinkInfo, resume: bool = False) -> Path:
    """Train as a worker on another node would (staging folder + pushes); returns the staging
    folder (removed by then)."""
    spec = _spec(root, out, max_updates, resume)
    mirror = OutputMirror(info, spec.out, rank=0)
    assert not mirror.direct and mirror.folder != out
    if resume:  # pulled: what the trainer reads back; stand-ins for the rest
        assert (mirror.folder / LAST).stat().st_size == (out / LAST).stat().st_size
        assert (mirror.folder / "train_log.jsonl").read_bytes() == (out / "train_log.jsonl").read_bytes()
        assert all((mirror.folder / p.name).stat().st_size == 0 for p in out.glob("checkpoint_u*.pt"))
    build_trainer(replace(spec, out=str(mirror.folder)), on_save=mirror.push).train()
    mirror.push()
    mirror.close(pushed=True)
    assert not mirror.folder.exists()
    return mirror.folder


def _outputs(folder: Path) -> list[str]:
    return sorted(rel for rel in scan(folder) if not rel.startswith("tb/"))


def _same_outputs(ref: Path, got: Path) -> None:
    assert _outputs(got) == _outputs(ref)
    for name in (LAST, PREV):
        a, b = torch.load(ref / name, weights_only=True), torch.load(got / name, weights_only=True)
        assert a["progress"]["update"] == b["progress"]["update"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    for log in ("train_log.jsonl", "valid_log.jsonl"):
        rows = [[(r["update"], r.get("loss"), r.get("valid_loss_largest")) for r in map(json.loads, (f / log).open())]
                for f in (ref, got)]
        assert rows[0] == rows[1], log
    assert json.loads((got / SUMMARY).read_text())["update"] == json.loads((ref / SUMMARY).read_text())["update"]
    # (event files are named by the second they were opened: how many a quick test leaves varies)
    assert [p for p in (got / "tb").iterdir() if p.stat().st_size > 0]
    assert not [n for _, _, names in os.walk(got) for n in names if n.endswith(".tmp")]


def test_a_staged_worker_leaves_the_drivers_folder_as_a_local_run(ray_local, tmp_path, caplog):
    caplog.set_level("INFO", logger="hat_ray.train.artifacts")
    root = write_tiny_run_inputs(tmp_path, sizes=(200, 20, 20))
    ref, out = tmp_path / "local", tmp_path / "driver"
    real = start_sink(out)
    info = SinkInfo(real.sink, node_id="another-node", marker=f"{MARKER_PREFIX}not-visible-there")
    try:
        assert (out / real.marker).is_file()
        _local(root, ref, 4)
        _mirrored(root, out, 4, info)
        assert _outputs(out) == _outputs(ref) == sorted([LAST, PREV, "checkpoint_u0000003.pt", "checkpoint_u0000004.pt",
                                                         SUMMARY, "train_log.jsonl", "valid_log.jsonl"])
        # --resume: pulls checkpoint_last + logs, rotates the snapshots, links checkpoint_prev.pt
        _local(root, ref, 6, resume=True)
        _mirrored(root, out, 6, info, resume=True)
        _same_outputs(ref, out)
        assert "linked 1, deleted 1" in caplog.text  # checkpoint_prev.pt linked on the driver, not copied
        assert sorted(p.name for p in out.glob("checkpoint_u*.pt")) == ["checkpoint_u0000005.pt", "checkpoint_u0000006.pt"]
        # a damaged checkpoint_last.pt: both resume from checkpoint_prev.pt and keep the damaged file aside
        for folder in (ref, out):
            (folder / LAST).write_bytes(b"not a checkpoint")
        _local(root, ref, 7, resume=True)
        _mirrored(root, out, 7, info, resume=True)
        _same_outputs(ref, out)
        assert (out / DAMAGED).read_bytes() == b"not a checkpoint"
    finally:
        stop_sink(real)
    assert not list(out.glob(f"{MARKER_PREFIX}*"))


def test_sink_writes_atomically_and_stays_inside_its_folder(ray_local, tmp_path):
    import ray

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / f".x.abc{PUSH_SUFFIX}").write_text("left by a killed push")
    sink = ArtifactSink.remote(str(out))
    try:
        assert (out / ray.get(sink.marker_name.remote())).is_file()
        assert not (out / "sub" / f".x.abc{PUSH_SUFFIX}").exists()  # stale transfers removed at start
        for bad in ("../escape", "/etc/passwd", f"sub/.y.z{PUSH_SUFFIX}"):
            with pytest.raises(ray.exceptions.RayTaskError):
                ray.get(sink.begin.remote(bad))
        token = ray.get(sink.begin.remote("sub/a.bin"))
        ray.get(sink.write.remote(token, 0, b"12345"))
        with pytest.raises(ray.exceptions.RayTaskError):  # out of order
            ray.get(sink.write.remote(token, 9, b"x"))
        with pytest.raises(ray.exceptions.RayTaskError):  # short: nothing lands
            ray.get(sink.commit.remote(token, 6))
        assert not (out / "sub" / "a.bin").exists()
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
        for name, text in (("a", "A"), ("b", "B")):
            (out / name).write_text(text)
        ray.get(sink.link.remote([("a", "b"), ("b", "c")]))  # chains see the files as they were
        assert [(out / n).read_text() for n in "abc"] == ["A", "A", "B"]
        assert ray.get(sink.listing.remote()) == {"a": 1, "b": 1, "c": 1}
        ray.get(sink.delete.remote(["c"]))
        assert not (out / "c").exists()
    finally:
        ray.kill(sink)


def test_a_summary_missing_or_left_from_before_on_the_driver_is_an_error(tmp_path):
    info = SinkInfo(None, node_id="abcdef0123", marker="m")
    with pytest.raises(HatRayError, match="did not reach the driver"):
        _summary(tmp_path / SUMMARY, None, info)
    (tmp_path / SUMMARY).write_text('{"update": 3}')
    st = (tmp_path / SUMMARY).stat()
    with pytest.raises(HatRayError, match="summary.json of this run"):
        _summary(tmp_path / SUMMARY, (st.st_ino, st.st_mtime_ns), info)
    assert _summary(tmp_path / SUMMARY, None, info) == {"update": 3}


def test_a_workers_hat_ray_error_is_raised_as_itself():
    from hat_ray.errors import DataError
    from hat_ray.train.ray_train import _user_error

    class Failed(Exception):
        def __init__(self, failures):
            self.worker_failures = failures

    assert str(_user_error(Failed({1: DataError("rank 1"), 0: DataError("rank 0")}))) == "rank 0"
    other = Failed({0: RuntimeError("a bug")})
    assert _user_error(other) is other
