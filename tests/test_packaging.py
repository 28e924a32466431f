"""Bundled data resolves from a checkout and from an installed wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from hat_ray.resources import bundled_names, data_dir

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_resolution():
    assert data_dir("search_spaces") == ROOT / "search_spaces"
    assert "wmt14_en_de" in bundled_names("search_spaces")


def test_wheel_carries_and_resolves_search_spaces(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("hat_ray-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert "hat_ray/search_spaces/demo.yaml" in names
    # run from the unpacked wheel only (not the checkout): resolution must find the packaged copy
    code = ("import hat_ray.resources as r, hat_ray.space as s; "
            "print(r.data_dir('search_spaces')); print(s.SearchSpace.load('wmt14_en_de').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[0] == str(site / "hat_ray" / "search_spaces") and lines[1] == "wmt14_en_de"
