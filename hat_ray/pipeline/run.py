"""`hat-ray pipeline`: run an experiment's stages in order, each cached in the run folder.

``OUT/pipeline.json`` records every finished stage with a fingerprint of the settings it ran
with (its own section of the experiment plus the fingerprint of the stage before it). A re-run
skips finished stages whose fingerprint still matches and resumes the first unfinished one (the
stages resume their own partial work). When the experiment file changed what an already
finished stage depends on, the run stops and says which stage to re-run (``--from STAGE``), so
hours of training are never thrown away silently. ``--from STAGE`` deletes that stage's outputs
and everything after it, then runs from there.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat_ray.errors import ConfigError, HatRayError
from hat_ray.io import atomic_write
from hat_ray.pipeline.config import Experiment, fingerprint
from hat_ray.pipeline.report import write_report
from hat_ray.pipeline.stages import evaluate, latency, predictor, search, supernet, train
from hat_ray.pipeline.stages.context import Context
from hat_ray.search.evolution import EngineOptions
from hat_ray.space import SearchSpace

log = logging.getLogger(__name__)
STATE = "pipeline.json"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    settings: Callable[[Experiment], Any]  # the part of the experiment this stage depends on
    outputs: tuple[str, ...]  # paths under OUT removed by --from
    run: Callable[[Context, dict[str, Any]], Any]  # (context, summaries of the stages before) -> summary


def _devices(exp: Experiment, with_limits: bool) -> list[dict[str, Any]]:
    return [{"profile": d.profile, "latency_data": d.latency_data, **({"limits_ms": list(d.limits_ms)}
                                                                      if with_limits else {})} for d in exp.devices]


def _without_new_defaults(section: dict[str, Any], **added: Any) -> dict[str, Any]:
    """``section`` without settings added in a later version while they keep their default, so that
    runs from before keep their fingerprints (and are not re-run after an upgrade)."""
    return {k: v for k, v in section.items() if not (k in added and v == added[k])}


STAGES = (
    Stage("supernet", "train the SuperTransformer",
          lambda e: {"space": e.space, "data": e.section("data") | {"valid_sentences": None, "test_sentences": None,
                                                                     "test_split": None},
                     "supernet": _without_new_defaults(e.section("supernet"), largest_prob=0.0, largest_first=0,
                                                       largest_first_minutes=0.0)},
          ("supernet",), supernet.run),
    Stage("latency", "measure latency on the devices",
          lambda e: {"devices": _devices(e, False), "latency": {"archs": e.latency.archs, "seed": e.latency.seed}},
          ("latency",), latency.run),
    Stage("predictor", "fit the latency predictors", lambda e: {"latency": e.section("latency")}, (),
          predictor.run),
    Stage("search", "search under each latency limit",
          lambda e: {"devices": _devices(e, True),
                     "search": _without_new_defaults(e.section("search"), gpu=False, cpus_per_scorer=1,
                                                                     scorer_slots=1, **EngineOptions.ADDED),
                     "valid_sentences": e.data.valid_sentences}, ("search",), search.run),
    Stage("train", "train the winners and the baselines",
          lambda e: {"train": _without_new_defaults(e.section("train"), workers=1, cpus_per_worker=1, gpu=False)},
          ("train",), train.run),
    Stage("evaluate", "measure latency and BLEU of the trained models",
          lambda e: {"evaluate": _without_new_defaults(e.section("evaluate"), export=[]),
                     "test": [e.data.test_split, e.data.test_sentences]},
          ("evaluate", "export"), evaluate.run),
    Stage("report", "write the report", lambda e: {}, ("report.md", "pareto.png", "latency_pred_vs_measured.png",
                                                       "bleu_vs_latency.png"), write_report),
)
NAMES = tuple(s.name for s in STAGES)


def fingerprints(exp: Experiment) -> dict[str, str]:
    """Chained fingerprints: a stage's depends on its own settings and on every stage before it."""
    out, previous = {}, ""
    for stage in STAGES:
        previous = fingerprint({"stage": stage.name, "settings": stage.settings(exp), "before": previous})
        out[stage.name] = previous
    return out


