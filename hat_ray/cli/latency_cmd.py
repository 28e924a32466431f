"""`hat-ray latency measure|collect|fit|eval`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from hat_ray.cli.common import check_output, load_arch, print_json
from hat_ray.errors import ConfigError, DataError
from hat_ray.latency.dataset import LatencyDataset
from hat_ray.latency.metrics import latency_metrics
from hat_ray.latency.predictor import MODELS, LatencyPredictor
from hat_ray.latency.profile import MODES, DeviceProfile
from hat_ray.resources import bundled_names
from hat_ray.space import SearchSpace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="measure latency on devices, build datasets, fit predictors")
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION", parser_class=type(p))
    lsub.required = True
    m = lsub.add_parser("measure", help="measure Archs on this machine (no Ray); a simulated device computes them")
    m.add_argument("--device", required=True, help="device profile name or YAML path")
    m.add_argument("--space", required=True, help="search space name or YAML path")
    which = m.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="Arch YAML (HAT's keys or hat-ray's)")
    which.add_argument("-n", type=int, help="measure N random Archs of the space's latency choices")
    m.add_argument("--seed", type=int, default=0, help="sampling seed for -n")
    m.add_argument("--vocab", type=int, help="output vocabulary rows (default: the profile's)")
    m.add_argument("--protocol", choices=MODES, help="override the profile's protocol.mode")
    m.add_argument("--json", action="store_true", help="print a JSON list of records")
    m.set_defaults(func=_measure)
    c = lsub.add_parser("collect", help="measure N Archs on every node of each device (Ray), resumable")
    c.add_argument("--space", required=True)
    c.add_argument("--device", required=True, action="append", help="device profile (repeat for several)")
    c.add_argument("-n", type=int, required=True, help="number of random Archs (same seed = same Archs)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True, help="dataset (.parquet): appended row by row, re-runs skip done rows")
    c.add_argument("--address", help="Ray cluster address (default: start Ray here with the local devices)")
    c.add_argument("--vocab", type=int)
    c.add_argument("--protocol", choices=MODES,
                   help="override the profiles' protocol.mode (reference: each Arch timed next to the space's "
                        "reference Arch, in rounds; sequential: HAT's, one Arch after another)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=_collect)
    f = lsub.add_parser("fit", help="fit a latency predictor (or adapt one with --base)")
    f.add_argument("--data", required=True, help="hat-ray dataset (.parquet) or HAT's CSV (.csv / .csv.gz)")
    f.add_argument("--rows", help="rows A:B of the data (0-based, B exclusive)")
    f.add_argument("--sample", type=int, help="fit on K random rows of the selection (seeded by --seed)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--model", choices=MODELS, default="default")
    f.add_argument("--base", help="base predictor of another device: few-shot adaptation with these rows")
    f.add_argument("--device", help="device of the rows (default: the data's; HAT CSVs: from the file name)")
    f.add_argument("--space", help="search space of the rows (default: the data's)")
    f.add_argument("--out", required=True, help="predictor file to write (.npz)")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_fit)
    e = lsub.add_parser("eval", help="metrics of a predictor on held-out rows")
    e.add_argument("--predictor", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--rows", help="rows A:B (0-based, B exclusive); must not overlap the training rows")
    e.add_argument("--device", help="device rows to use when the data holds several")
    e.add_argument("--json", action="store_true",
                   help='print {"rmse_ms", "mape", "within_5", "within_10", "kendall_tau", "n", "unit"} (percent for '
                        'mape/within; errors in the predictor\'s unit: ms, or "ref" = multiples of the reference Arch)')
    e.set_defaults(func=_eval)


# ---- measure ----
def _measure(args: argparse.Namespace) -> int:
    from hat_ray.latency.measure import measure_many

    profile, space = _with_protocol(DeviceProfile.load(args.device), args.protocol), SearchSpace.load(args.space)
    if args.arch:
        archs = [load_arch(args.arch, space.latency_space())]
    else:
        _positive(args.n, "-n")
        rng = np.random.default_rng(args.seed)
        archs = [space.latency_space().sample(rng) for _ in range(args.n)]
    bar = _Progress("measure", len(archs))
    records = measure_many(archs, profile, space, vocab=args.vocab, progress=bar.update)
    bar.close()
    if args.json:
        print_json(records)
        return 0
    if profile.simulated:
        for r in records:
            print(f"{r['latency_ms']:10.2f} ms  enc {r['encoder_ms']:8.2f}  dec {r['decoder_ms']:9.2f}  = matmul "
                  f"{r['matmul_ms']:.2f} + memory stall {r['memory_stall_ms']:.2f} + nonlinear {r['nonlinear_ms']:.2f}"
                  f"  ({r['cycles']:.4g} cycles)  {r['arch_key']}")
        return 0
    for r in records:
        flag = "  (disturbed)" if r["disturbed"] else ""
        ref = f"  {r['latency_ref']:6.3f} x ref (IQR {r['latency_ref_iqr']:.3f})" if r["latency_ref"] is not None else ""
        print(f"{r['latency_ms']:10.2f} ms{ref}  enc {r['encoder_ms']:8.2f}  dec {r['decoder_ms']:9.2f}  "
              f"cv {r['encoder_cv']:.3f}/{r['decoder_cv']:.3f}  {r['arch_key']}{flag}")
    if records and records[0]["reference_key"]:
        print(f"reference Arch {records[0]['reference_key'][:12]}: median {np.median([r['reference_ms'] for r in records]):.2f} ms")
    return 0


# ---- collect ----
def _collect(args: argparse.Namespace) -> int:
    import ray

    from hat_ray.cluster import connect
    from hat_ray.latency.probe import collect, existing_keys

    profiles = [_with_protocol(DeviceProfile.load(d), args.protocol) for d in dict.fromkeys(args.device)]
    space = SearchSpace.load(args.space)
    _positive(args.n, "-n")
    if Path(args.out).suffix != ".parquet":
        raise ConfigError("command line", [f"--out must be a .parquet dataset, got {args.out!r}"])
    check_output(args.out, "--out")
    existing_keys(Path(args.out), space.name, profiles)  # an unreadable or foreign --out fails before Ray starts
    if not (args.address or os.environ.get("RAY_ADDRESS")):  # the probes run here: their runtimes must too
        from hat_ray.latency.backends import BACKENDS

        for profile in profiles:
            if not profile.simulated:
                BACKENDS[profile.runtime](profile).check_packages()
    rng = np.random.default_rng(args.seed)
    archs = [space.latency_space().sample(rng) for _ in range(args.n)]
    started = connect(args.address, profiles)
    bars = {p.name: _Progress(f"collect {p.name}", args.n) for p in profiles}
    try:
        summary = collect(archs, profiles, space, args.out, vocab=args.vocab,
                          progress=lambda device, done, total: bars[device].update(done, total))
    finally:
        for bar in bars.values():
            bar.close()
        if started:
            ray.shutdown()
    info = {"out": str(args.out), **summary.to_dict(), "rows": len(LatencyDataset.load(args.out))}
    if args.json:
        print_json(info)
    else:
        for p in profiles:
            print(f"{p.name}: measured {summary.measured.get(p.name, 0)}, already present "
                  f"{summary.skipped.get(p.name, 0)}, failed {len(summary.failed.get(p.name, []))}")
        print(f"{info['rows']} rows in {args.out} ({info['seconds']} s)")
    return 0


# ---- fit ----
def _fit(args: argparse.Namespace) -> int:
    t0 = time.time()
    check_output(args.out, "--out")
    data = _load_data(args.data, args.device, args.space).rows(args.rows)
    if args.sample is not None:
        _positive(args.sample, "--sample")
        if args.sample > len(data):
            raise DataError(f"--sample {args.sample} exceeds the {len(data)} selected rows")
        data = data.subset(np.sort(np.random.default_rng(args.seed).choice(len(data), args.sample, replace=False)))
    space = SearchSpace.load(args.space) if args.space else None
    if args.base:
        if args.model != "default":
            raise ConfigError("latency fit", ["--base adapts a default predictor; drop --model"])
        base = LatencyPredictor.load(args.base)
        if space is not None and space.name != base.space_name:
            raise DataError(f"--base {args.base} is for space {base.space_name}, not {space.name}")
        predictor = base.adapt(data, seed=args.seed)
    else:
        predictor = LatencyPredictor.fit(data, model=args.model, space=space, seed=args.seed,
                                         normaliser_ms=_normaliser(data, args.model))
    predictor.save(args.out)
    info = {"out": str(args.out), "model": predictor.model, "mode": predictor.mode, "unit": predictor.unit,
            "reference": predictor.reference, "space": predictor.space_name,
            "device": predictor.device, "runtime": predictor.runtime, "n_train": len(data), "noise": round(float(predictor.meta["noise"]), 4),
            "base": predictor.meta.get("base"), "seconds": round(time.time() - t0, 2)}
    if args.json:
        print_json(info)
    else:
        how = f"adapted from {info['base']['device']}" if args.base else f"{predictor.model} ({predictor.mode} mode)"
        print(f"wrote {args.out}: {how}, {predictor.space_name} on {predictor.device}, {len(data)} rows, "
              f"residual noise {100 * info['noise']:.1f}%")
        if predictor.reference:
            ref = predictor.reference
            print(f"  in units of reference Arch {ref['key'][:12]}; ms = units x {ref['ms']:.2f} ms (its median over "
                  f"the rows' rounds, IQR {ref['ms_iqr']:.2f} ms)")
    return 0


def _normaliser(data: LatencyDataset, model: str) -> float | None:
    """hat-mlp's target scale: the device profile's latency_normaliser_ms when it is bundled."""
    devices = data.devices()
    if model != "hat-mlp" or data.unit() == "ref" or len(devices) != 1 or devices[0] not in bundled_names("device_profiles"):
        return None
    return DeviceProfile.load(devices[0]).latency_normaliser_ms


# ---- eval ----
def _eval(args: argparse.Namespace) -> int:
    predictor = LatencyPredictor.load(args.predictor)
    data = _load_data(args.data, args.device, None).rows(args.rows)
    metrics = latency_metrics(*predictor.paired(data))
    metrics["unit"] = predictor.unit
    if args.json:
        print_json(metrics)
    else:
        unit = "ms" if predictor.unit == "ms" else "x reference"
        print(f"{predictor.device} / {predictor.space_name}, {metrics['n']} held-out rows: MAPE {metrics['mape']:.2f}%, "
              f"RMSE {metrics['rmse_ms']:.3g} {unit}, within 5% {metrics['within_5']:.1f}%, within 10% "
              f"{metrics['within_10']:.1f}%, Kendall tau {metrics['kendall_tau']:.3f}")
    return 0


def _load_data(path: str, device: str | None, space: str | None) -> LatencyDataset:
    """A dataset or HAT CSV narrowed to one device (``device`` overrides a CSV's guessed name)."""
    p = Path(path)
    if p.name.lower().endswith((".csv", ".csv.gz")):
        space_name = SearchSpace.load(space).name if space else None
        return LatencyDataset.from_hat_csv(p, device=device, space=space_name)
    return LatencyDataset.load(p).for_device(device)


def _with_protocol(profile: DeviceProfile, mode: str | None) -> DeviceProfile:
    return profile.with_protocol(mode=mode) if mode and mode != profile.protocol.mode else profile


def _positive(value: int | None, flag: str) -> None:
    if value is None or value < 1:
        raise ConfigError("command line", [f"{flag} must be a positive integer, got {value!r}"])


class _Progress:
    """A one-line progress counter on stderr (only when stderr is a terminal)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.t0 = label, total, time.time()
        self.live = sys.stderr.isatty()

    def update(self, done: int, total: int | None = None) -> None:
        if self.live:
            total = total or self.total
            rate = (time.time() - self.t0) / max(done, 1)
            sys.stderr.write(f"\r{self.label}: {done}/{total}  ({rate:.1f} s each, ~{rate * (total - done):.0f} s left)  ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")
