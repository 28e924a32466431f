"""Benchmark: SuperTransformer training recipes at equal CPU cost, run as a sweep (not in CI).

``train_multi30k.py`` answers one question per 85-minute run on this machine's 2 cores. This
sweep answers many at once, on any device (a GPU runs ~a dozen variants in parallel in minutes):
each variant trains for the number of updates that the 2-core machine fits in ``--cpu-minutes``
(per-update CPU costs from the recorded 40-minute run, ``results/train_multi30k_40min_supernet_plain.json``:
1.81 s for an update at the largest / plain size, 1.30 s on average for a HAT-sampled Arch), then reports validation loss
and greedy SacreBLEU of its largest, dense and smallest Arch on Multi30k's VALIDATION split (what a
recipe is chosen on: ``chosen_on_valid`` in the JSON, best mean over seeds of the largest Arch's
validation SacreBLEU; ``chosen_on_valid_loss``: best mean validation loss of its largest and
smallest Arch) and on test2016 and the untouched test2017 flickr / mscoco and test2018 flickr
splits (reported only, issue 20). Same data, subword
model (trained once), batches, loss, optimizer and schedule as ``train_multi30k.py``.

Variants (``--variants``, comma-separated; ``NAME@SEED`` for another seed):

- ``plain``: ``torch.nn.Transformer`` of the largest size (the baseline); ``plain_d01``: dropout 0.1.
- ``uniform``: HAT's sampling (one uniform Arch per update).
- ``largest``: the largest Arch every update (the supernet code as a plain model: a check).
- ``p25`` / ``p50``: the largest Arch instead of the sample with chance 0.25 / 0.5.
- ``first25`` / ``first50`` / ``first75``: the largest Arch only for the first 25 / 50 / 75% of the CPU budget,
  then HAT's sampling (OFA's "largest first").
- ``uniform_d01``: HAT's sampling with dropout 0.1; ``uniform_lr2``: with lr 2e-3.

    python benchmarks/supernet_recipes.py --device cuda --jobs 12   # every variant, in parallel
    python benchmarks/supernet_recipes.py --variants plain,uniform --cpu-minutes 1 --test-limit 20
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from train_multi30k import ROOT, checked_conversion, dense_arch, plain_model

from hat_ray.data.datasets import load_split
from hat_ray.io import atomic_write
from hat_ray.model.transformer import build_super
from hat_ray.space import SearchSpace
from hat_ray.train.config import TrainConfig
from hat_ray.train.evaluate import sacre_bleu, translate
from hat_ray.train.run import DataOptions, prepare_data
from hat_ray.train.trainer import Trainer

log = logging.getLogger("recipes")
UNTOUCHED = ("test2017_flickr", "test2017_mscoco", "test2018_flickr")  # test sets nothing was tuned on (issue 20)
COSTS_FROM = ROOT / "benchmarks" / "results" / "train_multi30k_40min_supernet_plain.json"


def cpu_costs(path: Path = COSTS_FROM) -> tuple[float, float]:
    """CPU seconds per update (largest / plain size, HAT-sampled Arch) of a recorded 2-core run."""
    train = json.loads(path.read_text())["train"]
    return tuple(train[n]["seconds"] / train[n]["updates"] for n in ("plain", "supernet"))  # type: ignore[return-value]

# name -> (kind, largest_prob, largest_first_fraction, overrides)
VARIANTS = {
    "plain": ("plain", 0.0, 0.0, {}),
    "plain_d01": ("plain", 0.0, 0.0, {"dropout": 0.1}),
    "uniform": ("super", 0.0, 0.0, {}),
    "largest": ("super", 1.0, 0.0, {}),
    "p25": ("super", 0.25, 0.0, {}),
    "p50": ("super", 0.5, 0.0, {}),
    "first25": ("super", 0.0, 0.25, {}),
    "first50": ("super", 0.0, 0.5, {}),
    "first75": ("super", 0.0, 0.75, {}),
    "uniform_d01": ("super", 0.0, 0.0, {"dropout": 0.1}),
    "uniform_lr2": ("super", 0.0, 0.0, {"lr": 2e-3}),
}


def cpu_updates(kind: str, largest_prob: float, first: float, seconds: float) -> tuple[int, int]:
    """(updates, largest-only updates at the start) that the 2-core machine fits in ``seconds``."""
    largest, sampled = cpu_costs()
    if kind == "plain":
        return int(seconds / largest), 0
    head = int(first * seconds / largest)
    per = largest_prob * largest + (1 - largest_prob) * sampled
    return head + int((seconds - head * largest) / per), head


CTX: dict = {}  # set before the pool forks: children inherit it (the tokenizer need not pickle)


def run_variant(job: tuple[str, int]) -> dict:
    label, seed = job
    ctx = CTX
    name = label.split("@")[0]
    kind, prob, first, over = VARIANTS[name]
    torch.set_num_threads(ctx["threads"])
    space, data, args = ctx["space"], ctx["data"], ctx["args"]
    updates, head = cpu_updates(kind, prob, first, args.cpu_minutes * 60)
    cfg = TrainConfig(max_updates=10**9, max_tokens=args.max_tokens, lr=over.get("lr", args.lr),
                      warmup_updates=args.warmup, progress=False, tensorboard=False, log_every=10**9,
                      dropout=over.get("dropout"), seed=seed)
    vocab = data.tokenizer.vocab_size
    torch.manual_seed(seed)
    if kind == "plain":
        model = plain_model(space, vocab, over.get("dropout"))
        tr = Trainer(model, space, cfg.replace(mode="subnet"), data.train, data.valid, device=args.device)
    else:
        model = build_super(space, vocab, vocab, seed=seed)
        tr = Trainer(model, space, cfg.replace(largest_prob=prob, largest_first=head), data.train, data.valid,
                     device=args.device)
    start = time.perf_counter()
    losses = []
    for u in range(1, updates + 1):
        losses.append(tr.train_step()["loss"])
        if u % 250 == 0:
            log.info("%s: update %d/%d, %.0f s", label, u, updates, time.perf_counter() - start)
    train_s = time.perf_counter() - start
    valid = tr.validate()
    model = tr.model.cpu()
    test, valid_pairs = ctx["test"], ctx["valid_pairs"]
    if kind == "plain":
        jobs = {"plain": (checked_conversion(model, test, data.tokenizer, space), dense_arch(space))}
    else:
        jobs = {a: (model, arch) for a, arch in
                (("largest", space.largest()), ("dense", dense_arch(space)), ("smallest", space.smallest()))}

    def bleu_on(pairs: Any) -> dict[str, float]:
        return {a: sacre_bleu(translate(m, arch, data.tokenizer, pairs.src, 1), pairs.tgt)[0] for a, (m, arch) in jobs.items()}

    out = {"variant": label, "seed": seed, "updates": updates, "largest_first_updates": head, "train_s": train_s,
           "train_loss_last100": float(np.mean(losses[-100:])), "valid": valid, "sacrebleu_valid": bleu_on(valid_pairs),
           "sacrebleu": bleu_on(test),  # test2016 (flickr)
           "sacrebleu_untouched": {split: bleu_on(pairs) for split, pairs in ctx["untouched"].items()}}
    log.info("%s", json.dumps(out))
    return out


def chosen_on_valid(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The recipe with the best mean (over seeds) validation SacreBLEU of its largest Arch (the
    plain model's own): chosen without looking at a test set."""
    by_recipe: dict[str, list[float]] = {}
    for r in results:
        bleu = r.get("sacrebleu_valid")
        if bleu is None:  # recorded before validation SacreBLEU was
            continue
        by_recipe.setdefault(r["variant"].split("@")[0], []).append(bleu.get("largest", bleu.get("plain")))
    means = {k: round(float(np.mean(v)), 2) for k, v in by_recipe.items()}
    return {"recipe": max(means, key=means.get) if means else None, "mean_valid_sacrebleu_largest": means}


