"""Fault injection: what a multi-day NAS run on failing machines must survive.

Already covered elsewhere (not repeated here): a device node removed mid-collection with its work
finished on the device's other node, and losing every node of a device with the rows kept
(test_latency_cluster.py); the search driver SIGKILLed and ``--resume``'d with no lost or
duplicated evaluation (test_search_cli.py); an in-process crash / Ctrl-C of training resumed
bit-identically (test_train_resume.py).

Here, on one simulated cluster (``ray.cluster_utils.Cluster``: a head and device nodes):
  (a) latency collection: a device node replaced mid-run, then every node lost, then a node of
      that device rejoins and the re-run resumes: every Arch measured exactly once;
  (b) a scorer actor killed mid-search: its candidate is retried, the search completes, and its
      evaluations (arch -> loss) equal an undisturbed run's with the same seed;
and without Ray:
  (c) the training driver SIGKILLed (a real process kill), then ``--resume``: same updates, same
      final weights and Adam state as an uninterrupted run;
  (d) damaged files: a truncated checkpoint_last.pt resumes from checkpoint_prev.pt (the previous
      good full state) with the same final weights as an undisturbed run; with no good previous
      one, and for a truncated latency dataset, predictor and journal: clear errors naming the
      file, nothing deleted;
  (e) atomic writes: every output is written through a temp file + rename (a failed rename
      leaves the previous file intact and no temp file behind), checked by behaviour and by a
      scan of the package's write calls.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from search_helpers import FakePredictor, random_batches, tiny_space, tiny_super
from tiny_space import tiny_space_dict

from hat_ray.errors import DataError, DeviceError, OutputError
from hat_ray.latency import DeviceProfile, LatencyDataset
from hat_ray.space import SearchSpace

pytestmark = pytest.mark.timeout(900)  # generous: on a loaded 2-core machine the Ray tests take minutes
PKG = Path(__file__).resolve().parents[1] / "hat_ray"


# ---------------------------------------------------------------------------------------------
# the cluster: a head (CPUs for scorers) and two nodes of device "delta"
# ---------------------------------------------------------------------------------------------
def tiny_profile(name: str, resource: str) -> DeviceProfile:
    """local_cpu with a minimal protocol: these tests check placement and faults, not timing."""
    data = DeviceProfile.load("local_cpu").to_dict()
    data.update(name=name, ray={"resource": resource, "label": {}, "num_cpus": 1})
    data["protocol"].update(warmup=0, runs=1, max_runs=1, tgt_len=2, vocab=64, min_cpu_share=0.0, max_attempts=1)
    return DeviceProfile.from_dict(data)


DELTA = tiny_profile("delta", "device:delta")


@pytest.fixture(scope="module")
def cluster(ray_cluster_factory):
    c = ray_cluster_factory(head_cpus=3)
    nodes = [c.add_node(num_cpus=1, resources={"device:delta": 1}) for _ in range(2)]
    c.wait_for_nodes()
    return c, nodes


def _archs(n: int, seed: int = 11) -> list:
    space = SearchSpace.load("demo")
    rng = np.random.default_rng(seed)
    return list({a.key(): a for a in (space.sample(rng) for _ in range(4 * n))}.values())[:n]


def _check_rows(out: Path, archs: list) -> LatencyDataset:
    data = LatencyDataset.load(out)
    assert not data.frame.duplicated(subset=["arch_key", "device"]).any()  # nothing measured twice
    assert set(data.frame["arch_key"]) <= {a.key() for a in archs}
    return data


# ---------------------------------------------------------------------------------------------
# (a) latency collection: node replaced, node lost, node rejoins
# ---------------------------------------------------------------------------------------------
def test_collection_survives_node_loss_and_resumes_when_a_node_rejoins(cluster, tmp_path):
    from hat_ray.latency.probe import collect

    c, (n1, n2) = cluster
    space, out = SearchSpace.load("demo"), tmp_path / "lat.parquet"
    archs = _archs(16)

    # 1. a node joins mid-run and the only other node of the device goes away: the collection
    #    moves to the newcomer within the same run
    joined: list = []

    def replace(device: str, done: int, total: int) -> None:
        if done == 2 and not joined:
            joined.append(c.add_node(num_cpus=1, resources={"device:delta": 1}))
            c.wait_for_nodes()
            c.remove_node(n1)
            c.remove_node(n2)

    first = collect(archs[:6], [DELTA], space, out, progress=replace)
    data = _check_rows(out, archs)
    assert first.measured == {"delta": 6} and len(data) == 6
    assert first.lost_nodes["delta"] and set(first.lost_nodes["delta"]) <= {n1.node_id, n2.node_id}
    assert joined[0].node_id in set(data.frame["node_id"])  # the newcomer took over

    # 2. every node of the device is lost mid-run: a clear error, every finished row kept
    def lose_all(device: str, done: int, total: int) -> None:
        if done == 3:
            c.remove_node(joined[0])

    with pytest.raises(DeviceError, match="every node of device delta was lost"):
        collect(archs, [DELTA], space, out, progress=lose_all)
    kept = _check_rows(out, archs)
    assert 6 + 3 <= len(kept) < 16

    # 3. a node of that device rejoins: the re-run resumes where the collection stopped
    back = c.add_node(num_cpus=1, resources={"device:delta": 1})
    c.wait_for_nodes()
    resumed = collect(archs, [DELTA], space, out)
    final = _check_rows(out, archs)
    assert resumed.skipped == {"delta": len(kept)} and resumed.measured == {"delta": 16 - len(kept)}
    assert len(final) == 16 and set(final.frame["arch_key"]) == {a.key() for a in archs}  # none lost
    assert set(final.frame["node_id"].iloc[len(kept):]) == {back.node_id}
    assert not (tmp_path / "lat.parquet.journal").exists()  # folded into the Parquet file


# ---------------------------------------------------------------------------------------------
# (b) a scorer actor killed during a search
# ---------------------------------------------------------------------------------------------
def _limit(ms: float):
    from hat_ray.search.constraints import Constraint, Constraints

    return Constraints([Constraint("fake", ms, FakePredictor())])


def _alive_scorers() -> list[tuple[str, str]]:
    import ray

    return [(a["name"], a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
            if "-scorer-" in a["name"]]


EVOLUTION = dict(population=6, parents=2, mutations=2, crossovers=2, iterations=3)


def _undisturbed(seed: int) -> tuple[dict, str]:
    """The same search without Ray, Tune or faults: the engine driven generation by generation,
    every candidate scored in this process on the same packed weights and batches. Returns
    ({arch key: loss}, best key)."""
    from hat_ray.search.evolution import make_engine
    from hat_ray.search.scorer import Scorer, pack_batches, pack_weights, unpack_batches, unpack_weights

    engine = make_engine("hat", tiny_space(), _limit(30), seed, None, **EVOLUTION)
    scorer = Scorer(unpack_weights(pack_weights(tiny_super())), unpack_batches(pack_batches(random_batches())))
    losses: dict[str, float] = {}
    while not engine.finished:
        asked = list(iter(engine.ask, None))  # one generation (ask returns None at the barrier)
        for arch in asked:
            losses[arch.key()] = scorer.score(arch).loss
            engine.tell(arch, losses[arch.key()])
    return losses, engine.best()[0].key()


def _search(out: Path, seed: int, kill_after: int | None = None) -> tuple[dict, dict, list]:
    """A seeded tiny search; with ``kill_after``, one scorer is ray.kill'ed once that many
    evaluations are logged. Returns (result, {arch key: loss}, names of killed scorers)."""
    import ray

    from hat_ray.search.run import SearchOptions, run_search
    from hat_ray.search.scorer import pack_batches, pack_weights
    from hat_ray.search.searcher import read_log

    options = SearchOptions(algorithm="hat", scorers=2, seed=seed, engine_kwargs=EVOLUTION)
    killed: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        log = out / "evaluations.jsonl"
        while not stop.is_set():
            if log.exists() and len(read_log(log)) >= kill_after:
                name, namespace = _alive_scorers()[0]
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
                killed.append(name)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True) if kill_after else None
    if thread:
        thread.start()
    try:
        result = run_search(tiny_space(), pack_weights(tiny_super()), pack_batches(random_batches()), _limit(30),
                            out, options)
    finally:
        stop.set()
        if thread:
            thread.join()
    losses = {e["key"]: e["valid_loss"] for e in read_log(out / "evaluations.jsonl")}
    return result, losses, killed


def test_killed_scorer_is_replaced_and_results_match_an_undisturbed_run(cluster, tmp_path):
    calm_losses, calm_best = _undisturbed(seed=5)
    hit, hit_losses, killed = _search(tmp_path / "hit", seed=5, kill_after=4)
    assert killed, "no scorer was killed"
    assert hit["scorer_retries"] >= 1  # the killed scorer's candidate ran again on another one
    assert len(hit_losses) == hit["evaluations"] == len(calm_losses) == 6 + 2 * 4
    assert hit_losses == calm_losses  # same Archs, same losses, nothing lost or scored twice
    assert hit["best"]["key"] == calm_best
    assert all(v is not None for v in hit_losses.values())  # no candidate recorded as failed
    assert not _alive_scorers()  # the pool and its (replacement) scorers are gone


# ---------------------------------------------------------------------------------------------
# (c) the training driver SIGKILLed mid-run, then --resume
# ---------------------------------------------------------------------------------------------
TRAIN_ARGS = ["--max-updates", "15", "--max-tokens", "300", "--warmup-updates", "2", "--vocab-size", "300",
              "--save-every", "3", "--validate-every", "6", "--threads", "1", "--no-progress", "--no-tensorboard",
              "--seed", "3"]


@pytest.fixture(scope="module")
def train_env(tmp_path_factory):
    from hat_ray.data.synthetic import synthetic_split

    root = tmp_path_factory.mktemp("faults_train")
    (root / "tiny.yaml").write_text(yaml.safe_dump(tiny_space_dict()))
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 300), ("valid", 20)):
        c = synthetic_split(split, size=n)
        (data / f"{split}.src").write_text("\n".join(c.src) + "\n")
        (data / f"{split}.tgt").write_text("\n".join(c.tgt) + "\n")
    return root


def _train_cmd(env: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hat_ray.cli.main", "train", "supernet", "--space", str(env / "tiny.yaml"),
            "--data", str(env / "data"), "--out", str(out), *TRAIN_ARGS, *extra]


def _updates(out: Path) -> list[int]:
    path = out / "train_log.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line)["update"])
        except json.JSONDecodeError:
            pass  # a torn last line while the writer is running
    return rows


def test_sigkilled_training_resumes_without_repeating_or_losing_updates(train_env, tmp_path):
    from hat_ray.checkpoint import load_checkpoint
    from hat_ray.cli.main import main

    straight = tmp_path / "straight"  # uninterrupted (in-process: same code, same single thread)
    assert main(_train_cmd(train_env, straight)[3:]) == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(train_env, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(_updates(out)) < 5:
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler, no final save: a power cut
        proc.wait()
    done = len(_updates(out))
    assert 5 <= done < 15
    saved = load_checkpoint(out / "checkpoint_last.pt")["progress"]["update"]
    assert saved % 3 == 0 and saved <= done  # the last periodic checkpoint survived intact

    resumed = subprocess.run(_train_cmd(train_env, out, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _updates(out) == list(range(1, 16))  # every update logged once: none lost, none repeated

    a, b = load_checkpoint(straight / "checkpoint_last.pt"), load_checkpoint(out / "checkpoint_last.pt")
    assert a["progress"]["update"] == b["progress"]["update"] == 15
    assert a["progress"]["position"] == b["progress"]["position"] and a["progress"]["tokens"] == b["progress"]["tokens"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bit-identical weights
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) and torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])
               for i in sa)


def test_resume_drops_a_torn_log_line(tmp_path):
    """A driver killed mid-write leaves half a JSON line; the resume must not choke on it."""
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.logs import TrainLogger

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"update": u}) + "\n" for u in range(1, 6)) + '{"update": 6, "lo')
    TrainLogger(tmp_path, TrainConfig(max_updates=1), rank=0).truncate(4)
    assert [json.loads(x)["update"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# (d) partial or corrupted files
# ---------------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _train_args(train_env: Path, out: Path, updates: int) -> list[str]:
    args = ["train", "supernet", "--space", str(train_env / "tiny.yaml"), "--data", str(train_env / "data"),
            "--out", str(out), *TRAIN_ARGS]
    args[args.index("--max-updates") + 1] = str(updates)
    return args


def test_damaged_last_checkpoint_resumes_from_the_previous_good_one(train_env, tmp_path, caplog):
    from hat_ray.checkpoint import load_checkpoint
    from hat_ray.cli.main import main

    out = tmp_path / "run"
    assert main(_train_args(train_env, out, 6)) == 0  # saves at updates 3 and 6
    last, prev = out / "checkpoint_last.pt", out / "checkpoint_prev.pt"
    assert load_checkpoint(prev)["progress"]["update"] == 3
    damaged = last.read_bytes()[: last.stat().st_size * 2 // 3]  # a partial copy / disk error, not our write
    last.write_bytes(damaged)

    assert main([*_train_args(train_env, out, 9), "--resume"]) == 0
    err = caplog.text  # the CLI's log goes to stderr; pytest captures it here
    assert f"{last} is damaged" in err and "resuming from the previous checkpoint" in err and "(update 3)" in err
    assert (out / "checkpoint_last.damaged.pt").read_bytes() == damaged  # kept for inspection
    resumed = load_checkpoint(last)
    assert resumed["progress"]["update"] == 9
    logged = [json.loads(x)["update"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 10))  # updates 4-6 were redone once, not logged twice

    assert main(_train_args(train_env, tmp_path / "straight", 9)) == 0  # the same run, undisturbed
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint_last.pt")
    assert all(torch.equal(resumed["model"][k], v) for k, v in straight["model"].items())


def test_damaged_last_checkpoint_without_a_good_previous_is_reported_and_nothing_is_deleted(train_env, tmp_path,
                                                                                           capsys):
    from hat_ray.checkpoint import load_checkpoint
    from hat_ray.cli.main import main
    from hat_ray.train.state import numbered_checkpoints

    out = tmp_path / "run"
    assert main(_train_args(train_env, out, 6)) == 0
    last, prev = out / "checkpoint_last.pt", out / "checkpoint_prev.pt"
    for path in (last, prev):  # both damaged (e.g. the folder was copied half-way)
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    snapshots = numbered_checkpoints(out)
    assert [p.name for p in snapshots] == ["checkpoint_u0000003.pt", "checkpoint_u0000006.pt"]
    before = _tree(out)
    capsys.readouterr()

    assert main([*_train_args(train_env, out, 9), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hat-ray: error: ") and "Traceback" not in err
    assert f"{last} is corrupted" in err and "nothing was deleted" in err and "start a new run" in err
    assert _tree(out) == before  # the damaged files and every snapshot are still there, unchanged
    assert load_checkpoint(snapshots[-1])["progress"]["update"] == 6  # the snapshots still load


def test_truncated_dataset_journal_and_predictor_name_the_file(tmp_path):
    from search_helpers import write_fake_predictor

    from hat_ray.latency.dataset import JournalWriter, journal_path
    from hat_ray.latency.predictor import LatencyPredictor

    pred = tmp_path / "p.pred"
    write_fake_predictor(pred)
    whole = pred.read_bytes()
    pred.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=f"{pred} is not a hat-ray latency predictor or is corrupted"):
        LatencyPredictor.load(pred)

    out = tmp_path / "lat.parquet"
    records = [{"space": "demo", "device": "d", "arch_key": f"k{i}", "latency_ms": 1.0 + i,
                **{f: 1.0 for f in __import__("hat_ray.arch", fromlist=["x"]).FEATURE_NAMES}} for i in range(4)]
    with JournalWriter(out) as writer:
        for r in records:
            writer.append(r)
    journal = journal_path(out)
    torn = journal.read_bytes()[:-25]  # killed while writing the last record
    journal.write_bytes(torn)
    assert len(LatencyDataset.load(out)) == 3  # the torn record is dropped, the rest kept
    LatencyDataset.compact(out)
    assert len(LatencyDataset.load(out)) == 3 and not journal.exists()
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=f"{out} is not a readable Parquet latency dataset"):
        LatencyDataset.load(out)
    journal.write_text('{"arch_key": "k9"\n{"arch_key": "k8"}\n')  # damage before the last line
    out.unlink()
    with pytest.raises(DataError, match=f"journal {journal} is corrupted at line 1"):
        LatencyDataset.load(out)


# ---------------------------------------------------------------------------------------------
# (e) atomic writes
# ---------------------------------------------------------------------------------------------
def _writers(tmp_path: Path) -> dict[str, tuple[Path, object]]:
    """The main outputs of train / search / latency collect+fit / import-hat / evaluate: (path,
    a function writing a NEW version of it through the product code)."""
    from search_helpers import write_fake_predictor

    from hat_ray.checkpoint import make_checkpoint, save_checkpoint
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.search.evolution import RandomSearch
    from hat_ray.search.report import write_outputs
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.logs import TrainLogger

    space = tiny_space()
    write_fake_predictor(tmp_path / "src.pred")
    predictor = LatencyPredictor.load(tmp_path / "src.pred")
    data = LatencyDataset(_dataset_frame(space), source="t")
    engine = RandomSearch(space, _limit(1e9), seed=0, budget=3)
    for _ in range(3):
        engine.tell(engine.ask(), float(np.random.default_rng(0).uniform(3, 5)))
    (tmp_path / "search").mkdir(exist_ok=True)
    log = tmp_path / "log"
    log.mkdir(exist_ok=True)
    return {
        "checkpoint (train, import-hat)": (tmp_path / "c.pt", lambda: save_checkpoint(
            tmp_path / "c.pt", make_checkpoint(tiny_super(), space))),
        "latency predictor (fit)": (tmp_path / "p.pred", lambda: predictor.save(tmp_path / "p.pred")),
        "latency dataset (collect)": (tmp_path / "d.parquet", lambda: data.save(tmp_path / "d.parquet")),
        "HAT CSV export": (tmp_path / "d.csv", lambda: data.to_hat_csv(tmp_path / "d.csv")),
        "search result.json": (tmp_path / "search" / "result.json", lambda: write_outputs(
            tmp_path / "search", space, engine, _limit(1e9), {})),
        "train summary.json": (log / "summary.json", lambda: TrainLogger(
            log, TrainConfig(max_updates=1), 0).close({"update": 1})),
        "train log rewrite on resume": (log / "train_log.jsonl", lambda: TrainLogger(
            log, TrainConfig(max_updates=1), 0).truncate(1)),
    }


def _dataset_frame(space: SearchSpace):
    import pandas as pd

    from hat_ray.arch import FEATURE_NAMES

    rng = np.random.default_rng(0)
    rows = []
    for a in {space.sample(rng) for _ in range(5)}:
        rows.append({"space": space.name, "device": "d", "arch_key": a.key(), "arch": json.dumps(a.to_dict()),
                     "latency_ms": 2.0, "encoder_ms": 1.0, "decoder_ms": 1.0, **dict(zip(FEATURE_NAMES, a.features()))})
    return pd.DataFrame(rows)


def _failing_replace(target: Path, real_replace):
    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    return replace


def test_a_failed_rename_leaves_every_previous_output_intact(tmp_path, monkeypatch):
    writers = _writers(tmp_path)
    for what, (path, write) in writers.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "train_log.jsonl":
            path.write_text("".join(json.dumps({"update": u}) + "\n" for u in (1, 2, 3)))
        else:
            write()  # a first, good version
        good = path.read_bytes()
        real_replace = os.replace
        monkeypatch.setattr(os, "replace", _failing_replace(path, real_replace))
        with pytest.raises(OutputError, match=f"cannot write {path}: No space left on device"):
            write()  # the new version fails at the very end (disk full, killed, ...)
        monkeypatch.setattr(os, "replace", real_replace)
        assert path.read_bytes() == good, f"{what}: the previous file was damaged"
        leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
        assert not leftovers, f"{what}: temp files left behind: {leftovers}"


# Writes that are NOT temp+rename, each with the reason it is safe.
APPEND_ONLY = {
    ("search/searcher.py", "record_many"): "evaluation log: append + fsync per trial batch; a torn last line is skipped",
    ("search/searcher.py", "save"): "Tune writes searcher state into its own temp folder and renames it",
    ("latency/dataset.py", "__init__"): "JournalWriter: append + fsync per row; a torn last line is skipped",
    ("search/pool.py", "__init__"): "ScorerPool's score journal: append + flush per line; a torn last line is skipped",
    ("train/logs.py", "_append"): "train/valid logs: append per update; a resume rewrites them atomically",
    ("data/download.py", "ensure_cached"): "files are built in a .partial staging folder renamed when complete",
    ("data/download.py", "_write_pairs"): "called inside the .partial staging folder (see prepare)",
    ("data/download.py", "download_file"): "downloads go to dest.part, renamed after the checksum",
}
_WRITE_CALLS = {"write_text", "write_bytes", "to_parquet", "to_csv", "savefig", "save", "savez", "dump"}


def _write_sites(tree: ast.AST):
    """(enclosing function, call, inside an atomic_write argument?) for every write call."""
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    passed = {a.id for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "atomic_write"
              for a in n.args if isinstance(a, ast.Name)}  # def write(tmp): ...; atomic_write(path, write)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), None)
        mode = next((k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)), mode)
        is_open_write = name == "open" and isinstance(mode, str) and any(c in mode for c in "wax")
        if name not in _WRITE_CALLS and not is_open_write:
            continue
        if name in ("save", "dump", "savefig") and not _writes_a_file(node):
            continue
        atomic, func, up = False, None, parents.get(node)
        while up is not None:
            if isinstance(up, ast.Call) and getattr(up.func, "id", "") == "atomic_write":
                atomic = True
            if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func = func or up.name
                atomic = atomic or up.name in passed
            up = parents.get(up)
        yield func, node, atomic


def _writes_a_file(call: ast.Call) -> bool:
    """torch.save / np.save* / json.dump / fig.savefig to a path (not to an in-memory buffer)."""
    owner = getattr(getattr(call.func, "value", None), "id", "")
    if call.func.attr == "savefig":
        return not (call.args and getattr(call.args[0], "id", "") == "buf")
    return owner in ("torch", "np", "numpy", "json")


def test_every_output_write_goes_through_atomic_write_or_is_an_append_log():
    found, unsafe = set(), []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        for func, node, atomic in _write_sites(ast.parse(path.read_text(), filename=rel)):
            if atomic:
                found.add(rel)
            elif (rel, func) not in APPEND_ONLY:
                unsafe.append(f"hat_ray/{rel}:{node.lineno} in {func}()")
    assert unsafe == [], "writes outside atomic_write (use hat_ray.io.atomic_write): " + ", ".join(unsafe)
    # the scan does see the atomic writers of every command's outputs
    assert {"checkpoint.py", "latency/dataset.py", "latency/predictor_io.py", "search/report.py", "train/logs.py",
            "cli/evaluate_cmd.py"} <= found


# ---------------------------------------------------------------------------------------------
# load: many candidates, steady memory, nothing left behind (benchmarks/search_load.py, smaller)
# ---------------------------------------------------------------------------------------------
# Measured (benchmarks/results/search_load.json): the driver grows ~0.02 MB per evaluation with a Tune
# trial per 8 candidates (0.08-0.18 MB with a trial per candidate: Ray Tune keeps every trial's
# record in the driver), ~3 MB over 150 (~25 MB before); 60 flags a real leak.
LOAD_GROWTH_MB_PER_150 = 60


@pytest.mark.slow
def test_search_load_small(tmp_path):
    """200 candidates (the benchmark runs 2,000): the driver's memory stays steady, every actor
    of the run is dead before ray.shutdown() and no Ray process outlives it."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "search_load.py"
    figures = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(script), "--candidates", "200", "--every", "50", "--out",
                           str(tmp_path / "search"), "--json", str(figures)], capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(figures.read_text())
    assert got["evaluations"] == 200 and got["failed"] == 0
    assert got["actors_alive_before_shutdown"] == 0, got["actors_before_shutdown"]["alive"]
    assert got["actors_before_shutdown"]["by_class"]["ScorerActor"] == {"DEAD": 2}
    assert got["leaked_processes"] == [] and got["ray_processes_after_shutdown"] > 0
    rss = [p["rss_mb"] for p in got["rss_every"]]
    assert len(rss) == 4 and rss[-1] - rss[0] < LOAD_GROWTH_MB_PER_150, rss  # steady while searching


def test_constraint_cache_keeps_only_feasible_candidates():
    """A search samples dozens of Archs per feasible one: the prediction cache must not keep
    them all (it grew the driver by ~14 KB per evaluation in the load benchmark)."""
    from hat_ray.search.evolution import RandomSearch

    constraints = _limit(30)
    engine = RandomSearch(tiny_space(), constraints, seed=0, budget=50)
    asked = list(iter(engine.ask, None))
    cache = constraints.items[0]._cache
    assert len(asked) == 50 and set(cache) == set(asked)  # every rejected sample was forgotten
    assert all(constraints.feasible(asked)) and constraints.latencies(asked[0])["fake"] <= 30
