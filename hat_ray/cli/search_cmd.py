"""`hat-ray search`: evolutionary search on a trained SuperTransformer under latency limits."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from typing import Any

from hat_ray.errors import HatRayError
from hat_ray.search.evolution import ENGINES, EngineOptions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search SubTransformers under latency limits (Ray Tune + scorer actors)")
    p.add_argument("--supernet", required=True, help="SuperTransformer checkpoint (hat-ray train supernet)")
    p.add_argument("--data", required=True, help="dataset name or folder (its valid split is scored)")
    p.add_argument("--data-dir", help="folder already holding the named dataset's files")
    p.add_argument("--device", action="append", default=[], metavar="PROFILE:LIMIT",
                   help="latency limit on a device (repeatable): ms (local_cpu:120) or multiples of the reference "
                        "Arch (local_cpu:1.2ref, for a predictor fit in reference units); PROFILE alone: no limit "
                        "(pareto objective)")
    p.add_argument("--predictor", action="append", default=[], metavar="DEVICE:PRED",
                   help="latency predictor file per device (hat-ray latency fit)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="safety margin in predictor standard deviations (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--algorithm", choices=tuple(ENGINES), default="hat")  # the registered engines
    p.add_argument("--budget", type=int, help="max evaluations (default: the algorithm's own end)")
    p.add_argument("--scorers", type=int, default=2, help="scorer actors (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per scorer; each scorer reserves as many CPUs (default 1)")
    p.add_argument("--scorer-slots", type=int, default=1, metavar="S",
                   help="candidates each scorer process scores at once, one thread each, sharing its weights "
                        "and process: S slots cost activations, not S processes (~300 MiB each); reserves "
                        "S x --threads CPUs per scorer (default 1)")
    p.add_argument("--gpu", action="store_true", help="score on GPUs (one per scorer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in --out")
    p.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    p.add_argument("--valid-sentences", type=int, help="score on the first N validation pairs (default all)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per scoring batch (default 4096)")
    p.add_argument("--measure-top", type=int, default=0, metavar="K",
                   help="after the search, re-measure the top K candidates on the real --device devices "
                        "(latency probes; PROFILE must be a device profile) and report predicted vs measured")
    g = p.add_argument_group("evolution (HAT's defaults; used by " + "; ".join(  # as each engine declares
        f"{name}: {', '.join(o.replace('_', '-') for o in e.options) or 'none'}" for name, e in ENGINES.items()) + ")")
    for f in fields(EngineOptions):  # one flag per declared engine option
        g.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"{EngineOptions.HELP[f.name]} (default {f.default})")
    p.add_argument("--json", action="store_true", help="print result.json")
    p.set_defaults(func=_run)


_DEVICE_FORM = "PROFILE:LIMIT_MS or PROFILE:Xref (e.g. local_cpu:120, local_cpu:1.2ref)"


def parse_devices(specs: list[str]) -> list[tuple[str, float, str]]:
    """``PROFILE:LIMIT_MS`` -> (profile, limit, "ms"); ``PROFILE:1.2ref`` -> (profile, 1.2, "ref"):
    1.2 times the reference Arch's latency, for a predictor fit in reference units;
    ``PROFILE`` -> (profile, inf, "ms")."""
    out = []
    for spec in specs:
        name, sep, limit = spec.partition(":")
        if not name:
            raise HatRayError(f"--device {spec!r}: expected {_DEVICE_FORM}")
        unit = "ref" if limit.strip().lower().endswith("ref") else "ms"
        number = limit.strip()[:-3] if unit == "ref" else limit
        try:
            value = float(number) if sep else math.inf
        except ValueError:
            raise HatRayError(f"--device {spec!r}: {limit!r} is not a latency in ms or reference units; "
                              f"write {_DEVICE_FORM}") from None
        if not value > 0 or (sep and not math.isfinite(value)):
            raise HatRayError(f"--device {spec!r}: the limit must be a positive number; write {_DEVICE_FORM}")
        out.append((name, value, unit))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise HatRayError("--device lists a device twice: give one limit per device")
    return out


def limits_in_ms(devices: list[tuple[str, float, str]], predictors: dict[str, Any]) -> list[tuple[str, float]]:
    """(device, limit in ms): a limit in reference units times the device predictor's calibration."""
    out = []
    for name, value, unit in devices:
        if unit == "ref":
            predictor = predictors[name]
            if getattr(predictor, "unit", "ms") != "ref":
                raise HatRayError(f"--device {name}:{value:g}ref: the predictor for {name} is in ms (fit on data of "
                                  "the sequential protocol); give the limit in ms, or fit the predictor on data "
                                  "collected with --protocol reference")
            value = predictor.to_ms(value)
        out.append((name, value))
    return out


