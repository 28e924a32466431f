"""The pipeline's stages. Each reads the outputs of the stages before it from the run folder,
resumes its own partial work (training checkpoints, the latency journal, the search's
evaluation log, one file per trained / evaluated model) and returns a JSON summary.

Run folder layout::

    supernet/                 hat-ray train supernet output (checkpoint_last.pt, tb/, ...)
    latency/measured.parquet  rows measured on the cluster's devices
    latency/DEVICE.parquet    rows imported from a device's latency_data file
    latency/DEVICE.npz        the fitted predictor of each device
    search/TARGET/            one search per device and limit (TARGET = DEVICE-LIMIT)
    train/MODEL/              the search winners and baselines, trained (hat-ray train subnet)
    evaluate/MODEL.json       BLEU, validation loss, measured and predicted latency per model
    report.md, *.png          the final report
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hat_ray.arch import Arch
from hat_ray.checkpoint import atomic_write
from hat_ray.errors import DataError, DeviceError
from hat_ray.latency.profile import DeviceProfile
from hat_ray.pipeline.config import Experiment, parse_limit
from hat_ray.space import SearchSpace

log = logging.getLogger(__name__)
DONE = "done.json"


@dataclass
class Context:
    """What every stage gets: the experiment, the run folder, and a lazy Ray connection."""

    exp: Experiment
    out: Path
    space: SearchSpace
    say: Callable[[str], None] = print
    _ray_started: bool = field(default=False, repr=False)
    _profiles: dict[str, DeviceProfile] = field(default_factory=dict, repr=False)

    def profile(self, name: str) -> DeviceProfile:
        if name not in self._profiles:
            self._profiles[name] = DeviceProfile.load(name)
        return self._profiles[name]

    @property
    def profiles(self) -> list[DeviceProfile]:
        return [self.profile(d.profile) for d in self.exp.devices]

    def connect(self) -> None:
        """Join the experiment's cluster (or start a local Ray declaring the local devices)."""
        import ray

        if ray.is_initialized():
            return
        from hat_ray.cluster import connect

        local = [p for p in self.profiles if p.ray.local] if not self.exp.address else []
        self._ray_started = connect(self.exp.address, local)

    def disconnect(self) -> None:
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    # ---- paths shared by several stages ----
    @property
    def supernet_ckpt(self) -> Path:
        from hat_ray.train.state import LAST

        return self.out / "supernet" / LAST

    def predictor_path(self, device: str) -> Path:
        return self.out / "latency" / f"{device}.npz"

    def latency_data(self, device: str) -> Path:
        entry = next(d for d in self.exp.devices if self.profile(d.profile).name == device)
        return self.out / "latency" / (f"{device}.parquet" if entry.latency_data else "measured.parquet")

    def vocab(self) -> int:
        """Output vocabulary rows of the trained SuperTransformer (what latency is measured with)."""
        from hat_ray.checkpoint import load_checkpoint

        return int(load_checkpoint(self.supernet_ckpt)["model_config"]["tgt_vocab"])


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _data_options(exp: Experiment) -> Any:
    from hat_ray.train.run import DataOptions

    d = exp.data
    return DataOptions(d.name, d.data_dir, d.src_lang, d.tgt_lang, d.vocab_size, d.download)


# ---------------------------------------------------------------- supernet
def stage_supernet(ctx: Context) -> dict[str, Any]:
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.run import make_spec, run

    s = ctx.exp.supernet
    cfg = TrainConfig(mode="supernet", max_updates=s.max_updates, max_minutes=s.max_minutes, max_tokens=s.max_tokens,
                      lr=s.lr, warmup_updates=s.warmup_updates, schedule=s.schedule, dropout=s.dropout, seed=s.seed,
                      sandwich=s.sandwich, largest_prob=s.largest_prob, largest_first=s.largest_first,
                      validate_every=s.validate_every, save_every=s.save_every)
    out = ctx.supernet_ckpt.parent
    spec = make_spec(ctx.space, cfg, _data_options(ctx.exp), out, resume=ctx.supernet_ckpt.exists())
    if s.workers > 1:
        ctx.connect()
    return _with_threads(s.threads if s.workers == 1 else None,
                         lambda: run(spec, s.workers, s.cpus_per_worker, s.gpu))


