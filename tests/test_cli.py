"""CLI contracts: `hat-ray space show`, `hat-ray arch info --json`, one-line errors with exit 2."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from hat_ray.cli.main import main
from hat_ray.space import SearchSpace

TASK_SPACE = {"iwslt14deen": "iwslt14_de_en", "wmt14ende": "wmt14_en_de", "wmt14enfr": "wmt14_en_fr",
              "wmt19ende": "wmt19_en_de"}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_arch_info_reproduces_hat_published_params_and_flops(capsys, shared_data):
    folder = shared_data / "hat_subconfigs"
    rows = list(csv.DictReader((folder / "EXPECTED.csv").open()))
    assert len(rows) == 44
    worst = 0.0
    for row in rows:
        code, out, err = run(capsys, "arch", "info", str(folder / row["file"]), "--space",
                             TASK_SPACE[row["task"]], "--json")
        assert code == 0, err
        info = json.loads(out)
        assert set(info) == {"params", "params_m", "flops", "flops_g", "features"}
        assert f"{info['params'] / 1e6:.2f}" == row["params_m"], row["file"]
        assert info["params_m"] == float(row["params_m"])
        assert abs(info["flops"] / 1e9 - float(row["flops_g"])) <= 0.03, row["file"]
        worst = max(worst, abs(info["flops"] / 1e9 - float(row["flops_g"])))
        assert len(info["features"]) == 10 and all(isinstance(v, float) for v in info["features"])
    assert worst < 0.02


def test_arch_info_accepts_hat_ray_format(capsys, tmp_path):
    space = SearchSpace.load("demo")
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(space.largest().to_dict()))
    code, out, _ = run(capsys, "arch", "info", str(path), "--space", "demo", "--json")
    assert code == 0 and json.loads(out)["params"] == 7372800


def test_space_show(capsys):
    code, out, _ = run(capsys, "space", "show", "wmt14_en_de", "--json")
    data = json.loads(out)
    assert code == 0 and data["name"] == "wmt14_en_de" and data["super"]["qkv_dim"] == 512
    assert SearchSpace.from_dict({k: data[k] for k in ("name", "description", "super", "choices", "latency_choices")})
    code, out, _ = run(capsys, "space", "show", "iwslt14_de_en")
    assert code == 0 and "separate embeddings" in out and "latency datasets" in out
    code, out, _ = run(capsys, "space", "list")
    assert "demo" in out.split()


@pytest.mark.parametrize(
    "content, needle",
    [
        ("encoder-embed-dim-subtransformer: [oops\n", "not valid YAML"),
        ("encoder_embed_dim: 256\n", "missing key"),
        ("- 1\n- 2\n", "expected a mapping"),
        (None, "does not exist"),
    ],
)
def test_arch_info_bad_input_one_line_exit_2(capsys, tmp_path, content, needle):
    path = tmp_path / "arch.yaml"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "arch", "info", str(path), "--space", "demo", "--json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_arch_outside_space_lists_each_problem(capsys, tmp_path):
    arch = SearchSpace.load("wmt14_en_de").largest().to_dict()
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(arch))
    code, _, err = run(capsys, "arch", "info", str(path), "--space", "demo", "--json")
    assert code == 2 and "encoder_embed_dim=640 not in [256, 192]" in err and "decoder_layers=6" in err


def test_bad_space_file_exit_2(capsys, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("name: x\nsuper: {qkv_dim: 0}\nchoices: {}\nextra: 1\n")
    code, _, err = run(capsys, "space", "show", str(path))
    assert code == 2 and err.count("\n") == 1 and "problems" in err and "extra" in err
    code, _, err = run(capsys, "space", "show", "no_such_space")
    assert code == 2 and "unknown search space 'no_such_space'" in err and "wmt14_en_de" in err


def test_console_script_end_to_end(tmp_path):
    exe = shutil.which("hat-ray") or str(__import__("pathlib").Path(sys.executable).parent / "hat-ray")
    ok = subprocess.run([exe, "space", "show", "demo", "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["name"] == "demo"
    bad = subprocess.run([exe, "arch", "info", "/nonexistent.yaml", "--space", "demo"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
    usage = subprocess.run([exe, "arch", "info"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2


def test_os_error_is_one_line_exit_2(capsys, monkeypatch):
    """The safety net for the machine's faults (disk full, permissions) in any command."""
    import errno

    def full_disk(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoint_last.pt")

    monkeypatch.setattr(SearchSpace, "load", classmethod(full_disk))
    code, out, err = run(capsys, "space", "show", "demo")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "/data/run/checkpoint_last.pt" in err and "No space left on device" in err and "free disk space" in err
