"""`hat-ray train supernet|subnet`: runs, resume, inherited weights, one-line errors that destroy nothing."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from tiny_space import tiny_space_dict, write_tiny_run_inputs

from hat_ray.checkpoint import load_checkpoint, model_from_checkpoint
from hat_ray.cli.main import main
from hat_ray.model.extract import extract_subnet
from hat_ray.space import SearchSpace

TINY = tiny_space_dict()
FAST = ["--max-tokens", "300", "--warmup-updates", "2", "--vocab-size", "350", "--log-every", "1", "--threads", "1",
        "--validate-every", "2", "--save-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return write_tiny_run_inputs(tmp_path_factory.mktemp("cli"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def supernet(env, out, *extra):
    return ["train", "supernet", "--space", env / "tiny.yaml", "--data", env / "data", "--out", out, *FAST, *extra]


def test_supernet_run_resume_and_guards(env, capsys):
    out = env / "super"
    code, stdout, err = run(capsys, *supernet(env, out, "--max-updates", "4", "--json"))
    assert code == 0, err
    assert json.loads(stdout)["update"] == 4
    assert (out / "tb").is_dir() and any((out / "tb").iterdir())
    before = (out / "checkpoint_last.pt").read_bytes()
    code, _, err = run(capsys, *supernet(env, out, "--max-updates", "6"))  # no --resume: refuse, keep the run
    assert code == 2 and err.count("\n") == 1 and "--resume" in err
    assert (out / "checkpoint_last.pt").read_bytes() == before
    code, stdout, err = run(capsys, *supernet(env, out, "--max-updates", "6", "--resume"))
    assert code == 0, err and "trained 6 updates" in stdout
    updates = [json.loads(x)["update"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert updates == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(out / "checkpoint_last.pt")["progress"]["update"] == 6


def test_subnet_inherits_supernet_weights(env, capsys):
    code, _, err = run(capsys, *supernet(env, env / "sup2", "--max-updates", "2"))
    assert code == 0, err
    space = SearchSpace.from_dict(TINY)
    arch = space.smallest()
    (env / "arch.yaml").write_text(yaml.safe_dump(arch.to_hat()))  # HAT's YAML keys are accepted too
    super_ckpt = env / "sup2" / "checkpoint_last.pt"
    code, _, err = run(capsys, "train", "subnet", "--arch", env / "arch.yaml", "--space", env / "tiny.yaml",
                       "--data", env / "data", "--out", env / "sub", "--init-from", super_ckpt, "--max-updates", "0",
                       *FAST)
    assert code == 0, err
    sub = load_checkpoint(env / "sub" / "checkpoint_last.pt")
    assert sub["kind"] == "subnet" and sub["arch"] == arch.to_dict()
    assert sub["tokenizer"] == load_checkpoint(super_ckpt)["tokenizer"]
    want = extract_subnet(model_from_checkpoint(load_checkpoint(super_ckpt))[0], arch).state_dict()
    assert all(torch.equal(sub["model"][k], want[k]) for k in want)
    code, _, err = run(capsys, "train", "subnet", "--arch", env / "arch.yaml", "--space", env / "tiny.yaml",
                       "--data", env / "data", "--out", env / "sub2", "--init-from", env / "sub" / "checkpoint_last.pt",
                       "--max-updates", "1", *FAST)
    assert code == 2 and "must be a SuperTransformer" in err


@pytest.mark.parametrize("case", ["resume-nothing", "bad-corpus", "missing-data-dir", "bad-arch", "no-budget",
                                  "unknown-data", "gpu-without-cuda", "unreachable-address"])
def test_bad_input_is_one_line_exit_2(env, capsys, tmp_path, case):
    args = supernet(env, tmp_path / "out", "--max-updates", "1")
    if case == "resume-nothing":
        args.append("--resume")
    elif case == "bad-corpus":
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "train.src").write_text("a\nb\n")
        (bad / "train.tgt").write_text("A\n")
        (bad / "valid.src").write_text("a\n")
        (bad / "valid.tgt").write_text("A\n")
        args[args.index("--data") + 1] = bad
    elif case == "missing-data-dir":
        args += ["--data", "multi30k", "--data-dir", tmp_path / "nowhere"]
    elif case == "bad-arch":
        (tmp_path / "arch.yaml").write_text(yaml.safe_dump({**SearchSpace.load("demo").largest().to_dict()}))
        args = ["train", "subnet", "--arch", tmp_path / "arch.yaml", *args[2:]]
    elif case == "no-budget":
        args = supernet(env, tmp_path / "out")
    elif case == "gpu-without-cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU (tests/test_gpu.py trains on it)")
        args.append("--gpu")
    elif case == "unreachable-address":  # refused in seconds, before the data is prepared
        args += ["--workers", "2", "--address", "127.0.0.1:1"]
    else:
        args += ["--data", "no_such_dataset"]
    code, _, err = run(capsys, *args)
    assert code == 2 and err.startswith("hat-ray: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "checkpoint_last.pt").exists()
    expected = {"resume-nothing": "no checkpoint to resume", "bad-corpus": "train.src has 2 lines but",
                "missing-data-dir": "does not exist", "bad-arch": "does not fit", "no-budget": "--max-updates",
                "unknown-data": "not a dataset name", "gpu-without-cuda": "torch sees no CUDA GPU",
                "unreachable-address": "cannot reach a Ray cluster at 127.0.0.1:1"}[case]
    assert expected in err


def test_spec_paths_are_absolute(env, monkeypatch):
    """Ray Train workers run in another working directory; evaluate may run from anywhere."""
    from pathlib import Path

    from hat_ray.train.config import TrainConfig
    from hat_ray.train.run import DataOptions, make_spec

    monkeypatch.chdir(env)
    spec = make_spec(SearchSpace.from_dict(TINY), TrainConfig(max_updates=1), DataOptions("data", vocab_size=350),
                     "relative_out")
    assert Path(spec.out) == env / "relative_out" and Path(spec.data_info["data"]) == env / "data"


@pytest.mark.parametrize(("flag", "good", "key", "value", "updates", "bad", "message"), [
    ("--largest-prob", "1", "largest_prob", 1.0, 2, "2", "largest_prob must be in [0, 1]"),
    ("--largest-first", "2", "largest_first", 2, 3, "-5", "largest_first must be >= 0"),
    ("--largest-first-minutes", "10", "largest_first_minutes", 10.0, 3, "-1", "largest_first_minutes must be >= 0"),
])
def test_largest_arch_options_reach_the_run_and_are_validated(env, capsys, flag, good, key, value, updates, bad,
                                                              message):
    """Both options make the first two updates train the largest Arch; bad values are one-line errors."""
    out = env / key
    code, _, err = run(capsys, *supernet(env, out, "--max-updates", str(updates), flag, good))
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint_last.pt")["train_config"][key] == value
    largest = SearchSpace.from_dict(TINY).largest().key()
    archs = [json.loads(x)["archs"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert archs[:2] == [[largest]] * 2 and len(archs) == updates
    code, _, err = run(capsys, *supernet(env, env / f"{key}_bad", "--max-updates", "2", flag, bad))
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (env / f"{key}_bad" / "checkpoint_last.pt").exists()