def _with_threads(threads: int | None, fn: Callable[[], Any]) -> Any:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- latency
def stage_latency(ctx: Context) -> dict[str, Any]:
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.probe import collect

    (ctx.out / "latency").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for entry in ctx.exp.devices:
        if entry.latency_data:
            name = ctx.profile(entry.profile).name
            data = _import_latency(entry.latency_data, name, ctx.space)
            data.save(ctx.latency_data(name))
            summary[name] = {"source": entry.latency_data, "rows": len(data)}
    measured = [ctx.profile(d.profile) for d in ctx.exp.devices if not d.latency_data]
    if measured:
        rng = np.random.default_rng(ctx.exp.latency.seed)
        latency_space = ctx.space.latency_space()
        archs = [latency_space.sample(rng) for _ in range(ctx.exp.latency.archs)]
        ctx.connect()
        bar = _Bar("latency", len(archs) * len(measured))
        done: dict[str, int] = {}

        def progress(device: str, n: int, total: int) -> None:
            done[device] = n
            bar.update(sum(done.values()))

        try:
            result = collect(archs, measured, ctx.space, ctx.out / "latency" / "measured.parquet",
                             vocab=ctx.vocab(), progress=progress)
        finally:
            bar.close()
        data = LatencyDataset.load(ctx.out / "latency" / "measured.parquet")
        for p in measured:
            rows = data.for_device(p.name)
            summary[p.name] = {"source": "measured", "rows": len(rows), "measured_now": result.measured.get(p.name, 0),
                               "median_ms": float(np.median(rows.latency())), "failed": len(result.failed.get(p.name, []))}
    return summary


def _import_latency(path: str, device: str, space: SearchSpace) -> Any:
    from hat_ray.latency.dataset import LatencyDataset

    p = Path(path)
    if p.name.lower().endswith((".csv", ".csv.gz")):
        return LatencyDataset.from_hat_csv(p, device=device, space=space.name)
    return LatencyDataset.load(p).for_device(device)


# ---------------------------------------------------------------- predictor
def stage_predictor(ctx: Context) -> dict[str, Any]:
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.metrics import latency_metrics
    from hat_ray.latency.predictor import LatencyPredictor

    cfg, summary = ctx.exp.latency, {}
    for p in ctx.profiles:
        data = LatencyDataset.load(ctx.latency_data(p.name)).for_device(p.name)
        if len(data) < 10:
            raise DataError(f"{ctx.latency_data(p.name)}: only {len(data)} rows for {p.name}; a predictor needs "
                            "at least 10 (raise latency.archs)")
        info: dict[str, Any] = {"rows": len(data)}
        n_test = int(round(cfg.holdout * len(data)))
        if n_test >= 5:  # report the error on rows the predictor did not see, then refit on all
            order = np.random.default_rng(cfg.seed).permutation(len(data))
            test, train = data.subset(np.sort(order[:n_test])), data.subset(np.sort(order[n_test:]))
            held = LatencyPredictor.fit(train, model=cfg.model, space=ctx.space, seed=cfg.seed)
            info["heldout"] = latency_metrics(*held.paired(test))
        predictor = LatencyPredictor.fit(data, model=cfg.model, space=ctx.space, seed=cfg.seed)
        predictor.save(ctx.predictor_path(p.name))
        info.update(unit=predictor.unit, reference=predictor.reference)
        summary[p.name] = info
        if "heldout" in info:
            m = info["heldout"]
            unit = " (reference units)" if predictor.unit == "ref" else ""
            ctx.say(f"  {p.name}: {len(data)} rows, held-out MAPE {m['mape']:.1f}%{unit}, "
                    f"Kendall tau {m['kendall_tau']:.2f}")
    return summary