class PipelineState:
    """``OUT/pipeline.json``: finished stages (fingerprint, time, summary), written atomically."""

    def __init__(self, out: Path) -> None:
        self.path = out / STATE
        self.data: dict[str, Any] = {"stages": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
                assert isinstance(self.data.get("stages"), dict)
            except (json.JSONDecodeError, AssertionError, UnicodeDecodeError):
                raise HatRayError(f"{self.path} is corrupted (not the pipeline's JSON state): move it away to "
                                  "re-run every stage, or restore it") from None

    def finished(self, name: str) -> dict[str, Any] | None:
        return self.data["stages"].get(name)

    def record(self, name: str, fp: str, seconds: float, summary: Any) -> None:
        self.data["stages"][name] = {"fingerprint": fp, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "seconds": round(seconds, 1), "summary": summary}
        self._save()

    def forget(self, names: list[str]) -> None:
        for name in names:
            self.data["stages"].pop(name, None)
        self._save()

    def _save(self) -> None:
        text = json.dumps(self.data, indent=2, default=str)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))


def status(exp: Experiment, out: Path) -> list[dict[str, Any]]:
    """Per stage: done / stale (settings changed since it ran) / pending."""
    state, fps = PipelineState(out), fingerprints(exp)
    rows = []
    for stage in STAGES:
        rec = state.finished(stage.name)
        what = "pending" if rec is None else ("done" if rec["fingerprint"] == fps[stage.name] else "stale")
        rows.append({"stage": stage.name, "status": what, "finished": rec and rec["finished"],
                     "seconds": rec and rec["seconds"]})
    return rows


def run_pipeline(exp: Experiment, out: str | Path, start: str | None = None,
                 say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment in ``out``; returns the summary of every stage."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if start is not None and start not in NAMES:
        raise ConfigError("command line", [f"--from {start!r} is not a stage; stages: {', '.join(NAMES)}"])
    out = Path(out).resolve()
    space = SearchSpace.load(exp.space)
    out.mkdir(parents=True, exist_ok=True)
    state, fps = PipelineState(out), fingerprints(exp)
    _check_stale(state, fps, start)
    if start is not None:
        _clear_from(out, state, start, say)
    ctx = Context(exp, out, space, say)
    ctx.profiles  # noqa: B018  (every device profile must resolve before any stage runs)
    _write_experiment(out, exp)
    summaries: dict[str, Any] = {}
    try:
        for i, stage in enumerate(STAGES, 1):
            rec = state.finished(stage.name)
            if rec is not None and rec["fingerprint"] == fps[stage.name]:
                say(f"[{i}/{len(STAGES)}] {stage.name}: cached (finished {rec['finished']}, {rec['seconds']:.0f} s)")
                summaries[stage.name] = rec["summary"]
                continue
            say(f"[{i}/{len(STAGES)}] {stage.name}: {stage.title}")
            t0 = time.time()
            summaries[stage.name] = stage.run(ctx, summaries)
            state.record(stage.name, fps[stage.name], time.time() - t0, summaries[stage.name])
            say(f"[{i}/{len(STAGES)}] {stage.name}: done in {time.time() - t0:.0f} s")
    finally:
        ctx.disconnect()
    return summaries


def _check_stale(state: PipelineState, fps: dict[str, str], start: str | None) -> None:
    """Refuse to continue past a finished stage whose settings changed (unless --from covers it)."""
    for name in NAMES:
        if start is not None and NAMES.index(name) >= NAMES.index(start):
            return
        rec = state.finished(name)
        if rec is not None and rec["fingerprint"] != fps[name]:
            raise HatRayError(f"the experiment's settings for stage {name!r} (or a stage before it) changed since it "
                              f"ran in {state.path.parent}: re-run it with --from {name}, or use a new output folder")


def _clear_from(out: Path, state: PipelineState, start: str, say: Callable[[str], None]) -> None:
    later = list(NAMES[NAMES.index(start):])
    if not state.path.is_file():  # not a pipeline's folder: its files are not ours to delete
        present = [rel for stage in STAGES if stage.name in later for rel in stage.outputs if (out / rel).exists()]
        if present:
            raise HatRayError(f"--from {start}: {out} has no pipeline.json, so it is not a hat-ray pipeline's output "
                              f"folder, yet it holds {', '.join(present)}: refusing to delete them; choose another "
                              "output folder (--out)")
    for stage in STAGES:
        if stage.name not in later:
            continue
        for rel in stage.outputs:
            path = out / rel
            if path.is_dir():
                shutil.rmtree(path)
                say(f"--from {start}: removed {path}")
            elif path.exists():
                path.unlink()
        if stage.name == "predictor":
            for pred in (out / "latency").glob("*.npz"):
                pred.unlink()
    state.forget(later)


def _write_experiment(out: Path, exp: Experiment) -> None:
    import yaml

    text = yaml.safe_dump(exp.to_dict(), sort_keys=False)
    atomic_write(out / "experiment.yaml", lambda tmp: Path(tmp).write_text(text))
