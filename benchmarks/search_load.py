"""Load: a search of 2,000 candidates on a tiny SuperTransformer, watched for memory and leaks.

Runs ``run_search`` (random search, budget N, K scorer actors) on a local Ray instance started
here, with a tiny random SuperTransformer (width 32, 3+3 layers) and a FLOPs-proportional latency
limit, so the cost is the system's own (Tune trials, the pool, the evaluation log), not the
model's. Reports:

- the driver's RSS (psutil) at the start of the search, every ``--every`` evaluations and at
  the end, its growth in MB, and the evaluation rate per block (a slowdown would show there);
- actors: before ``ray.shutdown()`` every actor of the run listed by Ray's state API (dashboard,
  bound to 127.0.0.1) must be DEAD (trial actors, scorers, the pool dispatcher);
- processes: every descendant process of the driver (raylet, GCS, workers) must be gone a few
  seconds after ``ray.shutdown()``.

    nice python benchmarks/search_load.py [--candidates 2000] [--scorers 2] [--every 250]
        [--out runs/search_load] [--json benchmarks/results/search_load.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from hat_ray.data.batching import Batch
from hat_ray.model.accounting import count_flops
from hat_ray.model.transformer import build_super
from hat_ray.space import SearchSpace
from hat_ray.tokens import EOS, PAD

TINY = {
    "name": "tiny",
    "super": {"encoder_embed_dim": 32, "decoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
              "decoder_ffn_embed_dim": 64, "encoder_layers": 3, "decoder_layers": 3,
              "encoder_attention_heads": 4, "decoder_attention_heads": 4, "qkv_dim": 32,
              "share_embeddings": True, "dropout": 0.1, "attention_dropout": 0.0, "max_positions": 64,
              "seq_len": 10},
    "choices": {"encoder_embed_dim": [32, 24], "decoder_embed_dim": [32, 24], "encoder_layers": [3],
                "decoder_layers": [1, 2, 3], "encoder_ffn_embed_dim": [64, 48, 32],
                "decoder_ffn_embed_dim": [64, 48, 32], "encoder_self_attention_heads": [4, 2],
                "decoder_self_attention_heads": [4, 2], "decoder_ende_attention_heads": [4, 2],
                "decoder_arbitrary_ende_attn": [-1, 1, 2]},
}
VOCAB = 40
MB = 1024**2


class FlopsPredictor:
    """Latency ~ FLOPs (ms), 3% uncertainty: a stand-in for a fitted predictor."""

    def predict_with_uncertainty(self, archs):
        mean = np.array([count_flops(a, 32, 10) / 2e4 for a in archs])
        return mean, 0.03 * mean


def batches(n: int = 3, b: int = 4, s: int = 9, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        src = torch.randint(4, VOCAB, (b, s), generator=g)
        src[0, :3] = PAD
        src[:, -1] = EOS
        target = torch.randint(4, VOCAB, (b, s), generator=g)
        target[:, -1] = EOS
        prev = torch.cat([torch.full((b, 1), EOS), target[:, :-1]], dim=1)
        out.append(Batch(src, prev, target, int(target.ne(PAD).sum()), np.arange(b)))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssWatcher(threading.Thread):
    """Samples the driver's RSS each time the evaluation log crosses a multiple of ``every``."""

    def __init__(self, log: Path, every: int, started: float) -> None:
        super().__init__(daemon=True)
        self.log, self.every, self.started = log, every, started
        self.proc = psutil.Process()
        self.points: list[dict[str, float]] = []
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()

    def evaluations(self) -> int:
        try:
            return self.log.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def run(self) -> None:
        mark = self.every
        while not self.stop.wait(0.5):
            rss = self.proc.memory_info().rss
            self.peak = max(self.peak, rss)
            n = self.evaluations()
            while n >= mark:
                self.points.append({"evaluations": mark, "rss_mb": round(rss / MB, 1),
                                    "seconds": round(time.time() - self.started, 1)})
                mark += self.every