# ---------------------------------------------------------------- search
def search_targets(ctx: Context) -> list[dict[str, Any]]:
    """One search per (device, limit): name, device, limit as written, limit in ms."""
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.predictor import LatencyPredictor

    targets = []
    for entry in ctx.exp.devices:
        device = ctx.profile(entry.profile).name
        for limit in entry.limits_ms:
            kind, value = parse_limit(limit)  # type: ignore[misc]  # validated by Experiment.check
            # percentile and reference limits are read in the predictor's unit, then calibrated to ms
            predictor = LatencyPredictor.load(ctx.predictor_path(device)) if kind != "ms" else None
            if predictor is None:
                ms, label = value, f"{value:g}ms"
            elif kind == "percentile":
                data = LatencyDataset.load(ctx.latency_data(device)).for_device(device)
                ms, label = predictor.to_ms(np.percentile(data.latency(predictor.unit), value)), f"p{value:g}"
            else:
                if predictor.unit != "ref":
                    raise DataError(f"limit {limit!r} on {device} is in reference units, but its latency data was "
                                    "measured with the sequential protocol (ms): set the profile's protocol.mode "
                                    "to reference, or give the limit in ms or as a percentile")
                ms, label = predictor.to_ms(value), f"{value:g}ref"
            targets.append({"name": f"{device}-{label}", "device": device, "limit": limit, "limit_ms": ms})
    return targets


def search_options(exp: Experiment) -> Any:
    """The SearchOptions of the experiment's search section (engine, scorers and their resources)."""
    from hat_ray.search.run import SearchOptions

    s = exp.search
    return SearchOptions(algorithm=s.algorithm, budget=s.budget, scorers=s.scorers, seed=s.seed,
                         threads_per_scorer=s.cpus_per_scorer, scorer_cpus=float(s.cpus_per_scorer),
                         use_gpu=s.gpu, engine_kwargs=s.engine().kwargs(s.algorithm))


def stage_search(ctx: Context) -> dict[str, Any]:
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.inputs import load_supernet, validation_batches
    from hat_ray.search.run import run_search
    from hat_ray.search.scorer import pack_batches, pack_weights

    s, d = ctx.exp.search, ctx.exp.data
    model, space, ckpt = load_supernet(ctx.supernet_ckpt)
    batches = validation_batches(ckpt, d.name, d.data_dir, space.super.max_positions, s.max_tokens,
                                 d.valid_sentences, source=str(ctx.supernet_ckpt))
    options = search_options(ctx.exp)
    weights, packed = pack_weights(model), pack_batches(batches)
    ctx.connect()
    summary: dict[str, Any] = {}
    targets = search_targets(ctx)
    for i, t in enumerate(targets, 1):
        out = ctx.out / "search" / t["name"]
        if (out / "result.json").is_file():
            result = json.loads((out / "result.json").read_text())
            ctx.say(f"  search {i}/{len(targets)} {t['name']}: already finished")
        else:
            resume = (out / "evaluations.jsonl").is_file()
            ctx.say(f"  search {i}/{len(targets)} {t['name']}: limit {t['limit_ms']:.1f} ms"
                    + (" (resuming)" if resume else ""))
            predictor = LatencyPredictor.load(ctx.predictor_path(t["device"]))
            constraints = Constraints([Constraint(t["device"], t["limit_ms"], predictor, s.margin)])
            info = {"supernet": str(ctx.supernet_ckpt), "devices": [[t["device"], t["limit_ms"]]], "data": d.name,
                    "valid_batches": len(batches), "target": t["name"]}
            result = run_search(space, weights, packed, constraints, out, options, resume=resume, run_info=info)
        best = result["best"]
        summary[t["name"]] = {**t, "valid_loss": best["valid_loss"], "predicted_ms": best["predicted_ms"],
                              "arch": best["arch"], "evaluations": result["evaluations"]}
        ctx.say(f"    best: valid loss {best['valid_loss']:.3f} bits, predicted "
                f"{best['predicted_ms'][t['device']]:.1f} ms, {result['evaluations']} evaluations")
    return summary


