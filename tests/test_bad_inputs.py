"""The bad-input table: every CLI command and every input file type, one row per mistake.

Each row builds its (bad) inputs in a fresh folder next to outputs that already exist there (an
output file / output folder the command is pointed at), runs ``hat-ray`` in-process, and checks
the contract of the CLI: exit code 2, stderr exactly one line ``hat-ray: error: ...`` that names
the problem (``needle``) and suggests a fix (``fix``), no traceback, nothing on stdout, every
file that existed before byte-identical afterwards (and no new file left behind), and no Ray
instance started: inputs are validated before anything expensive begins.

Logging is routed to stderr exactly as the real console script does (``logging.basicConfig`` in
``main``), so a warning printed before the error would break the one-line contract here too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from search_helpers import TINY, tiny_space, write_fake_predictor, write_supernet_checkpoint

from hat_ray.cli.main import main
from hat_ray.data.synthetic import synthetic_split
from hat_ray.latency.dataset import HAT_COLUMNS, LatencyDataset
from hat_ray.space import SearchSpace

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_ray_in_process")]
ROOT = Path(__file__).resolve().parents[1]


# ---- the shared, valid inputs every row starts from ----
class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.space = root / "tiny.yaml"  # the tiny space of the supernet / predictor below
        self.super = root / "super.pt"  # a SuperTransformer checkpoint (hat-ray format)
        self.subnet = root / "subnet.pt"  # a SubTransformer checkpoint
        self.pred = root / "fake.pred"  # latency predictor: space tiny, device "fake"
        self.demo_pred = root / "demo.pred"  # latency predictor: space demo, device "fake"
        self.data = root / "data"  # a parallel corpus folder {train,valid,test}.{src,tgt}
        self.run = root / "run"  # a finished `hat-ray train supernet` run (2 updates)
        self.lat = root / "lat.parquet"  # a latency dataset (space tiny, devices fake + other)
        self.demo_lat = root / "demo_lat.parquet"  # a latency dataset of space demo (collect's --out)
        self.arch = root / "arch.yaml"  # an Arch of the tiny space (hat-ray format)

    def copy_run(self, to: Path) -> Path:
        shutil.copytree(self.run, to)
        return to


def _corpus(folder: Path, sizes: dict[str, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        c = synthetic_split(split, size=n)
        (folder / f"{split}.src").write_text("".join(s + "\n" for s in c.src), encoding="utf-8")
        (folder / f"{split}.tgt").write_text("".join(t + "\n" for t in c.tgt), encoding="utf-8")
    return folder


def _latency_rows(space: SearchSpace, device: str, n: int, seed: int) -> pd.DataFrame:
    from hat_ray.arch import FEATURE_NAMES

    rng = np.random.default_rng(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(n)))
    rows = []
    for a in archs:
        ms = 1.0 + sum(a.encoder_ffn_embed_dim) / 100 + 0.5 * a.decoder_layers
        rows.append({"space": space.name, "device": device, "arch_key": a.key(), "arch": json.dumps(a.to_dict()),
                     "source": "test", "latency_ms": ms, "encoder_ms": 0.3 * ms, "decoder_ms": 0.7 * ms,
                     **dict(zip(FEATURE_NAMES, a.features()))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    import torch

    from hat_ray.checkpoint import make_checkpoint, save_checkpoint
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.model.extract import extract_subnet

    w = Workspace(tmp_path_factory.mktemp("bad_inputs"))
    w.space.write_text(yaml.safe_dump(TINY))
    model, tok = write_supernet_checkpoint(w.super)
    space = tiny_space()
    save_checkpoint(w.subnet, make_checkpoint(extract_subnet(model, space.smallest()), space,
                                              tokenizer=tok.to_state()))
    write_fake_predictor(w.pred)
    demo = SearchSpace.load("demo")
    LatencyPredictor.fit(LatencyDataset(_latency_rows(demo, "fake", 60, 0), source="demo rows"),
                         space=demo).save(w.demo_pred)
    _corpus(w.data, {"train": 200, "valid": 30, "test": 30})
    frame = pd.concat([_latency_rows(space, "fake", 40, 1), _latency_rows(space, "other", 40, 2)],
                      ignore_index=True)
    LatencyDataset(frame, source="test").save(w.lat)
    LatencyDataset(_latency_rows(demo, "local_cpu", 5, 3), source="test").save(w.demo_lat)
    w.arch.write_text(yaml.safe_dump(space.smallest().to_dict()))
    threads = torch.get_num_threads()
    code = main(["train", "supernet", "--space", str(w.space), "--data", str(w.data), "--out", str(w.run),
                 "--max-updates", "2", "--max-tokens", "300", "--warmup-updates", "1", "--vocab-size", "300",
                 "--save-every", "1", "--validate-every", "0", "--threads", "1", "--no-progress", "--no-tensorboard"])
    torch.set_num_threads(threads)
    assert code == 0
    return w


# ---- helpers the rows use ----
def out_dir(d: Path) -> Path:
    """An output folder that already holds a file from an earlier run."""
    (d / "out").mkdir(exist_ok=True)
    (d / "out" / "previous.txt").write_text("an earlier run's output\n")
    return d / "out"


def out_file(d: Path, name: str) -> Path:
    """An output file that already exists (its bytes must survive the failed command)."""
    (d / name).write_bytes(b"previous contents of " + name.encode())
    return d / name


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    return write(dst, data[: int(len(data) * keep)])


def space_yaml(d: Path, edit: Callable[[dict], Any]) -> Path:
    data = json.loads(json.dumps(TINY))
    edit(data)
    return write(d / "space.yaml", yaml.safe_dump(data))


def arch_yaml(d: Path, edit: Callable[[dict], Any] | None = None, base: dict | None = None) -> Path:
    data = dict(base or tiny_space().smallest().to_dict())
    if edit:
        edit(data)
    return write(d / "arch.yaml", yaml.safe_dump(data))


def hat_csv(d: Path, edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.uniform(1, 5, 6) for c in HAT_COLUMNS})
    (edit(frame) if edit else frame).to_csv(d / "lat.csv", index=False)
    return d / "lat.csv"


def corpus(d: Path, **files: str | bytes) -> Path:
    """A corpus folder: a valid copy with the given files replaced (``train_src=...``)."""
    folder = _corpus(d / "corpus", {"train": 50, "valid": 10, "test": 10})
    for name, content in files.items():
        write(folder / name.replace("_", "."), content)
    return folder


def train(ws: Workspace, d: Path, *extra: Any, mode: str = "supernet", out: Path | None = None,
          space: Any = None, data: Any = None) -> list[Any]:
    return ["train", mode, "--space", space or ws.space, "--data", data or ws.data, "--out", out or out_dir(d),
            "--max-updates", "1", "--vocab-size", "300", "--no-progress", "--no-tensorboard", *extra]


def search(ws: Workspace, d: Path, *extra: Any, device: str = "fake:30", pred: str | None = None,
           supernet: Path | None = None, data: Path | None = None) -> list[Any]:
    return ["search", "--supernet", supernet or ws.super, "--data", data or ws.data, "--out", out_dir(d),
            "--scorers", "1", "--valid-sentences", "10", "--algorithm", "random", "--budget", "4",
            "--device", device, "--predictor", pred or f"fake:{ws.pred}", *extra]


def evaluate(ws: Workspace, d: Path, *extra: Any, ckpt: Path | None = None, data: Path | None = None) -> list[Any]:
    return ["evaluate", "--checkpoint", ckpt or ws.run / "checkpoint_last.pt", "--data", data or ws.data,
            "--split", "test", "--beam", "1", "--limit", "3", "--output", out_file(d, "hyp.txt"), *extra]


def fit(d: Path, data: Path, *extra: Any) -> list[Any]:
    return ["latency", "fit", "--data", data, "--out", out_file(d, "pred.npz"), *extra]


def collect(ws: Workspace, d: Path, *extra: Any, out: Path | None = None, n: int = 2) -> list[Any]:
    """`latency collect` into an existing dataset (a copy of a valid demo-space one by default)."""
    out = out or Path(shutil.copy(ws.demo_lat, d / "lat.parquet"))
    return ["latency", "collect", "--space", "demo", "-n", n, "--out", out, *extra]


def profile_yaml(d: Path, edit: Callable[[dict], Any]) -> Path:
    from hat_ray.latency import DeviceProfile

    data = DeviceProfile.load("local_cpu").to_dict()
    edit(data)
    return write(d / "profile.yaml", yaml.safe_dump(data))


def malicious_pickle(d: Path) -> Path:
    """A torch checkpoint whose unpickling would run a shell command."""
    import os

    import torch

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'PWNED'}",))

    path = d / "evil.pt"
    torch.save({"args": None, "model": {}, "extra_state": Shell()}, path)
    return path


def experiment_yaml(w: Workspace, d: Path, edit: Callable[[dict], Any]) -> Path:
    """An experiment file for `hat-ray pipeline` (valid: :func:`test_the_experiment_rows_start_from_a_valid_file`)
    on the workspace's space and corpus, with ``edit`` applied; its ``out`` is an existing folder."""
    exp: dict[str, Any] = {
        "name": "tiny", "space": str(w.space), "out": str(out_dir(d)),
        "devices": [{"profile": "local_cpu", "limits_ms": ["p40", 30]}],
        "data": {"name": str(w.data), "vocab_size": 300, "valid_sentences": 20, "test_sentences": 10},
        "supernet": {"max_updates": 2, "max_tokens": 300, "warmup_updates": 1, "threads": 1},
        "latency": {"archs": 12},
        "search": {"algorithm": "hat", "scorers": 1, "population": 6, "parents": 2, "mutations": 2, "crossovers": 2,
                   "iterations": 2, "max_tokens": 300},
        "train": {"max_updates": 1, "baselines": ["largest", "smallest"], "max_tokens": 300, "threads": 1},
        "evaluate": {"beam": 1},
    }
    edit(exp)
    return write(d / "experiment.yaml", yaml.safe_dump(exp))


