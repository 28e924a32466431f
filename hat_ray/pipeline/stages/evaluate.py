"""Stage 6, evaluate: BLEU, test and validation loss, measured and predicted latency of every
trained model (``evaluate/MODEL.json``, one file per model: an interrupted stage resumes)."""

from __future__ import annotations

import json
import math
from typing import Any

from hat_ray.arch import Arch
from hat_ray.errors import DeviceError
from hat_ray.pipeline.stages.context import Bar, Context, write_json


def run(ctx: Context, done: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the train stage's models (``done["train"]["models"]``)."""
    from hat_ray.checkpoint import load_checkpoint, model_from_checkpoint
    from hat_ray.data.datasets import load_split
    from hat_ray.data.tokenizer import tokenizer_from_checkpoint
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.inputs import validation_batches
    from hat_ray.summary import arch_summary
    from hat_ray.train.evaluate import evaluate
    from hat_ray.train.loss import validation_loss
    from hat_ray.train.state import LAST

    models, e, d = done["train"]["models"], ctx.exp.evaluate, ctx.exp.data
    folder = ctx.out / "evaluate"
    measured = _measure_models(ctx, [Arch.from_dict(m["arch"]) for m in models])
    predictors = {p.name: LatencyPredictor.load(ctx.predictor_path(p.name)) for p in ctx.profiles}
    constraints = Constraints([Constraint(dev, math.inf, p) for dev, p in predictors.items()])  # predictions only
    rows = []
    bar = Bar("evaluate", len(models))
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
            summary = arch_summary(arch, ctx.space, constraints)
            row = {**{k: m[k] for k in ("name", "role", "arch", "targets", "also")}, **scores,
                   "test_split": d.test_split, "test_sentences": len(corpus),
                   "params": summary["params"], "flops": summary["flops"], "predicted_ms": summary["predicted_ms"],
                   "measured_ms": {dev: _field(recs.get(arch.key()), "latency_ms") for dev, recs in measured.items()},
                   # reference units (devices whose predictor is in them): prediction and measurement
                   "predicted_ref": summary.get("predicted_ref", {}),
                   "measured_ref": {dev: _field(recs.get(arch.key()), "latency_ref") for dev, recs in measured.items()
                                    if predictors[dev].unit == "ref"}}
            if m["role"] == "searched" and e.export:
                row["exports"] = _exports(ctx, m["name"], model, ckpt, corpus, result.hypotheses, e)
            write_json(path, row)
        rows.append(row)
        bar.update(i + 1)
    bar.close()
    return {"models": rows, "unmeasured_devices": sorted(set(predictors) - set(measured))}


def _exports(ctx: Context, name: str, model: Any, ckpt: dict[str, Any], corpus: Any, torch_hyps: Any,
             e: Any) -> dict[str, dict[str, Any]]:
    """Each ``evaluate.export`` variant of a searched model: exported to ``export/NAME-VARIANT/``
    (an earlier export there is reused), its SacreBLEU on the same test pairs with the same
    decoding, its size on disk, and how many translations equal the torch model's."""
    from hat_ray.export.folder import export_model
    from hat_ray.export.runner import ExportedModel
    from hat_ray.pipeline.config import EXPORT_VARIANTS
    from hat_ray.train.evaluate import sacre_bleu

    out = {}
    for variant in e.export:
        fmt, int8 = EXPORT_VARIANTS[variant]
        folder = ctx.out / "export" / f"{name}-{variant}"
        if not (folder / "manifest.json").is_file():
            export_model(model, folder, fmt, int8, tokenizer=ckpt.get("tokenizer"),
                         source={"checkpoint": str(ctx.out / "train" / name), "pipeline": str(ctx.out)})
        exported = ExportedModel.load(folder)
        hyps = exported.translate(corpus.src, e.beam, e.lenpen, e.max_tokens)
        refs = [exported.tokenizer.reference(t) for t in corpus.tgt]
        out[variant] = {"folder": str(folder), "sacrebleu": sacre_bleu(hyps, refs)[0],
                        "bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
                        "same_as_torch": sum(a == b for a, b in zip(hyps, torch_hyps))}
    return out


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