# ---------------------------------------------------------------- train
def models_to_train(ctx: Context, searched: dict[str, Any]) -> list[dict[str, Any]]:
    """Search winners (one per target) and the baselines, each distinct Arch once."""
    from hat_ray.pipeline.baselines import baselines

    models: list[dict[str, Any]] = []
    seen: dict[Arch, dict[str, Any]] = {}
    candidates = [(f"hat-{name}", "searched", Arch.from_dict(r["arch"]), name) for name, r in searched.items()]
    candidates += [(f"baseline-{name}", "baseline", arch, None)
                   for name, arch in baselines(ctx.space, ctx.exp.train.baselines).items()]
    for name, role, arch, target in candidates:
        if arch in seen:  # the same network found twice: train it once, keep every label
            seen[arch]["also"].append(name)
            if target:
                seen[arch]["targets"].append(target)
            continue
        entry = {"name": name, "role": role, "arch": arch.to_dict(), "targets": [target] if target else [],
                 "also": []}
        seen[arch] = entry
        models.append(entry)
    return models


def stage_train(ctx: Context, searched: dict[str, Any]) -> dict[str, Any]:
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.run import make_spec, run
    from hat_ray.train.state import LAST

    t = ctx.exp.train
    cfg = TrainConfig(mode="subnet", max_updates=t.max_updates, max_minutes=t.max_minutes, max_tokens=t.max_tokens,
                      lr=t.lr, warmup_updates=t.warmup_updates, dropout=t.dropout, seed=t.seed, validate_every=0,
                      save_every=0, keep_last=1)
    models = models_to_train(ctx, searched)
    if t.workers > 1:
        ctx.connect()  # the experiment's cluster (run() would otherwise start a local instance)
    for i, m in enumerate(models, 1):
        out = ctx.out / "train" / m["name"]
        if (out / DONE).is_file():
            m["summary"] = json.loads((out / DONE).read_text())
            ctx.say(f"  train {i}/{len(models)} {m['name']}: already trained")
            continue
        ctx.say(f"  train {i}/{len(models)} {m['name']} ({m['role']})")
        arch = Arch.from_dict(m["arch"])
        init = ctx.supernet_ckpt if t.init == "supernet" else None
        spec = make_spec(ctx.space, cfg, _data_options(ctx.exp), out, resume=(out / LAST).exists(), arch=arch,
                         init_from=init)
        m["summary"] = _with_threads(t.threads if t.workers == 1 else None,
                                     lambda spec=spec: run(spec, t.workers, t.cpus_per_worker, t.gpu))
        _write_json(out / DONE, m["summary"])
    _write_json(ctx.out / "train" / "models.json", models)
    return {"models": models}


