"""A search's output folder, owned by the search: its state (new, started, finished), its typed
result, and the rules for resuming it.

A resumed search replays the evaluation log, so it may only continue a run whose scores mean
the same thing. :func:`search_fingerprint` records what the scores and the candidates depend on
(the SuperTransformer's weights, the validation batches and what made them, the constraints with
each predictor's contents, the engine and its settings); :meth:`SearchFolder.check_resume`
refuses a resume where any of it changed, naming what, and accepts everything else (scorers,
threads, GPU scoring, the cluster address, ``measure_top``), which only changes how fast the
same scores arrive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat_ray.arch import Arch
from hat_ray.errors import DataError, HatRayError
from hat_ray.io import atomic_write, content_hash
from hat_ray.search.evolution import EngineOptions

RESULT, LOG, CONFIG = "result.json", "evaluations.jsonl", "search_config.json"
CONFIG_VERSION = 2


@dataclass(frozen=True)
class Candidate:
    """One searched Arch as a search result reports it."""

    arch: Arch
    valid_loss: float
    predicted_ms: dict[str, float]
    params: int
    flops: int
    measured_ms: dict[str, float]

    @property
    def key(self) -> str:
        return self.arch.key()

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Candidate:
        return cls(Arch.from_dict(entry["arch"]), float(entry["valid_loss"]), dict(entry.get("predicted_ms") or {}),
                   int(entry["params"]), int(entry["flops"]), dict(entry.get("measured_ms") or {}))


class SearchResult(Mapping[str, Any]):
    """``result.json`` of a finished search: typed views (:attr:`best`, :attr:`pareto`,
    :attr:`evaluations`) over the JSON record, which stays readable as a mapping."""

    def __init__(self, data: Mapping[str, Any], path: Path | None = None) -> None:
        self._data = dict(data)
        self.path = path

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"SearchResult({self.path or ''}, {self.evaluations} evaluations, best {self.best.valid_loss:.4f})"

    @property
    def best(self) -> Candidate:
        return Candidate.from_json(self._data["best"])

    @property
    def pareto(self) -> list[Candidate]:
        return [Candidate.from_json(c) for c in self._data.get("pareto", [])]

    @property
    def evaluations(self) -> int:
        return int(self._data["evaluations"])

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))

    @classmethod
    def load(cls, out: str | Path) -> SearchResult:
        return SearchFolder(out).load()


class SearchFolder:
    """The output folder of one search (see hat_ray.search.run for what it holds)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)

    @property
    def log_path(self) -> Path:
        return self.out / LOG

    @property
    def finished(self) -> bool:
        """A result was written (the search ran to its end)."""
        return (self.out / RESULT).is_file()

    @property
    def started(self) -> bool:
        """Evaluations were logged: a new search here must resume it."""
        return (self.out / LOG).is_file()

    def check(self, resume: bool) -> None:
        """The cheap --out / --resume checks, for callers to run before minutes of loading."""
        if self.out.exists() and not self.out.is_dir():
            raise HatRayError(f"--out {self.out} is a file, not a folder: choose a folder for the search's outputs")
        if resume and not (self.out / CONFIG).exists():
            raise HatRayError(f"nothing to resume in {self.out} (no {CONFIG}): run without --resume")
        if not resume and self.started:
            raise HatRayError(f"{self.out} already holds a search: pass --resume to continue it or choose a new --out")

    def load(self) -> SearchResult:
        path = self.out / RESULT
        if not path.is_file():
            state = "was interrupted: resume it" if self.started else "holds no search"
            raise DataError(f"{self.out} {state} (no {RESULT})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            Candidate.from_json(data["best"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path} is not a search result ({exc}); run the search again in a new folder") from None
        return SearchResult(data, path)

    def write_result(self, data: Mapping[str, Any]) -> SearchResult:
        text = json.dumps(data, indent=2)
        atomic_write(self.out / RESULT, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return SearchResult(data, self.out / RESULT)

    def check_resume(self, fingerprint: dict[str, Any], resume: bool) -> None:
        """On --resume: refuse (one line naming every change) when what the saved search's scores
        depend on changed; record the new resources. A new search saves its fingerprint."""
        path = self.out / CONFIG
        if resume:
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise DataError(f"{path} is unreadable ({exc}); start the search again in a new --out") from None
            changes = resume_changes(saved, fingerprint)
            if changes:
                raise HatRayError(f"cannot resume the search in {self.out}: {'; '.join(changes)}; resume with the "
                                  "same inputs (scorers, threads and the cluster may change) or use a new --out")
            if saved.get("version") != CONFIG_VERSION:
                return  # an older record: keep it as written
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(fingerprint, indent=2)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def weights_hash(weights: Mapping[str, Any]) -> str:
    """Hash of packed SuperTransformer weights (hat_ray.search.scorer.pack_weights)."""
    meta = json.dumps({"config": weights["config"], "aliases": weights.get("aliases", {})}, sort_keys=True)
    return content_hash(meta, sorted(weights["arrays"].items()))


def batches_hash(batches: Sequence[Mapping[str, Any]]) -> str:
    """Hash of packed validation batches (hat_ray.search.scorer.pack_batches)."""
    return content_hash("batches", [(f"{i}.{k}", b[k]) for i, b in enumerate(batches) for k in sorted(b)])


def predictor_hash(predictor: Any) -> str:
    """The predictor's content hash (``fingerprint()``), else its class name (e.g. a FLOPs proxy)."""
    fingerprint = getattr(predictor, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else f"{type(predictor).__module__}.{type(predictor).__qualname__}"


def search_fingerprint(weights: Mapping[str, Any], batches: Sequence[Mapping[str, Any]], constraints: Any,
                       algorithm: str, seed: int, budget: int | None, engine: Mapping[str, Any],
                       run_info: Mapping[str, Any] | None = None, resources: Mapping[str, Any] | None = None
                       ) -> dict[str, Any]:
    """What a search's scores and candidates depend on (compared on resume), plus the resources
    it ran with (recorded, never compared). ``run_info`` may name how the validation batches were
    made (``data``, ``valid_sentences``, ``max_tokens``) so a refusal can say which changed."""
    info = run_info or {}
    return {
        "version": CONFIG_VERSION,
        "engine": {"algorithm": algorithm, "seed": seed, "budget": budget, "options": dict(engine)},
        "supernet": {"weights_sha256": weights_hash(weights), "path": info.get("supernet")},
        "validation": {"data": info.get("data"), "valid_sentences": info.get("valid_sentences"),
                       "max_tokens": info.get("max_tokens"), "batches": len(batches),
                       "batches_sha256": batches_hash(batches)},
        "constraints": [{"device": c.device, "limit_ms": c.limit_ms if math.isfinite(c.limit_ms) else None,
                         "margin": c.margin, "predictor_sha256": predictor_hash(c.predictor)}
                        for c in constraints.items],
        "resources": dict(resources or {}),
    }


_NAMES = {"data": "--data", "valid_sentences": "--valid-sentences", "max_tokens": "--max-tokens (the scoring batch)"}


def resume_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between a saved fingerprint and the current one, in words ([] = resumable)."""
    if saved.get("version") != CONFIG_VERSION:
        return _legacy_changes(saved, current)
    out: list[str] = []
    old, new = saved["engine"], current["engine"]
    for key in ("algorithm", "seed", "budget"):
        if old.get(key) != new.get(key):
            out.append(f"--{key} was {old.get(key)}, now {new.get(key)}")
    for key in sorted(set(old.get("options", {})) | set(new.get("options", {}))):
        added = EngineOptions.ADDED.get(key)  # an option saved fingerprints may predate
        a, b = old.get("options", {}).get(key, added), new.get("options", {}).get(key, added)
        if a != b:
            out.append(f"--{key.replace('_', '-')} was {a}, now {b}")
    if saved["supernet"]["weights_sha256"] != current["supernet"]["weights_sha256"]:
        out.append(f"the SuperTransformer's weights differ (was {saved['supernet'].get('path')}, now "
                   f"{current['supernet'].get('path')})")
    old, new = saved["validation"], current["validation"]
    named = [f"{_NAMES[k]} was {old.get(k)}, now {new.get(k)}" for k in _NAMES if old.get(k) != new.get(k)]
    out += named
    if not named and old["batches_sha256"] != new["batches_sha256"]:
        out.append("the validation batches differ (the validation data changed on disk)")
    old_c = {c["device"]: c for c in saved["constraints"]}
    new_c = {c["device"]: c for c in current["constraints"]}
    if set(old_c) != set(new_c):
        out.append(f"the constrained devices were {sorted(old_c) or 'none'}, now {sorted(new_c) or 'none'}")
    for device in sorted(set(old_c) & set(new_c)):
        a, b = old_c[device], new_c[device]
        if a["limit_ms"] != b["limit_ms"]:
            out.append(f"the {device} limit was {a['limit_ms']} ms, now {b['limit_ms']} ms")
        if a["margin"] != b["margin"]:
            out.append(f"--margin on {device} was {a['margin']}, now {b['margin']}")
        if a["predictor_sha256"] != b["predictor_sha256"]:
            out.append(f"the predictor for {device} changed (its contents differ)")
    return out


def _legacy_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """A search_config.json of hat-ray before resume fingerprints: its options (less the
    resources), supernet path and devices are compared."""
    options = dict(saved.get("options", {}))
    for key in ("scorers", "threads_per_scorer", "scorer_cpus", "use_gpu"):
        options.pop(key, None)
    now = current["engine"]
    mine = {"algorithm": now["algorithm"], "budget": now["budget"], "seed": now["seed"],
            "engine_kwargs": now["options"]}
    out = [f"{k} was {options[k]}, now {mine.get(k)}" for k in sorted(options) if options[k] != mine.get(k)]
    if "supernet" in saved and saved["supernet"] != current["supernet"].get("path"):
        out.append(f"--supernet was {saved['supernet']}, now {current['supernet'].get('path')}")
    devices = [[c["device"], c["limit_ms"]] for c in current["constraints"]]
    if "devices" in saved and saved["devices"] != devices:
        out.append(f"the devices and limits were {saved['devices']}, now {devices}")
    return out