def pipeline(w: Workspace, d: Path, edit: Callable[[dict], Any]) -> list[Any]:
    return ["pipeline", experiment_yaml(w, d, edit)]


def section(part: str, /, **values: Any) -> Callable[[dict], Any]:
    """An edit setting ``values`` in section ``part`` of an experiment."""
    return lambda e: e[part].update(values)


def device(**values: Any) -> Callable[[dict], Any]:
    """An edit setting ``values`` in the experiment's first device entry."""
    return lambda e: e["devices"][0].update(values)


def few_latency_rows(d: Path) -> Path:
    """A latency dataset of the tiny space with 4 local_cpu rows (a predictor needs 10)."""
    LatencyDataset(_latency_rows(tiny_space(), "local_cpu", 4, 5), source="test").save(d / "few.parquet")
    return d / "few.parquet"


# ---- the table: (id, argv builder, needle naming the problem, substring of the suggested fix) ----
def _corrupt_lat(d: Path) -> Path:
    return write(d / "lat.parquet", b"PAR1 this is not really parquet")


CASES: list[tuple[Any, ...]] = [  # (id, build(ws, folder) -> argv, needle, fix[, pytest mark])
    # hat-ray space
    ("space-yaml-syntax", lambda w, d: ["space", "show", write(d / "s.yaml", "name: x\nsuper: [oops\n")],
     "not valid YAML", "fix the YAML syntax"),
    ("space-unknown-key", lambda w, d: ["space", "show", space_yaml(d, lambda s: s.update(extra=1))],
     "unknown top-level key 'extra'", "allowed:"),
    ("space-missing-key", lambda w, d: ["space", "show", space_yaml(d, lambda s: s.pop("choices"))],
     "missing top-level key 'choices'", "hat-ray space show demo"),
    ("space-wrong-type", lambda w, d: ["space", "show", space_yaml(d, lambda s: s["super"].update(qkv_dim="big"))],
     "super.qkv_dim", "must be a positive integer"),
    ("space-choice-over-super", lambda w, d: ["space", "show", space_yaml(
        d, lambda s: s["choices"].update(encoder_ffn_embed_dim=[64, 128]))], "[128] exceed(s) the super", "exceed"),
    ("space-unknown-name", lambda w, d: ["space", "show", "no_such_space"],
     "unknown search space 'no_such_space'", "use one of"),
    ("space-non-utf8", lambda w, d: ["space", "show", write(d / "s.yaml", b"name: caf\xe9\n")],
     "not UTF-8", "save it as UTF-8"),
    ("space-not-mapping", lambda w, d: ["space", "show", write(d / "s.yaml", "- 1\n- 2\n")],
     "expected a mapping", "hat-ray space show demo"),
    # hat-ray arch
    ("arch-yaml-syntax", lambda w, d: ["arch", "info", write(d / "a.yaml", "encoder_embed_dim: [32\n"),
                                       "--space", w.space], "not valid YAML", "fix the YAML syntax"),
    ("arch-missing-key", lambda w, d: ["arch", "info", arch_yaml(d, lambda a: a.pop("decoder_embed_dim")),
                                       "--space", w.space], "missing key 'decoder_embed_dim'", "hat-ray arch sample"),
    ("arch-unknown-key", lambda w, d: ["arch", "info", arch_yaml(d, lambda a: a.update(dropout=0.1)),
                                       "--space", w.space], "unknown key 'dropout'", "hat-ray arch sample"),
    ("arch-wrong-type", lambda w, d: ["arch", "info", arch_yaml(d, lambda a: a.update(encoder_embed_dim="wide")),
                                      "--space", w.space], "encoder_embed_dim must be an integer", "must be"),
    ("arch-outside-space", lambda w, d: ["arch", "info", arch_yaml(d, lambda a: a.update(encoder_embed_dim=512)),
                                         "--space", w.space], "encoder_embed_dim=512 not in", "[32, 24]"),
    ("arch-misaligned-layers", lambda w, d: ["arch", "info", arch_yaml(d, lambda a: a.update(decoder_layers=3)),
                                             "--space", w.space], "decoder_layers is 3 but", "lists 1 layers"),
    ("arch-empty-file", lambda w, d: ["arch", "info", write(d / "a.yaml", ""), "--space", w.space],
     "a.yaml", "hat-ray arch sample"),
    ("arch-missing-file", lambda w, d: ["arch", "info", d / "none.yaml", "--space", w.space],
     "arch file does not exist", "check the path"),
    ("arch-sample-bad-int", lambda w, d: ["arch", "sample", "--space", "demo", "-n", "many"],
     "invalid int value: 'many'", "--help"),
    ("arch-sample-bad-format", lambda w, d: ["arch", "sample", "--space", "demo", "--format", "xml"],
     "invalid choice: 'xml'", "choose from"),
    # hat-ray import-hat
    ("import-truncated", lambda w, d: ["import-hat", truncated(w.super, d / "hat.pt"), "--out",
                                       out_file(d, "o.pt")], "hat.pt is corrupted", "copy or download it again"),
    ("import-not-hat", lambda w, d: ["import-hat", w.super, "--out", out_file(d, "o.pt")],
     "lacks args", "pass it to hat-ray directly"),
    ("import-malicious-pickle", lambda w, d: ["import-hat", malicious_pickle(d), "--out", out_file(d, "o.pt")],
     "refused", "trusted"),
    ("import-out-is-input", lambda w, d: ["import-hat", out_file(d, "o.pt"), "--out", d / "o.pt"],
     "is the input checkpoint", "choose another path"),
    ("import-missing", lambda w, d: ["import-hat", d / "none.pt", "--out", out_file(d, "o.pt")],
     "does not exist", "check the path"),
    ("import-out-under-a-file", lambda w, d: ["import-hat", w.super, "--out", out_file(d, "o.pt") / "x.pt"],
     "o.pt is a file, not a folder", "choose another --out"),
    ("import-missing-dict-dir", lambda w, d: ["import-hat", w.super, "--out", out_file(d, "o.pt"), "--dict-dir",
                                              d / "dicts"], "dicts is not a folder", "dict.<lang>.txt"),
    # hat-ray train
    ("train-empty-corpus", lambda w, d: train(w, d, "--data", corpus(d, train_src="", train_tgt="")),
     "train.src is empty", "one sentence per line"),
    ("train-misaligned-corpus", lambda w, d: train(w, d, "--data", corpus(d, train_src="a\nb\nc\n",
                                                                          train_tgt="A\nB\n")),
     "train.src has 3 lines but", "same number of lines"),
    ("train-non-utf8-corpus", lambda w, d: train(w, d, "--data", corpus(d, train_tgt=b"ein Caf\xe9\n" * 50)),
     "not UTF-8", "convert the file to UTF-8"),
    ("train-resume-nothing", lambda w, d: train(w, d, "--resume"), "no checkpoint to resume from",
     "run without --resume"),
    ("train-existing-run", lambda w, d: train(w, d, out=w.copy_run(d / "run")),
     "already holds checkpoint_last.pt", "pass --resume"),
    ("train-resume-truncated", lambda w, d: train(w, d, "--resume", out=_truncate_last(w.copy_run(d / "run"))),
     "checkpoint_last.pt is corrupted", "start a new run"),
    ("train-resume-other-space", lambda w, d: train(w, d, "--resume", out=w.copy_run(d / "run"), space="demo"),
     "was trained on space 'tiny', not 'demo'", "--space"),
    ("train-subnet-arch-outside", lambda w, d: ["train", "subnet", "--arch", arch_yaml(
        d, lambda a: a.update(decoder_embed_dim=640)), *train(w, d)[2:]], "decoder_embed_dim=640 not in", "[32, 24]"),
    ("train-init-from-truncated", lambda w, d: ["train", "subnet", "--arch", w.arch, "--init-from",
                                                truncated(w.super, d / "s.pt"), *train(w, d)[2:]],
     "s.pt is corrupted", "earlier checkpoint"),
    ("train-init-from-subnet", lambda w, d: ["train", "subnet", "--arch", w.arch, "--init-from", w.subnet,
                                             *train(w, d)[2:]], "is a subnet checkpoint", "hat-ray train supernet"),
    ("train-out-is-a-file", lambda w, d: train(w, d, out=out_file(d, "run.txt")),
     "run.txt is a file, not a folder", "choose another --out"),
    ("train-zero-workers", lambda w, d: train(w, d, "--workers", "0"), "--workers", ">= 1"),
    ("train-no-budget", lambda w, d: [a for a in train(w, d) if a not in ("--max-updates", "1")],
     "--max-updates", "give --max-updates or --max-minutes"),
    ("train-unknown-data", lambda w, d: train(w, d, "--data", "no_such_corpus"),
     "not a dataset name", "multi30k"),
    ("train-space-bad-type", lambda w, d: train(w, d, space=space_yaml(d, lambda s: s["super"].update(
        dropout="lots"))), "super.dropout", "must be a number in [0, 1)"),
    ("train-bad-label-smoothing", lambda w, d: train(w, d, "--label-smoothing", "1.5"),
     "label_smoothing must be in [0, 1)", "[0, 1)"),
    # hat-ray evaluate
    ("evaluate-truncated", lambda w, d: evaluate(w, d, ckpt=truncated(w.run / "checkpoint_last.pt", d / "c.pt")),
     "c.pt is corrupted", "earlier checkpoint"),
    ("evaluate-missing", lambda w, d: evaluate(w, d, ckpt=d / "none.pt"), "none.pt does not exist",
     "check the path"),
    ("evaluate-arch-outside", lambda w, d: evaluate(w, d, "--arch", arch_yaml(
        d, lambda a: a.update(encoder_embed_dim=48))), "encoder_embed_dim=48 not in", "[32, 24]"),
    ("evaluate-average-too-many", lambda w, d: evaluate(w, d, "--average-last", "9"),
     "has only 2 numbered checkpoints", "--average-last 2"),
    ("evaluate-average-negative", lambda w, d: evaluate(w, d, "--average-last", "-2"),
     "--average-last must be a positive number of checkpoints, got -2", "positive"),
    ("evaluate-misaligned-test", lambda w, d: evaluate(w, d, data=corpus(d, test_tgt="x\n")),
     "test.src has 10 lines but", "same number of lines"),
    ("evaluate-output-is-a-folder", lambda w, d: evaluate(w, d)[:-2] + ["--output", out_dir(d)],
     "out is a folder", "give the path of a file"),
    ("evaluate-no-split", lambda w, d: evaluate(w, d, data=_without(corpus(d), "test.src", "test.tgt")),
     "no test split", "choose another --split"),
    # hat-ray export / translate
    ("export-supernet-without-arch", lambda w, d: ["export", "--checkpoint", w.super, "--out", d / "exp"],
     "is a SuperTransformer checkpoint", "pass --arch ARCH_YAML"),
    ("export-arch-outside", lambda w, d: ["export", "--checkpoint", w.super, "--out", d / "exp", "--arch",
                                          arch_yaml(d, lambda a: a.update(encoder_embed_dim=48))],
     "encoder_embed_dim=48 not in", "[32, 24]"),
    ("export-subnet-other-arch", lambda w, d: ["export", "--checkpoint", w.subnet, "--out", d / "exp", "--arch",
                                               arch_yaml(d, base=tiny_space().largest().to_dict())],
     "is not the Arch of the SubTransformer checkpoint", "leave --arch out"),
    ("export-out-is-a-file", lambda w, d: ["export", "--checkpoint", w.subnet, "--out", out_file(d, "exp")],
     "exp is a file, not a folder", "choose another --out"),
    ("export-out-not-an-export", lambda w, d: ["export", "--checkpoint", w.subnet, "--out", out_dir(d)],
     "holding files that are not a hat-ray export", "choose a new or empty folder"),
    ("export-unknown-format", lambda w, d: ["export", "--checkpoint", w.subnet, "--format", "tflite", "--out",
                                            d / "exp"], "invalid choice: 'tflite'", "choose from"),
    ("export-int8-torchscript", lambda w, d: ["export", "--checkpoint", w.subnet, "--format", "torchscript",
                                              "--int8", "--out", d / "exp"],
     "--int8 needs --format onnx", "use --format onnx --int8"),
    ("export-missing-checkpoint", lambda w, d: ["export", "--checkpoint", d / "none.pt", "--out", d / "exp"],
     "none.pt does not exist", "check the path"),
    ("translate-not-an-export", lambda w, d: ["translate", "--model", out_dir(d)],
     "has no manifest.json: not a hat-ray export", "pass a folder written by `hat-ray export`"),
    ("translate-beam-zero", lambda w, d: ["translate", "--model", d, "--beam", "0"], "--beam must be >= 1, got 0",
     ">= 1"),
    # hat-ray latency measure
    ("measure-unknown-device", lambda w, d: ["latency", "measure", "--device", "nope", "--space", "demo", "-n", "1"],
     "unknown device profile 'nope'", "use one of"),
    ("measure-profile-bad-type", lambda w, d: ["latency", "measure", "--device", profile_yaml(
        d, lambda p: p.update(threads="many")), "--space", "demo", "-n", "1"], "threads must be an integer",
     "must be"),
    ("measure-profile-unknown-key", lambda w, d: ["latency", "measure", "--device", profile_yaml(
        d, lambda p: p.update(colour="red")), "--space", "demo", "-n", "1"], "unknown top-level key 'colour'",
     "compare with a bundled profile"),
    ("measure-zero-n", lambda w, d: ["latency", "measure", "--device", "local_cpu", "--space", "demo", "-n", "0"],
     "-n must be a positive integer", "positive integer"),
    ("measure-arch-outside", lambda w, d: ["latency", "measure", "--device", "local_cpu", "--space", "demo",
                                           "--arch", w.arch], "encoder_embed_dim=24 not in", "not in [256"),
    # hat-ray latency collect (all refused before Ray starts)
    ("collect-not-parquet", lambda w, d: collect(w, d, "--device", "local_cpu", out=out_file(d, "x.csv")),
     "--out must be a .parquet dataset", ".parquet"),
    ("collect-device-missing", lambda w, d: collect(w, d, "--device", "raspberrypi4"),
     "no node for device raspberrypi4", "pass --address"),
    ("collect-unreachable-address", lambda w, d: collect(w, d, "--device", "local_cpu", "--address", "127.0.0.1:1",
                                                         "--protocol", "sequential"),
     "cannot reach a Ray cluster at 127.0.0.1:1", "fix --address"),
    ("collect-other-protocol-existing", lambda w, d: collect(w, d, "--device", "local_cpu"),
     "holds local_cpu rows measured with the sequential protocol, and this collection uses reference",
     "--protocol sequential"),
    ("collect-corrupted-existing", lambda w, d: collect(w, d, "--device", "local_cpu", out=_corrupt_lat(d)),
     "is not a readable Parquet latency dataset", "hat-ray latency collect"),
    ("collect-other-space-existing", lambda w, d: collect(w, d, "--device", "local_cpu",
                                                          out=Path(shutil.copy(w.lat, d / "lat.parquet"))),
     "holds rows of search space tiny, not demo", "use another --out"),
    ("collect-out-under-a-file", lambda w, d: collect(w, d, "--device", "local_cpu",
                                                      out=out_file(d, "lat.txt") / "x.parquet"),
     "lat.txt is a file, not a folder", "choose another --out"),
    ("collect-zero-n", lambda w, d: collect(w, d, "--device", "local_cpu", n=0),
     "-n must be a positive integer", "positive integer"),
    # hat-ray latency fit
    ("fit-csv-missing-column", lambda w, d: fit(d, hat_csv(d, lambda f: f.drop(columns=["latency_mean_decoder"])),
                                                "--device", "x", "--space", "demo"),
     "missing column 'latency_mean_decoder'", "HAT's columns"),
    ("fit-csv-nan", lambda w, d: fit(d, hat_csv(d, lambda f: f.assign(latency_mean_encoder=np.nan)),
                                     "--device", "x", "--space", "demo"), "missing or non-numeric", "HAT's columns"),
    ("fit-csv-negative", lambda w, d: fit(d, hat_csv(d, lambda f: f.assign(latency_mean_decoder=-1.0)),
                                          "--device", "x", "--space", "demo"), "must be positive", "HAT's columns"),
    ("fit-csv-empty", lambda w, d: fit(d, write(d / "lat.csv", ""), "--device", "x", "--space", "demo"),
     "lat.csv", "HAT's columns"),
    ("fit-csv-non-utf8", lambda w, d: fit(d, write(d / "lat.csv", b"caf\xe9,x\n1,2\n"), "--device", "x"),
     "lat.csv", "HAT's columns"),
    ("fit-parquet-truncated", lambda w, d: fit(d, truncated(w.lat, d / "lat.parquet")),
     "is not a readable Parquet latency dataset", "hat-ray latency collect"),
    ("fit-parquet-foreign", lambda w, d: fit(d, _foreign_parquet(d)), "missing columns", "hat-ray latency collect"),
    ("fit-rows-out-of-range", lambda w, d: fit(d, w.lat, "--device", "fake", "--rows", "30:90"),
     "selects no valid rows", "0:40"),
    ("fit-base-truncated", lambda w, d: fit(d, w.lat, "--device", "fake", "--base", truncated(w.pred, d / "b.pred")),
     "b.pred is not a hat-ray latency predictor or is corrupted", "hat-ray latency fit"),
    ("fit-base-other-space", lambda w, d: fit(d, w.lat, "--device", "fake", "--base", w.demo_pred),
     "rows are from search space tiny but the predictor is for space demo", "use a predictor fit on tiny rows"),
    ("fit-out-is-a-folder", lambda w, d: ["latency", "fit", "--data", w.lat, "--device", "fake", "--out",
                                          out_dir(d)], "is a folder", "give the path of a file"),
    ("fit-several-devices", lambda w, d: fit(d, w.lat), "holds several devices", "--device"),
    # hat-ray latency eval
    ("eval-predictor-truncated", lambda w, d: ["latency", "eval", "--predictor", truncated(w.pred, d / "p.pred"),
                                               "--data", w.lat, "--device", "fake"], "p.pred", "hat-ray latency fit"),
    ("eval-predictor-garbage", lambda w, d: ["latency", "eval", "--predictor", write(d / "p.pred", b"\x00" * 64),
                                             "--data", w.lat, "--device", "fake"], "p.pred", "hat-ray latency fit"),
    ("eval-predictor-other-device", lambda w, d: ["latency", "eval", "--predictor", w.pred, "--data", w.lat,
                                                  "--device", "other"], "is for device fake", "--device fake"),
    ("eval-predictor-other-space", lambda w, d: ["latency", "eval", "--predictor", w.demo_pred, "--data", w.lat,
                                                 "--device", "fake"], "the predictor is for space demo",
     "use a predictor fit on tiny rows"),
    ("eval-bad-rows", lambda w, d: ["latency", "eval", "--predictor", w.pred, "--data", w.lat, "--device", "fake",
                                    "--rows", "a:b"], "--rows must look like A:B", "A:B"),
    # hat-ray search (all refused before Ray starts)
    ("search-supernet-truncated", lambda w, d: search(w, d, supernet=truncated(w.super, d / "s.pt")),
     "s.pt is corrupted", "earlier checkpoint"),
    ("search-supernet-is-subnet", lambda w, d: search(w, d, supernet=w.subnet),
     "not a SuperTransformer", "hat-ray train supernet"),
    ("search-predictor-other-device", lambda w, d: search(w, d, device="other:30", pred=f"other:{w.pred}"),
     "was fit on device 'fake', not 'other'", "fit one for other"),
    ("search-predictor-other-space", lambda w, d: search(w, d, pred=f"fake:{w.demo_pred}"),
     "was fit on space 'demo'", "fit a predictor on tiny"),
    ("search-predictor-truncated", lambda w, d: search(w, d, pred=f"fake:{truncated(w.pred, d / 'p.pred')}"),
     "p.pred", "hat-ray latency fit"),
    ("search-infeasible-limit", lambda w, d: search(w, d, device="fake:0.001"),
     "no SubTransformer of space tiny meets", "raise the limit"),
    ("search-unreachable-address", lambda w, d: search(w, d, "--address", "127.0.0.1:1"),
     "cannot reach a Ray cluster at 127.0.0.1:1", "fix --address"),
    ("search-bad-limit", lambda w, d: search(w, d, device="fake:fast"), "'fast' is not a latency in ms",
     "PROFILE:LIMIT_MS"),
    ("search-out-is-file", lambda w, d: search(w, d, "--out", write(d / "taken.txt", "keep me\n")),
     "is a file, not a folder", "choose a folder"),
    ("search-resume-nothing", lambda w, d: search(w, d, "--resume"), "nothing to resume", "run without --resume"),
    ("search-misaligned-valid", lambda w, d: search(w, d, data=corpus(d, valid_src="a\n")),
     "valid.src has 1 lines but", "same number of lines"),
    # hat-ray pipeline: bad experiment files, every section and every kind of bad value (unknown or
    # missing key, wrong type, out of range, unknown name, two settings that contradict each other),
    # all refused by Experiment.check before the first stage starts (the `out` folder untouched)
    ("pipeline-unknown-key", lambda w, d: pipeline(w, d, lambda e: e.update(devcies=[])),
     "unknown key(s) devcies (did you mean devices?)", "known: name, space"),
    ("pipeline-missing-key", lambda w, d: pipeline(w, d, lambda e: e.pop("space")),
     "space: missing (required)", "experiments/demo.yaml"),
    ("pipeline-not-a-mapping", lambda w, d: ["pipeline", write(d / "experiment.yaml", "- name: tiny\n")],
     "must be a YAML mapping", "mapping"),
    ("pipeline-empty-name", lambda w, d: pipeline(w, d, lambda e: e.update(name="")),
     "name: give the experiment a name", "give"),
    ("pipeline-unknown-space", lambda w, d: pipeline(w, d, lambda e: e.update(space="tiny_typo")),
     "space: unknown search space 'tiny_typo'", "use one of demo"),
    ("pipeline-out-is-a-file", lambda w, d: pipeline(w, d, lambda e: e.update(out=str(out_file(d, "run.txt")))),
     "out: ", "is a file, not a folder; choose another out"),
    ("pipeline-address-not-text", lambda w, d: pipeline(w, d, lambda e: e.update(address=6379)),
     "address: expected a string or null, got 6379", "experiments/demo.yaml"),
    # data:
    ("pipeline-data-unknown-name", lambda w, d: pipeline(w, d, section("data", name="wmt15")),
     "data.name: 'wmt15' is not a dataset name", "multi30k, wmt14_en_de"),
    ("pipeline-data-dir-missing", lambda w, d: pipeline(w, d, section("data", name="multi30k",
                                                                      data_dir=str(d / "none"))),
     "data.data_dir: ", "is not a folder (expected one holding the multi30k files)"),
    ("pipeline-data-dir-for-synthetic", lambda w, d: pipeline(w, d, section("data", name="synthetic",
                                                                            data_dir=str(w.data))),
     "data.data_dir: the synthetic corpus is generated", "drop data_dir"),
    ("pipeline-data-unknown-test-split", lambda w, d: pipeline(w, d, section("data", test_split="tst")),
     "data.test_split: unknown split 'tst'", "use one of train, valid, test"),
    ("pipeline-data-no-test-split", lambda w, d: pipeline(w, d, section(
        "data", name=str(_without(corpus(d), "test.src", "test.tgt")))), "data.test_split: ", "no test split"),
    ("pipeline-data-bad-language", lambda w, d: pipeline(w, d, section("data", src_lang="en/de")),
     "data.src_lang: 'en/de' is not a language suffix", "like 'en'"),
    ("pipeline-data-vocab-bool", lambda w, d: pipeline(w, d, section("data", vocab_size=True)),
     "data.vocab_size: expected an integer, got True", "experiments/demo.yaml"),
    ("pipeline-data-vocab-tiny", lambda w, d: pipeline(w, d, section("data", vocab_size=3)),
     "data.vocab_size must be >= 16", ">= 16"),
    ("pipeline-data-zero-valid-sentences", lambda w, d: pipeline(w, d, section("data", valid_sentences=0)),
     "data.valid_sentences must be >= 1", "or null: all"),
    ("pipeline-data-negative-test-sentences", lambda w, d: pipeline(w, d, section("data", test_sentences=-3)),
     "data.test_sentences must be >= 1", "or null: all"),
    ("pipeline-data-download-text", lambda w, d: pipeline(w, d, section("data", download="yes")),
     "data.download: expected true/false, got 'yes'", "experiments/demo.yaml"),
    # devices:
    ("pipeline-devices-empty", lambda w, d: pipeline(w, d, lambda e: e.update(devices=[])),
     "devices: list at least one device profile", "with its latency limits"),
    ("pipeline-devices-not-a-list", lambda w, d: pipeline(w, d, lambda e: e.update(devices="local_cpu")),
     "devices: expected a list, got 'local_cpu'", "experiments/demo.yaml"),
    ("pipeline-device-unknown-profile", lambda w, d: pipeline(w, d, device(profile="rpi5")),
     "devices[0].profile: unknown device profile 'rpi5'", "use one of"),
    ("pipeline-device-missing-profile", lambda w, d: pipeline(w, d, lambda e: e["devices"][0].pop("profile")),
     "devices[0].profile: missing (required)", "experiments/demo.yaml"),
    ("pipeline-device-unknown-key", lambda w, d: pipeline(w, d, device(limit=[30])),
     "devices[0]: unknown key(s) limit (did you mean limits_ms?)", "known: profile, limits_ms"),
    ("pipeline-device-listed-twice", lambda w, d: pipeline(w, d, lambda e: e["devices"].append(
        {"profile": str(ROOT / "device_profiles" / "local_cpu.yaml"), "limits_ms": [50]})),
     "devices: a profile is listed twice (local_cpu: devices[0] and devices[1])", "give all its limits in one entry"),
    ("pipeline-device-no-limits", lambda w, d: pipeline(w, d, device(limits_ms=[])),
     "devices[0].limits_ms: give at least one limit", "'p30' for a percentile"),
    ("pipeline-device-limit-garbage", lambda w, d: pipeline(w, d, device(limits_ms=["12xyz"])),
     "devices[0].limits_ms: '12xyz' is neither", "a percentile like 'p30'"),
    ("pipeline-device-limit-negative-text", lambda w, d: pipeline(w, d, device(limits_ms=["-3"])),
     "devices[0].limits_ms: '-3' is neither", "positive number of ms"),
    ("pipeline-device-limit-negative", lambda w, d: pipeline(w, d, device(limits_ms=[-3])),
     "devices[0].limits_ms: -3.0 is neither", "positive number of ms"),
    ("pipeline-device-limit-percentile-150", lambda w, d: pipeline(w, d, device(limits_ms=["p150"])),
     "devices[0].limits_ms: 'p150' is neither", "a percentile like 'p30'"),
    ("pipeline-device-limit-zero-ref", lambda w, d: pipeline(w, d, device(limits_ms=["0ref"])),
     "devices[0].limits_ms: '0ref' is neither", "like '1.2ref'"),
    ("pipeline-device-limit-bool", lambda w, d: pipeline(w, d, device(limits_ms=[True])),
     "devices[0].limits_ms[0]: expected a finite number or a string, got True", "experiments/demo.yaml"),
    ("pipeline-device-limit-infinite", lambda w, d: pipeline(w, d, device(limits_ms=[float("inf")])),
     "devices[0].limits_ms[0]: expected a finite number or a string, got inf", "experiments/demo.yaml"),
    ("pipeline-device-limit-twice", lambda w, d: pipeline(w, d, device(limits_ms=["p40", "p40.0"])),
     "devices[0].limits_ms: 'p40.0' is listed twice", "one search per limit"),
    ("pipeline-device-ref-limit-sequential", lambda w, d: pipeline(w, d, device(
        profile=str(profile_yaml(d, lambda p: p["protocol"].update(mode="sequential"))), limits_ms=["1.2ref"])),
     "'1.2ref' is in reference units, but local_cpu is measured with the sequential protocol",
     "give ms or a percentile"),
    ("pipeline-device-not-here", lambda w, d: pipeline(w, d, device(profile="raspberrypi4", limits_ms=[4500])),
     "devices[0].profile: raspberrypi4 cannot be measured on this machine", "give the address of a Ray cluster"),
    ("pipeline-device-latency-data-missing", lambda w, d: pipeline(w, d, device(latency_data=str(d / "none.csv"))),
     "devices[0].latency_data: ", "is not a file (give a hat-ray latency dataset .parquet or HAT's latency CSV)"),
    ("pipeline-device-latency-data-corrupt", lambda w, d: pipeline(w, d, device(latency_data=str(_corrupt_lat(d)))),
     "devices[0].latency_data: ", "is not a readable Parquet latency dataset"),
    ("pipeline-device-latency-data-other-space", lambda w, d: pipeline(w, d, device(latency_data=str(w.demo_lat))),
     "rows are from search space demo but the predictor is for space tiny", "fit on demo rows"),
    ("pipeline-device-latency-data-few-rows", lambda w, d: pipeline(w, d, device(
        latency_data=str(few_latency_rows(d)))), "4 rows; a predictor needs at least 10", "at least 10"),
    ("pipeline-device-latency-data-ref-limit", lambda w, d: pipeline(w, d, device(
        latency_data=str(few_latency_rows(d)), limits_ms=["1.2ref"])),
     "'1.2ref' is in reference units, but the device's latency_data is imported", "give ms or a percentile"),
    # supernet:
    ("pipeline-supernet-not-a-mapping", lambda w, d: pipeline(w, d, lambda e: e.update(supernet=None)),
     "supernet: expected a mapping, got NoneType", "experiments/demo.yaml"),
    ("pipeline-supernet-no-budget", lambda w, d: pipeline(w, d, lambda e: e["supernet"].pop("max_updates")),
     "supernet: give max_minutes or max_updates", "max_minutes or max_updates"),
    ("pipeline-supernet-unknown-schedule", lambda w, d: pipeline(w, d, section("supernet", schedule="cosin")),
     "supernet.schedule must be one of", "inverse_sqrt"),
    ("pipeline-supernet-cosine-without-updates", lambda w, d: pipeline(w, d, section(
        "supernet", schedule="cosine", max_updates=None, max_minutes=5)),
     "supernet.schedule cosine needs max_updates", "use inverse_sqrt with a time budget"),
    ("pipeline-supernet-infinite-minutes", lambda w, d: pipeline(w, d, section("supernet", max_minutes=float("inf"))),
     "supernet.max_minutes: expected a finite number or null, got inf", "experiments/demo.yaml"),
    ("pipeline-supernet-zero-threads", lambda w, d: pipeline(w, d, section("supernet", threads=0)),
     "supernet.threads must be >= 1", "or null: torch's default"),
    ("pipeline-supernet-negative-validate-every", lambda w, d: pipeline(w, d, section("supernet", validate_every=-5)),
     "supernet.validate_every must be >= 0", ">= 0"),
    ("pipeline-supernet-negative-seed", lambda w, d: pipeline(w, d, section("supernet", seed=-1)),
     "supernet.seed must be >= 0", ">= 0"),
    ("pipeline-supernet-sandwich-text", lambda w, d: pipeline(w, d, section("supernet", sandwich="yes")),
     "supernet.sandwich: expected true/false, got 'yes'", "experiments/demo.yaml"),
    ("pipeline-supernet-largest-prob-with-sandwich", lambda w, d: pipeline(w, d, section(
        "supernet", sandwich=True, largest_prob=0.5)), "supernet.largest_prob applies to supernet training without "
     "the sandwich rule", "trains the largest Arch every update already"),
    ("pipeline-supernet-zero-workers", lambda w, d: pipeline(w, d, section("supernet", workers=0)),
     "supernet.workers must be >= 1", ">= 1"),
    # latency:
    ("pipeline-latency-too-few-archs", lambda w, d: pipeline(w, d, section("latency", archs=5)),
     "latency.archs must be >= 10", "the rows a latency predictor needs"),
    ("pipeline-latency-unknown-model", lambda w, d: pipeline(w, d, section("latency", model="mlp")),
     "latency.model must be one of ['default', 'hat-mlp'], got 'mlp'", "'hat-mlp'"),
    ("pipeline-latency-holdout-negative", lambda w, d: pipeline(w, d, section("latency", holdout=-0.1)),
     "latency.holdout must be in [0, 0.9)", "[0, 0.9)"),
    ("pipeline-latency-negative-seed", lambda w, d: pipeline(w, d, section("latency", seed=-1)),
     "latency.seed must be >= 0", ">= 0"),
    ("pipeline-latency-archs-text", lambda w, d: pipeline(w, d, section("latency", archs="many")),
     "latency.archs: expected an integer, got 'many'", "experiments/demo.yaml"),
    ("pipeline-latency-typo", lambda w, d: pipeline(w, d, section("latency", arch=50)),
     "latency: unknown key(s) arch (did you mean archs?)", "known: archs"),
    # search:
    ("pipeline-search-unknown-algorithm", lambda w, d: pipeline(w, d, section("search", algorithm="genetic")),
     "search.algorithm must be one of", "hat"),
    ("pipeline-search-parents-over-population", lambda w, d: pipeline(w, d, section("search", parents=7)),
     "search.parents (7) must be <= population (6)", "<= population"),
    ("pipeline-search-zero-max-tokens", lambda w, d: pipeline(w, d, section("search", max_tokens=0)),
     "search.max_tokens must be >= 1", ">= 1"),
    ("pipeline-search-negative-seed", lambda w, d: pipeline(w, d, section("search", seed=-1)),
     "search.seed must be >= 0", ">= 0"),
    ("pipeline-search-nan-margin", lambda w, d: pipeline(w, d, section("search", margin=float("nan"))),
     "search.margin: expected a finite number, got nan", "experiments/demo.yaml"),
    ("pipeline-search-population-list", lambda w, d: pipeline(w, d, section("search", population=[6])),
     "search.population: expected an integer, got [6]", "experiments/demo.yaml"),
    ("pipeline-search-zero-budget", lambda w, d: pipeline(w, d, section("search", budget=0)),
     "search.budget must be >= 1", "or null: the algorithm's own end"),
    ("pipeline-search-zero-scorers", lambda w, d: pipeline(w, d, section("search", scorers=0)),
     "search.scorers must be >= 1", ">= 1"),
    # train:
    ("pipeline-train-unknown-init", lambda w, d: pipeline(w, d, section("train", init="hat")),
     "train.init must be supernet or scratch, got 'hat'", "supernet or scratch"),
    ("pipeline-train-unknown-baseline", lambda w, d: pipeline(w, d, section("train", baselines=["largest", "tall"])),
     "train.baselines: unknown ['tall']", "use some of"),
    ("pipeline-train-baseline-twice", lambda w, d: pipeline(w, d, section("train", baselines=["largest", "largest"])),
     "train.baselines: ['largest'] listed twice", "list each baseline once"),
    ("pipeline-train-baselines-not-a-list", lambda w, d: pipeline(w, d, section("train", baselines="largest")),
     "train.baselines: expected a list, got 'largest'", "experiments/demo.yaml"),
    ("pipeline-train-negative-threads", lambda w, d: pipeline(w, d, section("train", threads=-2)),
     "train.threads must be >= 1", "or null: torch's default"),
    ("pipeline-train-workers-bool", lambda w, d: pipeline(w, d, section("train", workers=True)),
     "train.workers: expected an integer, got True", "experiments/demo.yaml"),
    ("pipeline-train-zero-lr", lambda w, d: pipeline(w, d, section("train", lr=0)),
     "train.lr must be > 0", "> 0"),
    ("pipeline-train-supernet-only-key", lambda w, d: pipeline(w, d, section("train", sandwich=True)),
     "train: unknown key(s) sandwich", "known: max_minutes"),
    # evaluate:
    ("pipeline-evaluate-zero-beam", lambda w, d: pipeline(w, d, section("evaluate", beam=0)),
     "evaluate.beam must be >= 1", ">= 1"),
    ("pipeline-evaluate-beam-text", lambda w, d: pipeline(w, d, section("evaluate", beam="4")),
     "evaluate.beam: expected an integer, got '4'", "experiments/demo.yaml"),
    ("pipeline-evaluate-negative-lenpen", lambda w, d: pipeline(w, d, section("evaluate", lenpen=-1.0)),
     "evaluate.lenpen must be >= 0", "0: no length normalisation"),
    ("pipeline-evaluate-zero-max-tokens", lambda w, d: pipeline(w, d, section("evaluate", max_tokens=0)),
     "evaluate.max_tokens must be >= 1", ">= 1"),
    ("pipeline-evaluate-unknown-export", lambda w, d: pipeline(w, d, section("evaluate", export=["tflite"])),
     "evaluate.export: unknown variant 'tflite'", "onnx-int8"),
    ("pipeline-evaluate-export-twice", lambda w, d: pipeline(w, d, section("evaluate", export=["onnx", "onnx"])),
     "evaluate.export lists a variant twice", "['onnx', 'onnx']"),
    ("pipeline-evaluate-export-text", lambda w, d: pipeline(w, d, section("evaluate", export="onnx")),
     "evaluate.export: expected a list", "experiments/demo.yaml"),
]