# ---------------------------------------------------------------- evaluate
def stage_evaluate(ctx: Context, models: list[dict[str, Any]]) -> dict[str, Any]:
    from hat_ray.checkpoint import load_checkpoint, model_from_checkpoint
    from hat_ray.data.datasets import load_split
    from hat_ray.data.tokenizer import tokenizer_from_checkpoint
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.model.accounting import count_flops, count_params
    from hat_ray.search.inputs import validation_batches
    from hat_ray.train.evaluate import evaluate
    from hat_ray.train.loss import validation_loss
    from hat_ray.train.state import LAST

    e, d = ctx.exp.evaluate, ctx.exp.data
    folder = ctx.out / "evaluate"
    measured = _measure_models(ctx, [Arch.from_dict(m["arch"]) for m in models])
    predictors = {p.name: LatencyPredictor.load(ctx.predictor_path(p.name)) for p in ctx.profiles}
    q, seq = ctx.space.super.qkv_dim, ctx.space.super.seq_len
    rows = []
    bar = _Bar("evaluate", len(models))
    for i, m in enumerate(models):
        path = folder / f"{m['name']}.json"
        if path.is_file():
            row = json.loads(path.read_text())
        else:
            ckpt = load_checkpoint(ctx.out / "train" / m["name"] / LAST)
            model, _ = model_from_checkpoint(ckpt)
            tokenizer = tokenizer_from_checkpoint(ckpt, m["name"])
            info = ckpt.get("data") or {}
            corpus = load_split(d.name, d.test_split, d.data_dir, src_lang=info.get("src_lang"),
                                tgt_lang=info.get("tgt_lang"))
            if d.test_sentences:
                corpus = corpus.subset(range(min(d.test_sentences, len(corpus))))
            result = evaluate(model, None, tokenizer, corpus, e.beam, e.lenpen, e.max_tokens)
            arch = Arch.from_dict(m["arch"])
            # evaluate()'s loss is on the pairs it translated: the TEST split here; the validation loss
            # (what the search selected on) comes from the validation pairs the search scored
            valid = validation_batches(ckpt, d.name, d.data_dir, model.config.max_positions, e.max_tokens,
                                       d.valid_sentences, source=m["name"])
            scores = {**result.to_json(), "test_loss": result.valid_loss,
                      "valid_loss": validation_loss(model, None, valid)}
            row = {**{k: m[k] for k in ("name", "role", "arch", "targets", "also")}, **scores,
                   "test_split": d.test_split, "test_sentences": len(corpus),
                   "params": count_params(arch, q), "flops": count_flops(arch, q, seq),
                   "predicted_ms": {dev: float(p.predict([arch])[0]) for dev, p in predictors.items()},
                   "measured_ms": {dev: _field(recs.get(arch.key()), "latency_ms") for dev, recs in measured.items()},
                   # reference units (devices whose predictor is in them): prediction and measurement
                   "predicted_ref": {dev: float(p.predict_native([arch])[0]) for dev, p in predictors.items()
                                     if p.unit == "ref"},
                   "measured_ref": {dev: _field(recs.get(arch.key()), "latency_ref") for dev, recs in measured.items()
                                    if predictors[dev].unit == "ref"}}
            _write_json(path, row)
        rows.append(row)
        bar.update(i + 1)
    bar.close()
    return {"models": rows, "unmeasured_devices": sorted(set(predictors) - set(measured))}


def _measure_models(ctx: Context, archs: list[Arch]) -> dict[str, dict[str, dict[str, Any]]]:
    """Real latency of every model on every device the cluster has (skipping, with a warning,
    devices without a node: e.g. imported HAT data for hardware that is not connected)."""
    from hat_ray.cluster import require_devices
    from hat_ray.latency.probe import measure_on_devices

    ctx.connect()
    present = []
    for p in ctx.profiles:
        try:
            require_devices([p])
            present.append(p)
        except DeviceError as exc:
            ctx.say(f"  warning: {p.name} not measured ({exc})")
    if not present:
        return {}
    ctx.say(f"  measuring {len(archs)} models on {', '.join(p.name for p in present)}")
    records = measure_on_devices(archs, present, ctx.space, vocab=ctx.vocab())
    return {dev: {r["arch_key"]: r for r in recs} for dev, recs in records.items()}


def _field(record: dict[str, Any] | None, key: str) -> float | None:
    value = None if record is None else record.get(key)
    return None if value is None else float(value)


class _Bar:
    """tqdm progress bar on stderr (quiet when stderr is not a terminal)."""

    def __init__(self, label: str, total: int) -> None:
        import sys

        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, disable=not sys.stderr.isatty(), leave=False)

    def update(self, n: int) -> None:
        self.bar.n = n
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
