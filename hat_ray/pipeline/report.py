"""The pipeline's final report: ``report.md`` and three plots in the run folder.

- ``pareto.png``: every evaluated candidate of every search (validation loss vs predicted
  latency), one colour per search, its limit dashed, the winners marked;
- ``latency_pred_vs_measured.png``: predicted vs measured latency of the trained models;
- ``bleu_vs_latency.png``: SacreBLEU vs measured latency, searched models against the baseline
  Transformers scaled by depth and width (HAT's figure).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hat_ray.io import atomic_write
from hat_ray.pipeline.stages.context import Context


def write_report(ctx: Context, done: dict[str, Any]) -> dict[str, Any]:
    models = done["evaluate"]["models"]
    devices = [p.name for p in ctx.profiles]
    plots = {
        "pareto.png": _pareto_png(ctx, done["search"]),
        "latency_pred_vs_measured.png": _pred_vs_measured_png(models, devices),
        "bleu_vs_latency.png": _bleu_png(models, devices),
    }
    for name, data in plots.items():
        if data is not None:
            atomic_write(ctx.out / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
    found = claims(models, devices)
    text = render_markdown(ctx, done, [n for n, d in plots.items() if d is not None], found)
    atomic_write(ctx.out / "report.md", lambda tmp: Path(tmp).write_text(text))
    return {"report": str(ctx.out / "report.md"), "plots": [n for n, d in plots.items() if d is not None],
            "table": model_table(models, devices), "claims": found}


# Two latencies closer than this (relative) are equal: the reference protocol's resolution on a
# shared machine (2-3% between two collections, BENCHMARKS.md "Reference-interleaved latency").
EQUAL_LATENCY = 0.03


def claim_axis(models: list[dict[str, Any]], devices: list[str]) -> tuple[str, str, str] | None:
    """(device, model field, unit) HAT's claim is judged on: the first device on which the searched
    models were measured, in reference units where they have them, else in ms; else predicted ms;
    None without devices."""
    searched = [m for m in models if m["role"] == "searched"]
    for dev in devices:
        if searched and all(m.get("measured_ref", {}).get(dev) is not None for m in searched):
            return dev, "measured_ref", "x ref"
        if searched and all(m["measured_ms"].get(dev) is not None for m in searched):
            return dev, "measured_ms", "ms"
    return (devices[0], "predicted_ms", "ms (predicted)") if devices else None


def claims(models: list[dict[str, Any]], devices: list[str]) -> list[dict[str, Any]]:
    """HAT's claim for each searched model: its SacreBLEU beats that of every baseline whose latency
    is equal (within :data:`EQUAL_LATENCY`) or higher. ``holds`` is None when no baseline is that
    slow (nothing to compare with); a baseline whose measurement failed takes no part."""
    axis = claim_axis(models, devices)
    if axis is None:
        return []
    dev, key, unit = axis
    base = [b for b in models if b["role"] == "baseline" and b.get(key, {}).get(dev) is not None]
    out = []
    for m in sorted((m for m in models if m["role"] == "searched"), key=lambda m: m[key][dev]):
        latency = m[key][dev]
        rivals = sorted((b for b in base if b[key][dev] >= latency * (1 - EQUAL_LATENCY)), key=lambda b: b[key][dev])
        against = [{"model": b["name"], "latency": round(b[key][dev], 3), "sacrebleu": round(b["sacrebleu"], 2),
                    "beaten": m["sacrebleu"] > b["sacrebleu"]} for b in rivals]
        out.append({"model": m["name"], "device": dev, "unit": unit, "latency": round(latency, 3),
                    "sacrebleu": round(m["sacrebleu"], 2),
                    "holds": all(r["beaten"] for r in against) if against else None, "against": against})
    return out


def claim_sentence(c: dict[str, Any]) -> str:
    """One claim in words: "the claim holds" / "the claim does not hold", and why."""
    head = f"**{c['model']}** ({c['latency']:g} {c['unit']} on `{c['device']}`, SacreBLEU {c['sacrebleu']:.2f}): "
    if c["holds"] is None:
        return head + "no baseline is as slow, so there is nothing to beat: the claim cannot be checked."
    rivals = "; ".join(f"{r['model']} {r['latency']:g} {c['unit']}, SacreBLEU {r['sacrebleu']:.2f}" for r in c["against"])
    if c["holds"]:
        return head + f"the claim holds: it beats every baseline of equal or higher latency ({rivals})."
    lost = [r["model"] for r in c["against"] if not r["beaten"]]
    verbs = "is at least as slow and scores" if len(lost) == 1 else "are at least as slow and score"
    return head + f"the claim does not hold: {', '.join(lost)} {verbs} at least as high ({rivals})."


def model_table(models: list[dict[str, Any]], devices: list[str]) -> list[dict[str, Any]]:
    rows = []
    for m in sorted(models, key=lambda m: (m["role"] != "searched", m["name"])):
        row = {"model": m["name"], "role": m["role"], "params_m": round(m["params"] / 1e6, 2),
               "gflops": round(m["flops"] / 1e9, 3), "valid_loss": round(m["valid_loss"], 3),
               "sacrebleu": round(m["sacrebleu"], 2), "tok_bleu": round(m["tok_bleu"], 2)}
        for d in devices:
            row[f"{d}_predicted_ms"] = round(m["predicted_ms"][d], 1)
            measured = m["measured_ms"].get(d)
            row[f"{d}_measured_ms"] = round(measured, 1) if measured is not None else None
            if d in m.get("predicted_ref", {}):  # a device measured in reference units: both
                row[f"{d}_predicted_ref"] = round(m["predicted_ref"][d], 3)
                ref = m.get("measured_ref", {}).get(d)
                row[f"{d}_measured_ref"] = round(ref, 3) if ref is not None else None
        rows.append(row)
    return rows


def render_markdown(ctx: Context, done: dict[str, Any], plots: list[str], found: list[dict[str, Any]]) -> str:
    exp, devices = ctx.exp, [p.name for p in ctx.profiles]
    lines = [f"# hat-ray report: {exp.name}", "",
             f"Space `{exp.space}`, data `{exp.data.name}`, devices {', '.join(f'`{d}`' for d in devices)}, "
             f"cluster `{exp.address or 'local Ray instance'}`. Experiment: `experiment.yaml`.", ""]
    sup = done["supernet"]
    losses = ", ".join(f"{k.removeprefix('valid_loss_')} {v:.3f}" for k, v in sup.items()
                       if k.startswith("valid_loss_") and isinstance(v, int | float))
    lines += ["## SuperTransformer", "",
              f"{sup.get('update', 0):.0f} updates, {sup.get('tokens', 0):.0f} target tokens "
              f"({sup.get('tokens_per_s', 0):.0f} tok/s); validation loss (bits/token): {losses or 'n/a'}.", ""]
    lines += ["## Latency predictors", "", "| device | rows | held-out MAPE | within 10% | Kendall tau |",
              "|---|---|---|---|---|"]
    calibrations = []
    for dev, info in done["predictor"].items():
        m = info.get("heldout")
        cells = (f"{m['mape']:.1f}% (n={m['n']})", f"{m['within_10']:.0f}%", f"{m['kendall_tau']:.2f}") if m else ("-",) * 3
        lines.append(f"| {dev} | {info['rows']} | " + " | ".join(cells) + " |")
        ref = info.get("reference")
        if info.get("unit") == "ref" and ref:
            calibrations.append(f"`{dev}` was measured with the reference protocol: its predictor works in units of "
                                f"the reference Arch (`{ref['key'][:24]}...`), where its error above is measured; "
                                f"its ms are units x {ref['ms']:.2f} ms, the reference's median over the latency "
                                f"stage's rounds (IQR {ref['ms_iqr']:.2f} ms, {ref['rows']} rows).")
    if calibrations:
        lines += [""] + calibrations
    lines += ["", "## Searches", "", "| search | limit | evaluations | best valid loss | predicted latency |",
              "|---|---|---|---|---|"]
    for name, s in done["search"].items():
        lines.append(f"| {name} | {s['limit']} = {s['limit_ms']:.1f} ms | {s['evaluations']} | "
                     f"{s['valid_loss']:.3f} | {s['predicted_ms'][s['device']]:.1f} ms |")
    table = model_table(done["evaluate"]["models"], devices)
    lat_cols = [c for d in devices for c in (f"{d}_predicted_ms", f"{d}_measured_ms", f"{d}_predicted_ref",
                                             f"{d}_measured_ref") if any(c in row for row in table)]
    header = ["model", "role", "params_m", "gflops", *lat_cols, "valid_loss", "sacrebleu", "tok_bleu"]
    t = ctx.exp.train
    budget = f"{t.max_minutes:g} min" if t.max_minutes else f"{t.max_updates} updates"
    lines += ["", "## Trained models", "",
              f"Search winners and baseline Transformers (uniform Archs scaled by depth and width), all trained "
              f"for {budget} from {'the SuperTransformer' if t.init == 'supernet' else 'scratch'}; "
              f"BLEU on `{exp.data.test_split}` (beam {exp.evaluate.beam}), latency measured on the devices after "
              "training.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        lines.append("| " + " | ".join("-" if row.get(c) is None else str(row[c]) for c in header) + " |")
    lines += claim_lines(found, exp)
    lines += export_lines(done["evaluate"]["models"])
    missing = done["evaluate"].get("unmeasured_devices") or []
    if missing:
        lines += ["", f"Not measured (no node in the cluster): {', '.join(missing)}."]
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def claim_lines(found: list[dict[str, Any]], exp: Any) -> list[str]:
    """HAT's claim, model by model (``found``: :func:`claims`)."""
    if not found:
        return []
    unit = found[0]["unit"]
    how = ("in units of the reference Arch measured alongside (the latency stage's protocol)" if unit == "x ref"
           else "in predicted ms (no device measured every model)" if "predicted" in unit else "in measured ms")
    return ["", "## HAT's claim", "",
            "Does each searched model translate better than every baseline that is at least as slow? Latency "
            f"{how}; equal means within {EQUAL_LATENCY:.0%}; SacreBLEU on `{exp.data.test_split}`, one training "
            "run per model (no seeds, no spread: a single run can be beaten by noise).", "",
            *(f"- {claim_sentence(c)}" for c in found)]