def chosen_on_valid_loss(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The supernet recipe with the lowest mean (over seeds) VALIDATION loss averaged over its largest
    and smallest Arch (a supernet serves the whole space, so both ends count), with each recipe's
    means and seed spread. Only recipes that train a weight-shared supernet compete: ``largest``
    leaves every smaller Arch untrained and ``plain*`` are baselines. Needs no SacreBLEU, so it
    also re-reads sweeps recorded before validation SacreBLEU was (``--choose-from``)."""
    by_recipe: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        name, valid = r["variant"].split("@")[0], r["valid"]
        if VARIANTS[name][0] == "super" and VARIANTS[name][1] < 1.0 and "valid_loss_smallest" in valid:
            by_recipe.setdefault(name, []).append((valid["valid_loss_largest"], valid["valid_loss_smallest"]))
    table = {}
    for name, pairs in by_recipe.items():
        both = [(a + b) / 2 for a, b in pairs]
        table[name] = {"seeds": len(pairs), "mean_valid_loss": round(float(np.mean(both)), 3),
                       "sd_valid_loss": round(float(np.std(both, ddof=1)), 3) if len(both) > 1 else None,
                       "largest": round(float(np.mean([a for a, _ in pairs])), 3),
                       "smallest": round(float(np.mean([b for _, b in pairs])), 3)}
    best = min(table, key=lambda k: table[k]["mean_valid_loss"]) if table else None
    return {"recipe": best, "criterion": "mean over seeds of (largest + smallest Arch validation loss) / 2, bits",
            "recipes": dict(sorted(table.items(), key=lambda kv: kv[1]["mean_valid_loss"]))}


def test_sets(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A result's SacreBLEU per test set and Arch: test2016 and the untouched sets (absent from
    sweeps recorded before they were scored)."""
    return {"test2016": result["sacrebleu"], **result.get("sacrebleu_untouched", {})}


def test_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe and Arch, SacreBLEU on each test set (test2016 and the untouched ones): mean and
    sd over the seeds run (reported, never chosen on). Results without the untouched sets (older
    sweeps) count for test2016 only."""
    runs: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in results:
        sets = test_sets(r)
        recipe = runs.setdefault(r["variant"].split("@")[0], {})
        for split, by_arch in sets.items():
            for arch, bleu in by_arch.items():
                recipe.setdefault(arch, {}).setdefault(split, []).append(bleu)
    return {recipe: {arch: {split: {"seeds": len(v), "mean": round(float(np.mean(v)), 2),
                                    "sd": round(float(np.std(v, ddof=1)), 2) if len(v) > 1 else None}
                            for split, v in splits.items()} for arch, splits in archs.items()}
            for recipe, archs in runs.items()}


def paired_with_plain(results: list[dict[str, Any]], arch: str = "largest") -> dict[str, Any]:
    """Per supernet recipe, its ``arch``'s SacreBLEU minus the plain model's of the same seed, on
    each test set: the seeds paired, mean and sd of the difference, how many pairs the supernet
    wins, and the ratio of the means (the >= 0.9x target). Seeds only one side ran are left out."""
    by_seed: dict[str, dict[str, dict[str, float]]] = {}  # recipe -> seed -> test set -> SacreBLEU
    for r in results:
        name, _, seed = r["variant"].partition("@")
        model = "plain" if name == "plain" else arch
        sets = test_sets(r)
        scores = {split: by_arch[model] for split, by_arch in sets.items() if model in by_arch}
        if scores and (name == "plain" or VARIANTS[name][0] == "super"):
            by_seed.setdefault(name, {})[seed or "1"] = scores
    plain, table = by_seed.pop("plain", {}), {}
    for name, seeds in by_seed.items():
        for seed in sorted(set(seeds) & set(plain)):
            for split in sorted(set(seeds[seed]) & set(plain[seed])):
                table.setdefault(name, {}).setdefault(split, []).append((seeds[seed][split], plain[seed][split]))
    return {name: {split: {"seeds": len(pairs),
                           "mean_diff": round(float(np.mean([a - b for a, b in pairs])), 2),
                           "sd_diff": round(float(np.std([a - b for a, b in pairs], ddof=1)), 2)
                           if len(pairs) > 1 else None,
                           "wins": sum(a > b for a, b in pairs),
                           "ratio_of_means": round(float(np.mean([a for a, _ in pairs]) /
                                                         np.mean([b for _, b in pairs])), 3)}
                   for split, pairs in splits.items()} for name, splits in table.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--choose-from", type=Path, metavar="JSON",
                    help="train nothing: print the recipe a recorded sweep's validation losses choose, "
                         "its test SacreBLEU per recipe (mean, sd over seeds) and the largest Arch "
                         "minus the plain model of the same seed")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cpu-minutes", type=float, default=40.0, help="the 2-core budget each variant's updates match")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="variants trained at once (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--test-limit", type=int, help="score only the first N test sentences (smoke runs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "supernet_recipes.json"))
    ap.add_argument("--add", action="store_true",
                    help="keep the results already in --out and train only the variants not there yet")
    args = ap.parse_args()
    if args.choose_from:
        try:
            recorded = json.loads(args.choose_from.read_text())["results"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            ap.error(f"--choose-from {args.choose_from}: not a sweep's JSON ({exc})")
        print(json.dumps({"chosen_on_valid_loss": chosen_on_valid_loss(recorded),
                          "test_sacrebleu": test_summary(recorded),
                          "largest_minus_plain": paired_with_plain(recorded)}, indent=2))
        return
    if args.test_limit is not None and args.test_limit < 8:
        ap.error(f"--test-limit must be >= 8 (the plain model's conversion is checked on 8 test sentences), "
                 f"got {args.test_limit}")
    labels = [v for v in args.variants.split(",") if v]
    unknown = [v for v in labels if v.split("@")[0] not in VARIANTS]
    if not labels or unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)} (NAME@SEED for another seed)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results, out = [], Path(args.out)
    if args.add and out.exists():  # a sweep run in parts (e.g. a seed per session on a CPU)
        try:
            results = json.loads(out.read_text())["results"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            ap.error(f"--add: {out} is not a sweep's JSON ({exc}); give another --out")
        done = {r["variant"] for r in results}
        log.info("--add: keeping %d results of %s; skipping %s", len(results), out, sorted(done & set(labels)) or "none")
        labels = [v for v in labels if v not in done]
    if not labels:
        log.info("every variant asked for is already in %s", out)
        return
    space = SearchSpace.load("demo")
    data = prepare_data(DataOptions("multi30k", args.data_dir, vocab_size=args.vocab_size), space.super.max_positions)
    test = load_split("multi30k", "test", args.data_dir)
    valid_pairs = load_split("multi30k", "valid", args.data_dir)
    untouched = {split: load_split("multi30k", split, args.data_dir) for split in UNTOUCHED}
    if args.test_limit:
        test, valid_pairs = test.subset(range(args.test_limit)), valid_pairs.subset(range(args.test_limit))
        untouched = {split: pairs.subset(range(args.test_limit)) for split, pairs in untouched.items()}
    CTX.update(space=space, data=data, test=test, valid_pairs=valid_pairs, untouched=untouched, args=args,
               threads=args.threads)
    jobs = [(label, int(label.split("@")[1]) if "@" in label else 1) for label in labels]
    out.parent.mkdir(parents=True, exist_ok=True)
    # fork: the children inherit the prepared data; CUDA is first touched in a child
    with mp.get_context("fork").Pool(min(args.jobs, len(jobs))) as pool:
        for res in pool.imap_unordered(run_variant, jobs):
            results.append(res)
            text = json.dumps({"args": vars(args), "device":
                               torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                               "chosen_on_valid": chosen_on_valid(results),
                               "chosen_on_valid_loss": chosen_on_valid_loss(results),
                               "results": sorted(results, key=lambda r: r["variant"])}, indent=2)
            atomic_write(out, lambda tmp, text=text: Path(tmp).write_text(text))  # earlier results survive a kill
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
