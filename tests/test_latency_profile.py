"""Device profiles: bundled ones load and round-trip; a bad file reports every problem at once."""

from __future__ import annotations

import pytest

from hat_ray.errors import ConfigError
from hat_ray.latency import DeviceProfile
from hat_ray.resources import bundled_names

BUNDLED = ("cuda_gpu", "local_cpu", "local_cpu_int8", "local_cpu_ort", "raspberrypi4", "titanxp", "xeon_e5_2640")


def test_bundled_profiles_load_and_round_trip():
    assert set(BUNDLED) <= set(bundled_names("device_profiles"))
    for name in BUNDLED:
        profile = DeviceProfile.load(name)
        assert profile.name == name
        assert profile.ray.resource.startswith("device:")
        assert DeviceProfile.from_dict(profile.to_dict()) == profile


def test_hat_protocols():
    pi, xeon, gpu = (DeviceProfile.load(n) for n in ("raspberrypi4", "xeon_e5_2640", "titanxp"))
    for p in (pi, xeon, gpu):
        assert (p.protocol.batch, p.protocol.beam, p.dtype) == (1, 5, "float32")
        assert p.protocol.src_len is None and p.protocol.band == (0.1, 0.9)  # the space's 30 / 23 tokens
    assert (pi.protocol.runs, xeon.protocol.runs, gpu.protocol.runs) == (2, 20, 20)
    assert (pi.latency_normaliser_ms, xeon.latency_normaliser_ms, gpu.latency_normaliser_ms) == (5000, 300, 200)
    assert gpu.device == "cuda" and pi.ray.resource == "device:rpi4" and pi.ray.label == {"device": "rpi4"}


def test_bad_profile_lists_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: ''\ndevice: tpu\ndtype: int8\nthreads: -1\ncolour: red\n"
        "ray: {resource: CPU, num_cpus: -2, local: maybe}\n"
        "protocol: {runs: 0, max_runs: 5, band: [0.9, 0.1], statistic: mean, max_cv: 0, bogus: 1}\n"
    )
    with pytest.raises(ConfigError) as info:
        DeviceProfile.load(path)
    problems = info.value.problems
    for needle in ("name must be", "device must be", "dtype must be", "threads must be", "unknown top-level key 'colour'",
                   "missing top-level key 'latency_normaliser_ms'", "ray.resource", "ray.num_cpus", "ray.local",
                   "protocol.runs", "protocol.band", "protocol.statistic", "protocol.max_cv", "unknown key 'bogus'"):
        assert any(needle in p for p in problems), needle
    assert len(problems) >= 14


def test_unknown_and_unreadable_profiles(tmp_path):
    with pytest.raises(ConfigError, match="unknown device profile 'nope'.*local_cpu"):
        DeviceProfile.load("nope")
    bad = tmp_path / "x.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        DeviceProfile.load(bad)


def test_with_protocol_revalidates():
    p = DeviceProfile.load("local_cpu")
    assert p.with_protocol(runs=3).protocol.runs == 3
    with pytest.raises(ConfigError, match="max_runs"):
        p.with_protocol(runs=50)
