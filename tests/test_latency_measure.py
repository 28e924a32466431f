"""measure(): HAT's protocol on a random-weight static model, statistics and disturbance handling."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hat_ray.arch import FEATURE_NAMES
from hat_ray.errors import ArchError, DeviceError
from hat_ray.latency import DeviceProfile
from hat_ray.latency.dataset import COLUMNS
from hat_ray.latency.measure import ReferenceBench, _time_part, measure, reference_arch, summarize
from hat_ray.space import SearchSpace


def tiny(**protocol) -> DeviceProfile:
    base = dict(warmup=1, runs=3, max_runs=3, tgt_len=3, vocab=64, min_cpu_share=0.0, mode="sequential")
    return DeviceProfile.load("local_cpu").with_protocol(**{**base, **protocol})


def test_record_has_every_column_and_consistent_parts():
    space = SearchSpace.load("demo")
    arch = space.sample(np.random.default_rng(0))
    rec = measure(arch, tiny(), space)
    assert set(rec) == set(COLUMNS)
    assert rec["latency_ms"] == pytest.approx(rec["encoder_ms"] + rec["decoder_ms"])
    assert rec["encoder_ms"] == rec["encoder_median_ms"]  # local_cpu reports the median
    assert rec["decoder_runs"] == 3 and rec["threads"] == 1 and rec["vocab"] == 64
    assert [rec[f] for f in FEATURE_NAMES] == arch.features()
    assert rec["arch_key"] == arch.key() and rec["space"] == "demo" and rec["device"] == "local_cpu"
    assert rec["finished_at"] >= rec["started_at"] and rec["host"] and rec["node_id"] is None
    assert 0 < rec["decoder_min_ms"] <= rec["decoder_median_ms"]
    assert rec["latency_ref"] is None and rec["reference_key"] is None  # sequential protocol: no reference


def test_reference_mode_times_each_arch_next_to_the_reference_in_rounds():
    space = SearchSpace.load("demo")
    rng = np.random.default_rng(3)
    archs = [space.smallest(), space.largest(), space.latency_space().sample(rng)]
    bench = ReferenceBench(tiny(mode="reference", rounds=4, max_rounds=4), space)
    recs = bench.measure(archs)
    assert [r["arch_key"] for r in recs] == [a.key() for a in archs]
    ref = reference_arch(space)
    for rec in recs:
        assert set(rec) == set(COLUMNS)
        assert rec["reference_key"] == ref.key() and rec["encoder_runs"] == rec["decoder_runs"] == 4
        rounds = json.loads(rec["reference_ms_rounds"])
        assert len(rounds) == 4 and rec["reference_ms"] == pytest.approx(np.median(rounds), rel=1e-4)
        assert rec["latency_ref"] > 0 and rec["latency_ref_iqr"] >= 0
        assert json.loads(rec["protocol"])["mode"] == "reference"
    small, large = recs[0]["latency_ref"], recs[1]["latency_ref"]
    assert small < 1 < large  # the reference is mid-size: the smallest Arch is faster, the largest slower
    # the reference itself measures at ratio ~1 against itself
    assert bench.measure([ref])[0]["latency_ref"] == pytest.approx(1.0, rel=0.25)
    # measure() with a reference-mode profile is a batch of one
    assert measure(archs[0], tiny(mode="reference", rounds=3, max_rounds=3), space)["encoder_runs"] == 3


def test_reference_rounds_retime_preempted_pairs_and_take_the_median_ratio():
    space = SearchSpace.load("demo")
    bench = ReferenceBench(tiny(mode="reference", rounds=3, max_rounds=3, min_cpu_share=0.9), space)
    # per pair: reference encoder, reference decoder, arch encoder, arch decoder; one arch, then one
    # closing reference run: each Arch run sits between two reference runs
    pairs = [[(1.0, 1.0), (1.0, 1.0), (2.0, 1.0), (2.0, 1.0)],  # 4 / mean(2, 2) = 2
             [(1.0, 1.0), (1.0, 1.0), (9.0, 0.3), (9.0, 1.0)],  # preempted: timed again
             [(1.0, 1.0), (1.0, 1.0), (3.0, 1.0), (3.0, 1.0)],  # the machine slows down 2x meanwhile:
             [(2.0, 1.0), (2.0, 1.0), (5.0, 1.0), (5.0, 1.0)],  # 6 / mean(2, 4) = 2, then 10 / mean(4, 4)
             [(2.0, 1.0), (2.0, 1.0)]]
    timer = fake_timer([t for pair in pairs for t in pair])
    times = bench._rounds((None, None), [(None, None)], timer, np.random.default_rng(0))
    assert times[0]["dropped"] == 1 and times[0]["enc"] == [2.0, 3.0, 5.0]
    assert times[0]["ref"] == [2.0, 2.0, 4.0] and times[0]["ref_after"] == [2.0, 4.0, 4.0]
    rec = bench._record(space.smallest(), times[0], {})
    assert rec["latency_ref"] == pytest.approx(2.0)  # timed only after the reference: 3.0 in round 2
    assert rec["reference_ms"] == pytest.approx(2.0) and json.loads(rec["reference_ms_rounds"]) == [2.0, 2.0, 4.0]
    assert rec["latency_ms"] == pytest.approx(6.0)  # median of the absolute encoder + decoder times


def test_decoder_cost_grows_with_steps_and_vocab():
    space = SearchSpace.load("demo")
    arch = space.smallest()
    short = measure(arch, tiny(tgt_len=2, runs=5, max_runs=5), space)["decoder_min_ms"]
    long = measure(arch, tiny(tgt_len=12, runs=5, max_runs=5), space)["decoder_min_ms"]
    assert long > 2 * short  # 6x the incremental steps


def test_arch_outside_space_and_missing_cuda():
    demo = SearchSpace.load("demo")
    wmt_arch = SearchSpace.load("wmt14_en_de").smallest()
    with pytest.raises(ArchError):
        measure(wmt_arch, tiny(), demo)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="needs CUDA"):
            measure(demo.smallest(), DeviceProfile.load("cuda_gpu"), demo)


def test_summarize_matches_hat_band():
    times = [10, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    s = summarize(times, (0.1, 0.9))
    assert s["trimmed_mean_ms"] == pytest.approx(np.mean([2, 3, 4, 5, 6, 7, 8, 9]))  # sorted[1:9]
    assert s["median_ms"] == 5.5 and s["min_ms"] == 1 and s["runs"] == 10
    assert s["cv"] == pytest.approx(np.std(times) / np.mean(times))
    assert summarize([5.0, 7.0])["trimmed_mean_ms"] == 5.0  # HAT's band on 2 runs keeps the faster one


def fake_timer(values):
    it = iter(values)
    return lambda fn: next(it)


def test_preempted_runs_are_replaced_and_spread_triggers_remeasure():
    proto = tiny(runs=3, max_runs=5, min_cpu_share=0.9, max_cv=0.05, max_attempts=2).protocol
    # warm-up 1, then: two preempted runs dropped (share 0.5), three good ones kept
    timer = fake_timer([(9.0, 1.0), (50.0, 0.5), (10.0, 1.0), (60.0, 0.4), (10.0, 1.0), (10.2, 1.0)])
    stats = _time_part(lambda: None, proto, timer)
    assert stats["dropped"] == 2 and stats["runs"] == 3 and stats["median_ms"] == 10.0 and stats["attempts"] == 1
    # a noisy first attempt (cv > 0.05) is re-measured; the steadier second attempt is kept
    timer = fake_timer([(9.0, 1.0), (10.0, 1.0), (20.0, 1.0), (10.0, 1.0), (10.0, 1.0), (10.1, 1.0), (10.0, 1.0)])
    stats = _time_part(lambda: None, proto, timer)
    assert stats["attempts"] == 2 and stats["cv"] < 0.05 and stats["median_ms"] == 10.0


def test_drop_out_is_bounded():
    proto = tiny(runs=2, max_runs=3, min_cpu_share=0.9, max_attempts=1).protocol
    timer = fake_timer([(1.0, 1.0)] + [(5.0, 0.1)] * 3)  # every run preempted: keep what max_runs allows
    stats = _time_part(lambda: None, proto, timer)
    assert stats["dropped"] == 1 and stats["runs"] == 2


def test_core_latency_modules_do_not_import_ray():
    code = ("import sys; import hat_ray.latency, hat_ray.latency.measure, hat_ray.latency.predictor, "
            "hat_ray.latency.dataset, hat_ray.latency.profile, hat_ray.latency.features; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_imprecise_ratios_get_extra_rounds_up_to_max_rounds():
    space = SearchSpace.load("demo")
    bench = ReferenceBench(tiny(mode="reference", rounds=3, max_rounds=6, precision=0.01), space)
    steady = (1.0, 1.0)
    rng = np.random.default_rng(0)

    def timer(fn):  # reference runs: 1 ms each part; Arch 0 steady at ratio 2, Arch 1 noisy around 3
        if fn == "ref":
            return steady
        if fn == "a0":
            return (2.0, 1.0)
        return (float(3.0 * (1 + 0.3 * rng.standard_normal())), 1.0)

    times = bench._rounds(("ref", "ref"), [("a0", "a0"), ("a1", "a1")], timer, np.random.default_rng(1))
    assert len(times[0]["enc"]) == 3  # precise after the fixed rounds: no extra round
    assert len(times[1]["enc"]) == 6  # still imprecise: rounds up to max_rounds
    assert len(times[1]["ref_after"]) == len(times[1]["ref"]) == 6
    assert bench._record(space.smallest(), times[0], {})["latency_ref"] == pytest.approx(2.0)