def engine_options(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(**{f.name: getattr(args, f.name) for f in fields(EngineOptions)})


def _check(args: argparse.Namespace) -> None:
    if args.scorers < 1:
        raise HatRayError(f"--scorers must be at least 1, got {args.scorers}")
    if args.threads < 1:
        raise HatRayError(f"--threads must be at least 1, got {args.threads}")
    if args.scorer_slots < 1:
        raise HatRayError(f"--scorer-slots must be at least 1, got {args.scorer_slots}")
    if args.budget is not None and args.budget < 1:
        raise HatRayError(f"--budget must be positive, got {args.budget}")
    if args.measure_top < 0:
        raise HatRayError(f"--measure-top must be 0 (off) or a positive number of candidates, got {args.measure_top}")
    if ENGINES[args.algorithm].needs_limit and not args.device:
        raise HatRayError("give at least one --device PROFILE:LIMIT_MS (or use --algorithm "
                          + " / ".join(n for n, e in ENGINES.items() if not e.needs_limit) + ")")
    problems = engine_options(args).problems(args.algorithm, prefix="--")
    if problems:
        raise HatRayError("; ".join(p.replace("_", "-") for p in problems))


def _run(args: argparse.Namespace) -> int:
    _check(args)
    devices = parse_devices(args.device)
    from hat_ray.cluster import check_address, connect

    if args.address:
        check_address(args.address)  # before minutes of loading
    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.inputs import load_predictors, load_supernet, validation_batches
    from hat_ray.search.result import SearchFolder
    from hat_ray.search.run import SearchOptions, measurement_profiles, run_search
    from hat_ray.search.scorer import pack_batches, pack_weights

    SearchFolder(args.out).check(args.resume)  # before minutes of loading
    # --measure-top: the devices' profiles, checked before anything is loaded
    profiles = list(measurement_profiles(Constraints([Constraint(d, math.inf, None) for d, _, _ in devices]),
                                         args.measure_top).values())

    model, space, ckpt = load_supernet(args.supernet)
    predictors = load_predictors(args.predictor, [d for d, _, _ in devices], space)
    limits = limits_in_ms(devices, predictors)
    constraints = Constraints([Constraint(d, limit, predictors[d], args.margin) for d, limit in limits])
    batches = validation_batches(ckpt, args.data, args.data_dir, space.super.max_positions, args.max_tokens,
                                 args.valid_sentences, source=args.supernet)
    options = SearchOptions(algorithm=args.algorithm, budget=args.budget, scorers=args.scorers, seed=args.seed,
                            threads_per_scorer=args.threads, scorer_slots=args.scorer_slots, use_gpu=args.gpu, engine_kwargs=engine_options(args).kwargs(args.algorithm),
                            measure_top=args.measure_top)
    info = {"supernet": str(args.supernet), "devices": [[d, lim if math.isfinite(lim) else None] for d, lim in limits],
            "limits": [[d, f"{v:g}ref" if unit == "ref" else (v if math.isfinite(v) else None)] for d, v, unit in devices],
            "data": args.data, "valid_sentences": args.valid_sentences, "max_tokens": args.max_tokens,
            "valid_batches": len(batches)}
    weights, packed = pack_weights(model), pack_batches(batches)
    if args.resume:  # refuse a resume that would mix scores before starting Ray
        SearchFolder(args.out).check_resume(options.fingerprint(weights, packed, constraints, info), resume=True)
    import ray

    from hat_ray.cli.common import stdout_to_stderr

    with stdout_to_stderr():  # Ray and Tune print progress; stdout is for the result only
        started = connect(args.address, profiles=profiles)  # declares local devices' resources
        try:
            result = run_search(space, weights, packed, constraints, args.out, options,
                                resume=args.resume, run_info=info, profiles=profiles)
        finally:
            if started:
                ray.shutdown()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        best = result["best"]
        lat = ", ".join(f"{d} {ms:.1f} ms" for d, ms in best["predicted_ms"].items())
        print(f"best of {result['evaluations']} evaluations: valid loss {best['valid_loss']:.4f} bits, {lat}, "
              f"{best['params'] / 1e6:.2f} M params -> {args.out}/result.json")
        for device, m in result.get("measured", {}).get("per_device", {}).items():
            if m.get("n"):
                print(f"top {m['n']} re-measured on {device}: MAPE {m['mape']:.1f}% of the prediction, max error "
                      f"{m['max_abs_err_ms']:.1f} ms, {m['over_limit']} over the limit")
    return 0