def actors_by_state(address: str | None) -> dict[str, Any]:
    """Every actor of the cluster by class and state, from Ray's state API (the dashboard; the
    GCS table when the dashboard does not answer)."""
    import ray
    from ray.util.state import list_actors

    try:
        rows = [(a.class_name, a.state, a.name or "") for a in
                list_actors(address=address, limit=10_000, timeout=60, raise_on_missing_output=False)]
        source = "ray.util.state.list_actors"
    except Exception as exc:  # noqa: BLE001 - report where the figure came from instead
        logging.warning("state API unavailable (%s): reading the GCS actor table", exc)
        rows = [(a["ActorClassName"], a["State"], a.get("Name") or "") for a in ray._private.state.actors().values()]
        source = "GCS actor table"
    table: dict[str, dict[str, int]] = {}
    for cls, state, _ in rows:
        table.setdefault(cls, {}).setdefault(state, 0)
        table[cls][state] += 1
    alive = sorted(f"{cls} {name}".strip() for cls, state, name in rows if state != "DEAD")
    return {"source": source, "total": len(rows), "by_class": table, "alive": alive}


def run(candidates: int, scorers: int, every: int, out: Path, limit_ms: float, seed: int) -> dict[str, Any]:
    import ray

    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.run import SearchOptions, run_search
    from hat_ray.search.scorer import pack_batches, pack_weights

    torch.set_num_threads(1)
    if out.exists():
        shutil.rmtree(out)
    space = SearchSpace.from_dict(TINY)
    weights = pack_weights(build_super(space, VOCAB, seed=0).eval())
    packed = pack_batches(batches())
    port = free_port()
    info = ray.init(num_cpus=scorers + 1, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                    log_to_driver=False, configure_logging=False)
    webui = info.address_info.get("webui_url") or f"127.0.0.1:{port}"
    dashboard = webui if webui.startswith("http") else f"http://{webui}"
    me = psutil.Process()
    rss_start = me.memory_info().rss
    started = time.time()
    watcher = RssWatcher(out / "evaluations.jsonl", every, started)
    watcher.start()
    options = SearchOptions(algorithm="random", budget=candidates, scorers=scorers, seed=seed)
    try:
        result = run_search(space, weights, packed, Constraints([Constraint("flops", limit_ms, FlopsPredictor())]),
                            out, options)
    finally:
        watcher.stop.set()
        watcher.join()
    wall = time.time() - started
    rss_end = me.memory_info().rss
    time.sleep(2.0)  # let Ray record the last actor deaths
    actors = actors_by_state(dashboard)
    children = me.children(recursive=True)
    ray.shutdown()
    _, alive = psutil.wait_procs(children, timeout=20)
    points = watcher.points
    blocks = [{"evaluations": q["evaluations"], "per_s": round(every / max(q["seconds"] - p["seconds"], 1e-9), 2)}
              for p, q in zip([{"seconds": 0.0}, *points], points)]
    return {
        "candidates": candidates, "scorers": scorers, "evaluations": result["evaluations"],
        "failed": result["failed"], "scorer_retries": result["scorer_retries"], "wall_seconds": round(wall, 1),
        "evaluations_per_s": round(result["evaluations"] / wall, 2),
        "rss_mb": {"start": round(rss_start / MB, 1), "end": round(rss_end / MB, 1),
                   "peak": round(watcher.peak / MB, 1), "growth": round((rss_end - rss_start) / MB, 1),
                   "growth_after_first_block": round((rss_end / MB - points[0]["rss_mb"]) if points else 0.0, 1)},
        "rss_every": points, "rate_per_block": blocks,
        "actors_before_shutdown": actors, "actors_alive_before_shutdown": len(actors["alive"]),
        "ray_processes_after_shutdown": len(children), "leaked_processes": [p.pid for p in alive],
        "load_1m": round(psutil.getloadavg()[0], 2), "cpus": psutil.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--scorers", type=int, default=2)
    parser.add_argument("--every", type=int, default=250, help="RSS sample every N evaluations")
    parser.add_argument("--limit-ms", type=float, default=30.0, help="latency limit (FLOPs / 2e4 ms)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/search_load")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    figures = run(args.candidates, args.scorers, args.every, Path(args.out), args.limit_ms, args.seed)
    text = json.dumps(figures, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
