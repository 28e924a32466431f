"""`hat-ray pipeline` end to end on a tiny experiment: every stage, the report, caching, a kill
during the search stage followed by a re-run that skips the finished stages, `--from`, stale
settings, and experiment-file validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_space import tiny_space_dict

from hat_ray.cli.main import main
from hat_ray.data.synthetic import synthetic_split
from hat_ray.errors import ConfigError
from hat_ray.pipeline.baselines import baselines, uniform_arch
from hat_ray.pipeline.config import Experiment, parse_limit
from hat_ray.pipeline.run import NAMES, fingerprints
from hat_ray.pipeline.stages import search as search_stage
from hat_ray.pipeline.stages import train as train_stage
from hat_ray.pipeline.stages.context import Context
from hat_ray.resources import bundled_names
from hat_ray.space import SearchSpace

HAT_RAY = [sys.executable, "-m", "hat_ray.cli.main"]


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 400), ("valid", 40), ("test", 30)):
        c = synthetic_split(split, size=n)
        (folder / f"{split}.en").write_text("\n".join(c.src) + "\n")
        (folder / f"{split}.de").write_text("\n".join(c.tgt) + "\n")
    return folder


def _experiment(tmp: Path, **changes) -> dict:
    space = tmp / "tiny.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict()))
    exp = {
        "name": "tiny", "space": str(space), "out": str(tmp / "run"),
        "devices": [{"profile": "local_cpu", "limits_ms": ["p40", "1.1ref"]}],
        "data": {"name": str(_corpus(tmp / "data")), "src_lang": "en", "tgt_lang": "de", "vocab_size": 200, "valid_sentences": 20, "test_sentences": 12},
        "supernet": {"max_updates": 12, "max_tokens": 512, "lr": 0.002, "warmup_updates": 4, "validate_every": 0,
                     "save_every": 4, "threads": 1},
        "latency": {"archs": 14},
        "search": {"scorers": 1, "population": 6, "parents": 2, "mutations": 2, "crossovers": 2, "iterations": 4,
                   "max_tokens": 512},
        "train": {"max_updates": 2, "baselines": ["largest", "smallest"], "max_tokens": 512, "warmup_updates": 1,
                  "threads": 1},
        "evaluate": {"beam": 1},
    }
    for key, value in changes.items():
        exp[key] = {**exp[key], **value} if isinstance(value, dict) else value
    return exp


def _write(tmp: Path, exp: dict) -> Path:
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def _env() -> dict:
    return {**os.environ, "HAT_RAY_DASHBOARD": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory):
    """Run the pipeline in a subprocess, SIGKILL it once the search has logged evaluations, then
    re-run it to the end."""
    tmp = tmp_path_factory.mktemp("pipeline")
    config = _write(tmp, _experiment(tmp, evaluate={"export": ["onnx", "onnx-int8"]}))  # deployed variants too
    run = tmp / "run"
    log1 = (tmp / "first.log").open("w")
    proc = subprocess.Popen([*HAT_RAY, "pipeline", str(config)], stdout=log1, stderr=subprocess.STDOUT, env=_env(),
                            start_new_session=True)
    deadline = time.time() + 300
    evals = run / "search"
    try:
        while time.time() < deadline and proc.poll() is None:
            logs = list(evals.glob("*/evaluations.jsonl"))
            if logs and sum(len(p.read_text().splitlines()) for p in logs) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"pipeline ended before the search: {(tmp / 'first.log').read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads((run / "pipeline.json").read_text())
    before = set(state["stages"])
    second = subprocess.run([*HAT_RAY, "pipeline", str(config), "--json"], capture_output=True, text=True, env=_env(),
                            timeout=600)
    assert second.returncode == 0, second.stderr[-4000:]
    return tmp, config, before, second


def test_kill_during_search_then_rerun_skips_finished_stages(killed_and_rerun):
    tmp, _, before, second = killed_and_rerun
    assert before == {"supernet", "latency", "predictor"}  # killed inside the search stage
    for stage in ("supernet", "latency", "predictor"):
        assert f"{stage}: cached" in second.stderr
    assert "(resuming)" in second.stderr  # the interrupted search continued from its log
    run = tmp / "run"
    for log in (run / "search").glob("*/evaluations.jsonl"):
        keys = [json.loads(line)["key"] for line in log.read_text().splitlines() if line.strip()]
        assert len(keys) == len(set(keys)), f"{log}: an Arch was evaluated twice"
    summary = json.loads(second.stdout)
    assert set(summary) == set(NAMES)


def test_report_and_outputs(killed_and_rerun):
    tmp, _, _, second = killed_and_rerun
    run = tmp / "run"
    summary = json.loads(second.stdout)
    for name in ("report.md", "pareto.png", "latency_pred_vs_measured.png", "bleu_vs_latency.png", "experiment.yaml"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    searched = summary["search"]
    assert set(searched) == {"local_cpu-p40", "local_cpu-1.1ref"}
    for s in searched.values():
        assert s["predicted_ms"]["local_cpu"] <= s["limit_ms"] + 1e-9
    # local_cpu measures with the reference protocol: its predictor works in reference units, and a
    # limit of 1.1ref is 1.1 x the reference's calibrated ms
    pred = summary["predictor"]["local_cpu"]
    assert pred["unit"] == "ref" and pred["reference"]["ms"] > 0
    assert searched["local_cpu-1.1ref"]["limit_ms"] == pytest.approx(1.1 * pred["reference"]["ms"])
    models = summary["evaluate"]["models"]
    roles = {m["role"] for m in models}
    assert roles == {"searched", "baseline"}
    for m in models:
        assert m["measured_ms"]["local_cpu"] > 0 and m["predicted_ms"]["local_cpu"] > 0
        assert m["measured_ref"]["local_cpu"] > 0 and m["predicted_ref"]["local_cpu"] > 0
        assert m["valid_loss"] > 0 and m["test_loss"] > 0 and m["valid_loss"] != m["test_loss"]  # two splits
        assert 0 <= m["sacrebleu"] <= 100 and "nrefs:1" in m["signature"]
        assert (run / "train" / m["name"] / "checkpoint_last.pt").is_file()
    for m in models:  # the searched models' deployed variants, translated through their exported graphs
        if m["role"] == "searched":
            assert set(m["exports"]) == {"onnx", "onnx-int8"}
            fp32, int8 = m["exports"]["onnx"], m["exports"]["onnx-int8"]
            assert fp32["same_as_torch"] == m["test_sentences"] and fp32["sacrebleu"] == pytest.approx(m["sacrebleu"])
            assert 0 < int8["bytes"] < fp32["bytes"] and 0 <= int8["sacrebleu"] <= 100
            assert (run / "export" / f"{m['name']}-onnx-int8" / "manifest.json").is_file()
        else:
            assert "exports" not in m
    report = (run / "report.md").read_text()
    assert "## Deployed variants" in report and "onnx-int8" in report
    assert "## Trained models" in report and "baseline-largest" in report and "local_cpu-p40" in report
    assert "units of the reference Arch" in report and "local_cpu_measured_ref" in report
    assert len(summary["report"]["table"]) == len(models)
    claims = summary["report"]["claims"]  # HAT's claim, in words, for each searched model
    assert sorted(c["model"] for c in claims) == sorted(m["name"] for m in models if m["role"] == "searched")
    for c in claims:
        assert c["unit"] == "x ref"
        words = {True: "the claim holds", False: "the claim does not hold", None: "cannot be checked"}[c["holds"]]
        assert f"**{c['model']}** (" in report and words in report.split(f"**{c['model']}** (")[1].split("\n")[0]


def test_finished_pipeline_is_fully_cached_and_status(killed_and_rerun, capsys):
    tmp, config, _, _ = killed_and_rerun
    t0 = time.time()
    assert main(["pipeline", str(config), "--json"]) == 0
    out = capsys.readouterr()
    assert time.time() - t0 < 30
    assert all(f"{s}: cached" in out.err for s in NAMES)
    assert main(["pipeline", str(config), "--status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["done"] * len(NAMES)


def test_changed_settings_are_refused_then_from_reruns(killed_and_rerun, capsys):
    tmp, config, _, _ = killed_and_rerun
    exp = yaml.safe_load(config.read_text())
    exp["evaluate"]["beam"] = 2
    changed = tmp / "changed.yaml"
    changed.write_text(yaml.safe_dump(exp))
    report = (tmp / "run" / "report.md").read_bytes()
    assert main(["pipeline", str(changed)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--from evaluate" in err and len(err.splitlines()) == 1
    assert (tmp / "run" / "report.md").read_bytes() == report  # nothing touched
    assert main(["pipeline", str(changed), "--status", "--json"]) == 0
    status = {r["stage"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert status["train"] == "done" and status["evaluate"] == "stale" and status["report"] == "stale"
    # --from re-runs that stage (its outputs replaced) and keeps everything before it
    (tmp / "run" / "bleu_vs_latency.png").write_bytes(b"stale")
    assert main(["pipeline", str(config), "--from", "report", "--json"]) == 0
    out = capsys.readouterr()
    assert "evaluate: cached" in out.err and "report: write" in out.err
    assert (tmp / "run" / "bleu_vs_latency.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(out.out)["report"]["table"]


def test_experiment_validation_reports_every_problem(tmp_path):
    exp = _experiment(tmp_path)
    exp["supernet"]["max_tokens"] = "many"
    exp["search"]["algorithm"] = "genetic"
    exp["devices"][0]["limits_ms"] = ["fast", -3]
    exp["bogus"] = 1
    with pytest.raises(ConfigError) as info:
        Experiment.from_dict(exp, "x.yaml")
    msg = str(info.value)
    for needle in ("bogus", "supernet.max_tokens", "expected an integer"):
        assert needle in msg, msg
    exp = _experiment(tmp_path)
    exp["search"]["algorithm"] = "genetic"
    exp["devices"][0]["limits_ms"] = ["fast", -3]
    with pytest.raises(ConfigError) as info:
        Experiment.from_dict(exp, "x.yaml")
    assert "genetic" in str(info.value) and "'fast'" in str(info.value) and "-3" in str(info.value)
    assert parse_limit("p30") == ("percentile", 30.0) and parse_limit(80) == ("ms", 80.0)
    assert parse_limit("p100") is None and parse_limit(True) is None
    assert parse_limit("1.2ref") == ("ref", 1.2) and parse_limit("0ref") is None and parse_limit("ref") is None
    exp = _experiment(tmp_path)
    exp["devices"][0].update(limits_ms=["1.5ref"], latency_data="hat.csv")
    with pytest.raises(ConfigError, match="reference units, but the device's latency_data is imported"):
        Experiment.from_dict(exp, "x.yaml")


@pytest.mark.parametrize("argv,needle", [
    (["pipeline", "/nonexistent/exp.yaml"], "does not exist"),
    (["pipeline", "demo", "--from", "nothing"], "not a stage"),
])
def test_pipeline_cli_errors(argv, needle, capsys, tmp_path):
    assert main([*argv[:2], "--out", str(tmp_path / "o"), *argv[2:]]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_fingerprints_chain_and_bundled_experiments_load():
    exp = Experiment.load("demo")
    other = Experiment.from_dict({**exp.to_dict(), "search": {**exp.section("search"), "seed": 7}})
    a, b = fingerprints(exp), fingerprints(other)
    assert [a[s] == b[s] for s in NAMES] == [True, True, True, False, False, False, False]
    # a setting added later leaves runs from before alone at its default, and counts once set
    # the demo's fingerprint before `largest_prob` and `largest_first` existed (update it when
    # experiments/demo.yaml changes otherwise; the demo sets largest_first_minutes since)
    before = exp.to_dict()
    assert before["supernet"].pop("largest_first_minutes") == 2
    before = Experiment.from_dict(before)
    assert fingerprints(before)["supernet"] == "688cf7233dac5b27" != a["supernet"]
    for added in ({"largest_prob": 0.25}, {"largest_first": 300}):
        changed = Experiment.from_dict({**before.to_dict(), "supernet": {**before.section("supernet"), **added}})
        assert fingerprints(changed)["supernet"] != "688cf7233dac5b27", added
    wmt = Experiment.load("wmt14_en_de_hat")
    assert [d.profile for d in wmt.devices] == ["raspberrypi4", "xeon_e5_2640", "titanxp"]


@pytest.mark.parametrize("name", bundled_names("experiments"))
def test_bundled_experiments_pass_the_check(name):
    assert Experiment.load(name).check() == []


def test_the_demo_commands_experiments_pass_the_check(tmp_path, monkeypatch):
    """`make demo` (`hat-ray demo --out runs/demo`) and `hat-ray demo --data-dir DIR` (Multi30k)
    build experiments that pass the check."""
    from hat_ray.cli import pipeline_cmd

    folder = tmp_path / "multi30k"
    folder.mkdir()
    for stem in ("train", "val", "test_2016_flickr"):  # Multi30k's file names
        for lang in ("en", "de"):
            (folder / f"{stem}.{lang}").write_text("a b\n")
    built: list = []
    monkeypatch.setattr(pipeline_cmd, "_run", lambda exp, args, status_only: built.append(exp) or 0)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    assert main(["demo", "--out", str(tmp_path / "demo"), "--data-dir", str(folder)]) == 0
    assert [e.data.name for e in built] == ["synthetic", "multi30k"]
    assert [e.check() for e in built] == [[], []]
    assert built[0].evaluate.export == ("onnx", "onnx-int8")
    # without ONNX Runtime installed, the demo runs without its deployed variants (and says so)
    monkeypatch.setattr("hat_ray.export.folder.find_spec", lambda name: None)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    assert built[-1].evaluate.export == () and built[-1].check() == []


def test_a_named_dataset_that_cannot_be_read_is_refused_before_any_stage(tmp_path, monkeypatch):
    """Neither in the cache nor to be downloaded, or a half-prepared cache folder: refused by the
    check, not by the supernet stage (the bad-input table cannot set the cache folder)."""
    monkeypatch.setenv("HAT_RAY_DATA", str(tmp_path / "cache"))
    exp = _experiment(tmp_path, data={"name": "iwslt14_de_en", "download": False})
    with pytest.raises(ConfigError, match=r"data.download: iwslt14_de_en is not in the cache .* download is false"):
        Experiment.from_dict(exp, "x.yaml")
    (tmp_path / "cache" / "iwslt14_de_en").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"data.name: the cache folder .*iwslt14_de_en is incomplete"):
        Experiment.from_dict(exp, "x.yaml")


def test_baselines_are_uniform_and_in_the_space():
    space = SearchSpace.from_dict(tiny_space_dict())
    found = baselines(space, ["largest", "shallow", "narrow", "smallest", "medium"])
    assert found["largest"].decoder_layers == 2 and found["smallest"].decoder_embed_dim == 24
    assert found["shallow"].decoder_layers == 1 and found["shallow"].decoder_embed_dim == 32
    for arch in found.values():
        space.check(arch)
        assert len(set(arch.decoder_ffn_embed_dim)) == 1 and set(arch.decoder_arbitrary_ende_attn) == {-1}
    assert uniform_arch(space, 1.0, 1.0) == found["largest"]


def test_resource_settings_of_train_and_search_are_validated_at_once(tmp_path):
    exp = _experiment(tmp_path, train={"workers": 0, "cpus_per_worker": 0, "gpu": "yes"},
                      search={"cpus_per_scorer": 0, "gpu": 1}, supernet={"cpus_per_worker": 0})
    with pytest.raises(ConfigError) as info:
        Experiment.from_dict(exp, "x.yaml")
    msg = str(info.value)
    assert "train.gpu: expected true/false, got 'yes'" in msg and "search.gpu: expected true/false, got 1" in msg
    exp = _experiment(tmp_path, train={"workers": 0, "cpus_per_worker": 0}, search={"cpus_per_scorer": 0},
                      supernet={"cpus_per_worker": -1})
    with pytest.raises(ConfigError) as info:
        Experiment.from_dict(exp, "x.yaml")
    msg = str(info.value)
    for key in ("train.workers", "train.cpus_per_worker", "search.cpus_per_scorer", "supernet.cpus_per_worker"):
        assert f"{key} must be >= 1" in msg, msg
    ok = Experiment.from_dict(_experiment(tmp_path, train={"workers": 3, "cpus_per_worker": 2, "gpu": True},
                                          search={"gpu": True, "cpus_per_scorer": 2}))
    assert (ok.train.workers, ok.train.cpus_per_worker, ok.train.gpu) == (3, 2, True)
    options = search_stage.search_options(ok)
    assert options.use_gpu and options.scorer_cpus == 2 and options.threads_per_scorer == 2


def test_new_resource_settings_keep_old_fingerprints_until_set():
    demo = Experiment.load("demo").to_dict()
    assert demo["evaluate"].pop("export") == ["onnx", "onnx-int8"]  # set since: the evaluate stage's only change
    assert demo["supernet"].pop("largest_first_minutes") == 2  # set since (issue 20)
    exp = Experiment.from_dict(demo)
    # experiments/demo.yaml's fingerprints from before train.workers/cpus_per_worker/gpu,
    # search.gpu/cpus_per_scorer and evaluate.export existed (update them when demo.yaml changes)
    assert fingerprints(exp) == {
        "supernet": "688cf7233dac5b27", "latency": "62637552fc5804c2", "predictor": "9d01d7f8f6f1586f",
        "search": "2c610d2ba5b21c2a", "train": "ceeda1a83f3d6674", "evaluate": "ee3a9a1917608a30",
        "report": "97803d81a4a1ece6"}
    for section, added, first_changed in (("train", {"workers": 2}, "train"), ("train", {"gpu": True}, "train"),
                                          ("search", {"gpu": True}, "search"),
                                          ("search", {"cpus_per_scorer": 2}, "search"),
                                          ("evaluate", {"export": ["onnx"]}, "evaluate")):
        changed = fingerprints(Experiment.from_dict({**exp.to_dict(), section: {**exp.section(section), **added}}))
        before = NAMES[:NAMES.index(first_changed)]
        assert [changed[s] == fingerprints(exp)[s] for s in NAMES] == [s in before for s in NAMES], added


def test_train_stage_trains_each_model_on_ray_train_workers_of_the_cluster(tmp_path, monkeypatch):
    exp = Experiment.from_dict(_experiment(tmp_path, train={"workers": 2, "cpus_per_worker": 1, "gpu": False,
                                                            "init": "scratch", "baselines": ["largest", "smallest"]}))
    ctx = Context(exp, tmp_path / "run", SearchSpace.load(exp.space), say=lambda msg: None)
    calls: list = []
    monkeypatch.setattr(Context, "connect", lambda self: calls.append("connect"))

    def fake_run(spec, workers=1, cpus_per_worker=1, use_gpu=False, address=None):
        calls.append((Path(spec.out).name, workers, cpus_per_worker, use_gpu))
        return {"update": 2}

    monkeypatch.setattr("hat_ray.train.run.run", fake_run)
    summary = train_stage.run(ctx, {"search": {}})
    assert calls == ["connect", ("baseline-largest", 2, 1, False), ("baseline-smallest", 2, 1, False)]
    assert [m["summary"] for m in summary["models"]] == [{"update": 2}] * 2


@pytest.mark.parametrize("section, key, value, needle", [
    ("search", "parents", 500, "search.parents (500) must be <= population (6)"),
    ("search", "mutation_prob", 7.0, "search.mutation_prob must be in [0, 1]"),
    ("search", "iterations", 0, "search.iterations must be >= 1"),
    ("search", "budget", 0, "search.budget must be >= 1"),
    ("search", "margin", -1.0, "search.margin must be >= 0"),
    ("search", "scorers", 0, "search.scorers must be >= 1"),
    ("search", "scorer_slots", 0, "search.scorer_slots must be >= 1"),
    ("train", "lr", -1.0, "train.lr must be > 0"),
    ("train", "dropout", 1.5, "train.dropout must be in [0, 1)"),
    ("supernet", "schedule", "cosin", "supernet.schedule must be one of"),
    ("supernet", "largest_prob", 2.0, "supernet.largest_prob must be in [0, 1]"),
    ("supernet", "max_tokens", 0, "supernet.max_tokens must be >= 1"),
    ("latency", "holdout", 0.95, "latency.holdout must be in [0, 0.9)"),
    ("evaluate", "beam", 0, "evaluate.beam must be >= 1"),
    ("data", "vocab_size", 3, "data.vocab_size must be >= 16"),
])
def test_bad_experiment_values_are_refused_before_any_stage(tmp_path, capsys, section, key, value, needle):
    exp = _experiment(tmp_path)
    exp[section][key] = value
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(exp))
    assert main(["pipeline", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hat-ray: error:") and needle in err, err
    assert not (tmp_path / "run").exists()  # refused before the first stage wrote anything


def test_from_stage_never_deletes_a_folder_that_is_not_a_pipelines(tmp_path, capsys):
    exp = _experiment(tmp_path)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(exp))
    precious = tmp_path / "run" / "train" / "thesis.tex"  # --out points at someone's folder
    precious.parent.mkdir(parents=True)
    precious.write_text("years of work")
    assert main(["pipeline", str(config), "--from", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no pipeline.json" in err and "refusing to delete" in err and len(err.splitlines()) == 1
    assert precious.read_text() == "years of work"


def test_a_failed_latency_measurement_does_not_crash_the_report_or_the_benchmark():
    import importlib.util

    from hat_ray.pipeline.report import _bleu_png, model_table

    def model(name, role, measured):
        return {"name": name, "role": role, "params": 3e6, "flops": 1e9, "valid_loss": 7.0, "sacrebleu": 5.0,
                "tok_bleu": 5.0, "predicted_ms": {"local_cpu": 20.0}, "measured_ms": {"local_cpu": measured}}

    models = [model("hat-a", "searched", 21.0), model("baseline-b", "baseline", None),
              model("baseline-c", "baseline", 30.0)]
    assert _bleu_png(models, ["local_cpu"])[:4] == b"\x89PNG"
    assert model_table(models, ["local_cpu"])[1]["local_cpu_measured_ms"] is None
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hat_multi30k.py"
    spec = importlib.util.spec_from_file_location("hat_multi30k", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.compare(models)
    assert rows[0]["baselines_at_or_above"] == ["baseline-c"] and rows[0]["claim_holds"] is False
    assert "| baseline-b | baseline | 3.00 | - |" in bench.markdown(models, rows)
    # seeds and the untouched test sets: the claim per split, mean and sd over the seeds
    for m, bleu in zip(models, (7.0, 1.0, 6.0)):
        m["sacrebleu_by_split"] = {"test": m["sacrebleu"], "test2017_mscoco": bleu}
    assert bench.compare(models, "test2017_mscoco")[0]["claim_holds"] is True  # 7.0 > 6.0
    second = [{**m, "sacrebleu_by_split": {"test": m["sacrebleu"] + 1, "test2017_mscoco": 2.0}} for m in models]
    per_seed = {s: {"models": ms, "comparison": {sp: bench.compare(ms, sp) for sp in ("test", "test2017_mscoco")}}
                for s, ms in ((1, models), (2, second))}
    agg = bench.aggregate(per_seed, ["test", "test2017_mscoco"])
    assert agg["sacrebleu"]["hat-a"]["test"] == {"mean": 5.5, "sd": 0.71, "values": [5.0, 6.0]}
    assert agg["claim_holds"]["hat-a"] == {"test": "0/2", "test2017_mscoco": "1/2"}
    assert "| hat-a | 5.50 +- 0.71 | 4.50 +- 3.54 |" in bench.markdown_seeds(agg, ["test", "test2017_mscoco"])


def test_hats_claim_is_judged_against_every_baseline_at_least_as_slow():
    from hat_ray.pipeline.report import claim_sentence, claims

    def model(name, role, ref, bleu, ms=None):
        return {"name": name, "role": role, "sacrebleu": bleu, "predicted_ms": {"local_cpu": 1.0},
                "measured_ms": {"local_cpu": ms if ms is not None else ref * 10}, "measured_ref": {"local_cpu": ref}}

    models = [model("hat-fast", "searched", 0.80, 30.0), model("hat-slow", "searched", 2.00, 33.0),
              model("baseline-smallest", "baseline", 0.50, 20.0), model("baseline-shallow", "baseline", 0.79, 25.0),
              model("baseline-largest", "baseline", 3.00, 35.0)]
    fast, slow = claims(models, ["local_cpu"])
    assert fast["unit"] == "x ref" and fast["model"] == "hat-fast"
    # 0.79 is within 3% of 0.80: equal latency, so it counts; the smallest (faster) does not
    assert [r["model"] for r in fast["against"]] == ["baseline-shallow", "baseline-largest"]
    assert fast["holds"] is False and slow["holds"] is False
    assert "the claim does not hold: baseline-largest is at least as slow" in claim_sentence(fast)
    models[-1]["sacrebleu"] = 29.0
    fast, slow = claims(models, ["local_cpu"])
    assert fast["holds"] is True and slow["holds"] is True
    assert "the claim holds: it beats every baseline of equal or higher latency" in claim_sentence(slow)
    models[-1]["measured_ref"]["local_cpu"] = 1.5  # no baseline as slow as hat-slow
    assert claims(models, ["local_cpu"])[1]["holds"] is None
    assert "cannot be checked" in claim_sentence(claims(models, ["local_cpu"])[1])
    for m in models:  # no reference units: measured ms
        del m["measured_ref"]
    assert claims(models, ["local_cpu"])[0]["unit"] == "ms"
    models[0]["measured_ms"]["local_cpu"] = None  # a searched model not measured: predicted ms
    assert claims(models, ["local_cpu"])[0]["unit"] == "ms (predicted)"