def export_lines(models: list[dict[str, Any]]) -> list[str]:
    """The deployed variants of the searched models (``evaluate.export``): BLEU next to the torch
    model's, size on disk, identical translations."""
    rows = [(m, v, x) for m in models for v, x in (m.get("exports") or {}).items()]
    if not rows:
        return []
    out = ["", "## Deployed variants", "",
           "Each searched model exported (`hat-ray export`) and translated again through the exported graphs "
           "(same test pairs and decoding); latency per runtime is the devices' (e.g. `local_cpu_ort`).", "",
           "| model | variant | SacreBLEU | torch SacreBLEU | identical translations | size MB |",
           "|---|---|---|---|---|---|"]
    for m, variant, x in rows:
        out.append(f"| {m['name']} | {variant} | {x['sacrebleu']:.2f} | {m['sacrebleu']:.2f} | "
                   f"{x['same_as_torch']}/{m['test_sentences']} | {x['bytes'] / 1e6:.1f} |")
    return out


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6.5, 4.2), dpi=120)


def _png(plt: Any, fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _pareto_png(ctx: Context, searched: dict[str, Any]) -> bytes | None:
    plt, fig, ax = _figure()
    any_points = False
    for i, (name, s) in enumerate(searched.items()):
        path = ctx.out / "search" / name / "trials.parquet"
        if not path.is_file():
            continue
        frame = pd.read_parquet(path)
        frame = frame[~frame["failed"]]
        col = f"latency_{s['device']}"
        color = f"C{i % 10}"
        ax.scatter(frame[col], frame["valid_loss"], s=6, alpha=0.35, color=color, label=f"{name} candidates")
        ax.axvline(s["limit_ms"], color=color, ls="--", lw=1)
        ax.scatter([s["predicted_ms"][s["device"]]], [s["valid_loss"]], marker="*", s=160, color=color,
                   edgecolor="black", zorder=3, label=f"{name} winner")
        any_points = True
    if not any_points:
        plt.close(fig)
        return None
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation loss (bits/token)")
    ax.set_title("search: candidates, limits (dashed) and winners")
    ax.legend(fontsize=7, loc="best")
    return _png(plt, fig)


def _pred_vs_measured_png(models: list[dict[str, Any]], devices: list[str]) -> bytes | None:
    """Predicted vs measured, in reference units where every point of the plot has them (a
    drifting machine's ms are not comparable), else in ms."""
    pts = [(d, m.get("predicted_ref", {})[d], m["measured_ref"][d], m["role"]) for m in models for d in devices
           if m.get("measured_ref", {}).get(d) is not None and d in m.get("predicted_ref", {})]
    unit = "x reference Arch"
    if not pts or any(m["measured_ms"].get(d) is not None and d not in m.get("predicted_ref", {})
                      for m in models for d in devices):
        pts = [(d, m["predicted_ms"][d], m["measured_ms"][d], m["role"]) for m in models for d in devices
               if m["measured_ms"].get(d) is not None]
        unit = "ms"
    if not pts:
        return None
    plt, fig, ax = _figure()
    for i, dev in enumerate(devices):
        xs = [p[1] for p in pts if p[0] == dev]
        ys = [p[2] for p in pts if p[0] == dev]
        if xs:
            ax.scatter(xs, ys, color=f"C{i}", label=dev)
    lo, hi = min(min(p[1], p[2]) for p in pts), max(max(p[1], p[2]) for p in pts)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="measured = predicted")
    ax.set_xlabel(f"predicted latency ({unit})")
    ax.set_ylabel(f"measured latency ({unit})")
    ax.set_title("latency predictor on the trained models")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def _bleu_png(models: list[dict[str, Any]], devices: list[str]) -> bytes | None:
    """BLEU vs latency on the first device where every model was measured; else predicted latency
    (one model whose measurement failed must not mix the two, nor crash the plot)."""
    dev = next((d for d in devices if all(m["measured_ms"].get(d) is not None for m in models)), None)
    key = "measured_ms" if dev else "predicted_ms"
    dev = dev or devices[0]
    plt, fig, ax = _figure()
    base = sorted((m[key][dev], m["sacrebleu"], m["name"]) for m in models if m["role"] == "baseline")
    if base:
        ax.plot([b[0] for b in base], [b[1] for b in base], "o-", color="C0", label="baseline Transformers")
        for x, y, name in base:
            ax.annotate(name.removeprefix("baseline-"), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    hat = [(m[key][dev], m["sacrebleu"], m["name"]) for m in models if m["role"] == "searched"]
    if hat:
        ax.scatter([h[0] for h in hat], [h[1] for h in hat], marker="*", s=180, color="C3", edgecolor="black",
                   zorder=3, label="searched (hat-ray)")
        for x, y, name in hat:
            ax.annotate(name.removeprefix("hat-"), (x, y), fontsize=7, xytext=(3, -10), textcoords="offset points")
    if not base and not hat:
        plt.close(fig)
        return None
    ax.set_xlabel(f"{'measured' if key == 'measured_ms' else 'predicted'} latency on {dev} (ms)")
    ax.set_ylabel("SacreBLEU")
    ax.set_title("BLEU vs latency")
    ax.legend(fontsize=8)
    if all(math.isfinite(m["sacrebleu"]) for m in models):
        ax.set_ylim(bottom=0)
    return _png(plt, fig)
