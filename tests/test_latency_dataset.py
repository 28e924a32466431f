"""LatencyDataset: durable journal + Parquet, dedup, HAT CSV import/export and validation."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from hat_ray.arch import FEATURE_NAMES
from hat_ray.errors import DataError
from hat_ray.latency.dataset import COLUMNS, HAT_COLUMNS, JournalWriter, LatencyDataset, journal_path, parse_rows
from hat_ray.space import SearchSpace


def fake_record(arch, device="local_cpu", latency=10.0):
    rec = dict.fromkeys(COLUMNS)
    rec.update(space="demo", device=device, arch_key=arch.key(), arch=json.dumps(arch.to_dict()), source="hat-ray",
               latency_ms=latency, encoder_ms=1.0, decoder_ms=latency - 1.0, encoder_std_ms=0.1, decoder_std_ms=0.2)
    rec.update(zip(FEATURE_NAMES, arch.features(), strict=True))
    return rec


def archs(n, seed=0):
    space = SearchSpace.load("demo")
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_journal_is_durable_merged_deduplicated_and_compacted(tmp_path):
    out = tmp_path / "d.parquet"
    a = archs(4)
    with JournalWriter(out) as w:
        for i, arch in enumerate(a[:3]):
            w.append(fake_record(arch, latency=10.0 + i))
    assert not out.exists() and journal_path(out).is_file()  # rows live in the journal until compaction
    data = LatencyDataset.load(out)
    assert len(data) == 3 and data.archs() == a[:3]
    assert LatencyDataset.compact(out) == 3 and out.is_file() and not journal_path(out).exists()
    with JournalWriter(out) as w:  # a later collection: one new row, one duplicate of an existing row
        w.append(fake_record(a[3]))
        w.append(fake_record(a[0], latency=99.0))
    with open(journal_path(out), "a") as fh:  # a crash tore the last write
        fh.write('{"space": "demo", "dev')
    data = LatencyDataset.load(out)
    assert len(data) == 4 and data.keys() == {(x.key(), "local_cpu") for x in a}
    assert data.frame.loc[data.frame["arch_key"] == a[0].key(), "latency_ms"].item() == 10.0  # first row wins
    LatencyDataset.compact(out)
    assert len(pd.read_parquet(out)) == 4


def test_corrupted_journal_middle_line_is_an_error(tmp_path):
    out = tmp_path / "d.parquet"
    journal_path(out).write_text('{"a": 1\n{"device": "x"}\n')
    with pytest.raises(DataError, match="corrupted at line 1"):
        LatencyDataset.load(out)


def test_hat_csv_import_export_round_trip(shared_data, tmp_path):
    src = shared_data / "hat_latency" / "wmt14ende_cpu_xeon.csv.gz"
    data = LatencyDataset.load(src)
    raw = pd.read_csv(src)
    assert len(data) == 2000 and data.devices() == ["xeon_e5_2640"] and data.archs() is None
    assert set(data.frame["space"]) == {"wmt14_en_de"}
    assert np.allclose(data.latency(), raw["latency_mean_encoder"] + raw["latency_mean_decoder"])
    assert np.allclose(data.features(), raw[list(FEATURE_NAMES)].to_numpy())
    out = tmp_path / "copy.csv.gz"
    data.rows("10:20").to_hat_csv(out)
    with gzip.open(out, "rt") as fh:
        back = pd.read_csv(fh)
    assert list(back.columns) == list(HAT_COLUMNS)
    assert np.allclose(back.to_numpy(), raw.iloc[10:20].to_numpy())
    parquet = tmp_path / "x.parquet"
    data.save(parquet)
    again = LatencyDataset.load(parquet)
    assert np.allclose(again.latency(), data.latency()) and again.devices() == data.devices()


def hat_frame(n=4):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.uniform(1, 5, n) for c in HAT_COLUMNS})
    frame["encoder_embed_dim"] = 512
    return frame


@pytest.mark.parametrize("mutate, needles", [
    (lambda f: f.drop(columns=["latency_mean_decoder", "decoder_layer_num"]),
     ["missing column 'latency_mean_decoder'", "missing column 'decoder_layer_num'"]),
    (lambda f: f.assign(latency_mean_encoder=[1.0, np.nan, 2.0, "x"]),
     ["'latency_mean_encoder' has missing or non-numeric values in rows 1, 3"]),
    (lambda f: f.assign(latency_mean_decoder=[-1.0, 2.0, 0.0, 3.0], latency_std_encoder=[0.1, -0.2, 0.1, 0.1]),
     ["'latency_mean_decoder' must be positive: rows 0, 2", "'latency_std_encoder' must be non-negative: rows 1"]),
])
def test_bad_hat_csv_lists_every_problem(tmp_path, mutate, needles):
    path = tmp_path / "bad.csv"
    mutate(hat_frame()).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        LatencyDataset.load(path)
    for needle in needles:
        assert needle in str(info.value)


def test_rows_selection_and_provenance(tmp_path):
    assert parse_rows("0:1800", 2000) == (0, 1800) and parse_rows(":5", 10) == (0, 5) and parse_rows("5:", 10) == (5, 10)
    for bad in ("1-2", "a:b", "5:3", "0:11", "1:2:3"):
        with pytest.raises(DataError, match="--rows"):
            parse_rows(bad, 10)
    path = tmp_path / "d.parquet"
    frame = pd.DataFrame([fake_record(a, device=d) for a in archs(3) for d in ("x", "y")])
    LatencyDataset(frame).save(path)
    data = LatencyDataset.load(path)
    with pytest.raises(DataError, match="several devices"):
        data.for_device(None)
    with pytest.raises(DataError, match="no rows for device 'z'"):
        data.for_device("z")
    y = data.for_device("y")
    assert len(y) == 3 and list(y.row_ids) == [1, 3, 5] and list(y.rows("1:3").row_ids) == [3, 5]
    assert y.fingerprint == data.fingerprint is not None