def _truncate_last(run: Path) -> Path:
    """Both full states damaged: with a good checkpoint_prev.pt the resume would continue from it."""
    for name in ("checkpoint_last.pt", "checkpoint_prev.pt"):
        if (run / name).is_file():
            truncated(run / name, run / name, keep=0.6)
    return run


def _without(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).unlink()
    return folder


def _foreign_parquet(d: Path) -> Path:
    pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}).to_parquet(d / "t.parquet")
    return d / "t.parquet"


def _snapshot(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def cli_logging():
    """Route logging to (captured) stderr the way the console script does: main()'s
    basicConfig only installs its handler when the root logger has none."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers.clear()
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def test_table_has_every_command_and_enough_rows():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    prefixes = {c[0].split("-")[0] for c in CASES}
    assert {"space", "arch", "import", "train", "evaluate", "measure", "collect", "fit", "eval", "search",
            "pipeline"} <= prefixes
    # the experiment-file rows cover every section of the file
    sections = {c[0].split("-")[1] for c in CASES if c[0].startswith("pipeline-")}
    assert {"data", "device", "supernet", "latency", "search", "train", "evaluate"} <= sections


class RayStarted(BaseException):
    """Raised by the patched ray.init: escapes the CLI's error handling."""


@pytest.mark.parametrize("build, needle, fix", [pytest.param(*row[1:4], id=row[0], marks=row[4:]) for row in CASES])
def test_bad_input(ws, tmp_path, capsys, cli_logging, monkeypatch, build, needle, fix):
    import ray

    def no_ray(*args, **kwargs):
        raise RayStarted("a bad input must be refused before Ray starts")

    monkeypatch.setattr(ray, "init", no_ray)
    argv = [str(a) for a in build(ws, tmp_path)]
    before = _snapshot(tmp_path, ws.root)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit from inside the parser
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert out == "", out
    assert err.startswith("hat-ray: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert needle in err, f"problem not named ({needle!r}): {err}"
    assert fix in err, f"no fix suggested ({fix!r}): {err}"
    assert _snapshot(tmp_path, ws.root) == before  # nothing written, changed or deleted
    assert not (tmp_path / "PWNED").exists()


def test_console_script_prints_the_same_single_line(ws, tmp_path):
    """The real console script (own process: logging, warnings, exit code) agrees with the table."""
    _, build, needle, *_ = next(c for c in CASES if c[0] == "train-resume-truncated")
    argv = [str(a) for a in build(ws, tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "hat_ray.cli.main", *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hat-ray: error: "), proc.stderr
    assert needle in proc.stderr


def test_the_experiment_rows_start_from_a_valid_file(ws, tmp_path):
    """Each pipeline row is refused for its own mistake: the file it edits passes the check."""
    from hat_ray.pipeline.config import Experiment

    exp = Experiment.load(experiment_yaml(ws, tmp_path, lambda e: None))
    assert exp.devices[0].limits_ms == ("p40", 30)


def test_a_bad_experiment_reports_every_problem_in_one_line(ws, tmp_path, capsys, cli_logging, monkeypatch):
    """Problems of every kind in several sections (a typo, a wrong type, a value out of range, an
    unknown name, a device that does not exist, contradicting settings), all in the one line."""
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: (_ for _ in ()).throw(RayStarted("no Ray for a bad file")))

    def edit(e: dict) -> None:
        e["supernet"].update(max_update=5, threads=0)
        e["data"].update(test_split="tst", vocab_size="big")
        e["devices"].append({"profile": "rpi5", "limits_ms": ["12xyz", "p40"]})
        e["latency"].update(model="mlp")
        e["search"].update(parents=9, margin=-1.0)
        e["train"].update(baselines=["largest", "tall"], max_updates=None)
        e["evaluate"].update(beam=0)

    argv = [str(a) for a in pipeline(ws, tmp_path, edit)]
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("hat-ray: error: ") and err.count("\n") == 1, err
    for needle in ("12 problems", "supernet: unknown key(s) max_update (did you mean max_updates?)",
                   "supernet.threads must be >= 1", "data.test_split: unknown split 'tst'",
                   "data.vocab_size: expected an integer, got 'big'",
                   "devices[1].profile: unknown device profile 'rpi5'",
                   "devices[1].limits_ms: '12xyz' is neither", "latency.model must be one of",
                   "search.parents (9) must be <= population (6)", "search.margin must be >= 0",
                   "train.baselines: unknown ['tall']", "train: give max_minutes or max_updates",
                   "evaluate.beam must be >= 1", "experiments/demo.yaml"):
        assert needle in err, f"{needle!r} not reported: {err}"
    assert _snapshot(tmp_path) == before  # the out folder holds only what it held before

