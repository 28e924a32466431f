"""LatencyDataset: latency records in Parquet, appended durably row by row; HAT CSV import/export.

On disk a dataset is ``NAME.parquet`` plus, while a collection is running or after it was
interrupted, a journal ``NAME.parquet.journal`` (one JSON record per line, flushed and fsynced
per row). Reading merges both; :meth:`LatencyDataset.compact` folds the journal into the
Parquet file atomically and then removes it. A crash at any point loses at most the record
being written (a torn last journal line is ignored with a warning) and never duplicates one:
rows are unique by (arch_key, device); the first record wins.

HAT's CSV (../shared/data/hat_latency): the 10 features, latency_mean_encoder,
latency_mean_decoder, latency_std_encoder, latency_std_decoder (ms). Imported rows carry only
the features (``arch`` is null): predictors fit them in features-only mode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hat_ray.arch import FEATURE_NAMES, Arch
from hat_ray.errors import DataError
from hat_ray.io import atomic_write
from hat_ray.latency.backends import DEFAULT as DEFAULT_RUNTIME

log = logging.getLogger(__name__)

HAT_TARGETS = ("latency_mean_encoder", "latency_mean_decoder", "latency_std_encoder", "latency_std_decoder")
HAT_COLUMNS = (*FEATURE_NAMES, *HAT_TARGETS)
SIMULATION_COLUMNS = ("cycles", "matmul_ms", "memory_stall_ms", "nonlinear_ms", "simulator", "simulation")
_PART_STATS = ("median_ms", "trimmed_mean_ms", "std_ms", "iqr_ms", "cv", "min_ms", "runs", "attempts", "dropped")
COLUMNS = (
    "space", "device", "arch_key", "arch", "source", *FEATURE_NAMES,
    "latency_ms", "encoder_ms", "decoder_ms",
    "latency_ref", "latency_ref_iqr", "reference_key", "reference_ms", "reference_ms_rounds",
    *(f"{p}_{s}" for p in ("encoder", "decoder") for s in _PART_STATS),
    "disturbed", "statistic", "protocol", "vocab", "threads", "dtype", "runtime", "runtime_version", "setup_s",
    "host", "pid", "node_id", "platform", "torch_version", "hat_ray_version", "python_version", "ray_version",
    "cpu_freq_mhz", "load_1m", "temperature_c", "others_cpu_share", "started_at", "finished_at",
    # simulated devices (runtime "simulated", hat_ray.latency.accelerator): latency_ms = cycles / clock
    # = matmul_ms + memory_stall_ms + nonlinear_ms; the hardware (JSON) and per-part details (JSON)
    *SIMULATION_COLUMNS,
)
KEY = ("arch_key", "device")
_DATASET_FIX = "restore it, or pass a dataset written by `hat-ray latency collect` (or HAT's CSV)"
_HAT_CSV_FIX = ("a HAT latency CSV is UTF-8 text with HAT's columns (the 10 features, latency_mean_encoder, "
                "latency_mean_decoder, latency_std_encoder, latency_std_decoder), numeric, latencies positive ms")


class LatencyDataset:
    """Rows of latency records (``frame``, one per arch and device, COLUMNS order)."""

    def __init__(self, frame: pd.DataFrame, source: str = "dataset", fingerprint: str | None = None,
                 row_ids: np.ndarray | None = None) -> None:
        self.frame = _conform(frame).reset_index(drop=True)
        self.source = source
        self.fingerprint = fingerprint  # sha256 of the file(s) it was read from, if any
        # Position of each row in the file as read (before device / row selection): lets a
        # predictor refuse to be evaluated on rows it was fit on.
        self.row_ids = np.arange(len(self.frame)) if row_ids is None else np.asarray(row_ids, dtype=int)

    def _subset(self, mask_or_slice: Any) -> LatencyDataset:
        frame = self.frame.iloc[mask_or_slice] if isinstance(mask_or_slice, slice) else self.frame[mask_or_slice]
        return LatencyDataset(frame, self.source, self.fingerprint, self.row_ids[mask_or_slice])

    def subset(self, positions: np.ndarray) -> LatencyDataset:
        """Rows at ``positions`` (0-based positions in this dataset), keeping provenance."""
        positions = np.asarray(positions, dtype=int)
        return LatencyDataset(self.frame.iloc[positions], self.source, self.fingerprint, self.row_ids[positions])

    # ---- files ----
    @classmethod
    def load(cls, path: str | Path) -> LatencyDataset:
        """Read a Parquet dataset (plus its journal), or HAT's CSV (``.csv``/``.csv.gz``)."""
        path = Path(path)
        if _is_csv(path):
            return cls.from_hat_csv(path)
        frames = []
        if path.is_file():
            try:
                frames.append(pd.read_parquet(path))
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for bad files
                raise DataError(f"{path} is not a readable Parquet latency dataset ({_short(exc)}); {_DATASET_FIX}") from None
        journal = journal_path(path)
        if journal.is_file():
            frames.append(pd.DataFrame(_read_journal(journal), columns=list(COLUMNS)))
        if not frames:
            raise DataError(f"latency dataset {path} does not exist; check the path")
        missing = [c for c in ("device", "latency_ms", *FEATURE_NAMES) if c not in frames[0].columns]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise DataError(f"{path} is not a hat-ray latency dataset (missing columns: {shown}); {_DATASET_FIX}")
        frame = pd.concat([_conform(f) for f in frames], ignore_index=True) if len(frames) > 1 else frames[0]
        return cls(_dedup(frame), source=str(path), fingerprint=_sha256(path, journal))

    def save(self, path: str | Path) -> None:
        """Write the whole dataset as Parquet, atomically (temp file + rename)."""
        frame = self.frame
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))

    @staticmethod
    def compact(path: str | Path) -> int:
        """Fold ``path``'s journal into its Parquet file; returns the number of rows."""
        path = Path(path)
        journal = journal_path(path)
        if not journal.is_file():
            return len(pd.read_parquet(path)) if path.is_file() else 0
        data = LatencyDataset.load(path)
        data.save(path)
        journal.unlink()
        return len(data)

    @classmethod
    def load_device(cls, path: str | Path, device: str, space: str) -> LatencyDataset:
        """A device's rows from a hat-ray dataset, or HAT's CSV (``.csv`` / ``.csv.gz``) labelled
        with ``device`` and ``space``: how an experiment's ``latency_data`` file is read."""
        if Path(path).name.lower().endswith((".csv", ".csv.gz")):
            return cls.from_hat_csv(path, device=device, space=space)
        return cls.load(path).for_device(device)

    # ---- HAT CSV ----
    @classmethod
    def from_hat_csv(cls, path: str | Path, device: str | None = None, space: str | None = None) -> LatencyDataset:
        """Import HAT's CSV; DataError listing every problem (missing columns, non-numeric,
        NaN, negative or zero latencies) with row numbers (0-based data rows)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"latency CSV {path} does not exist; check the path")
        try:
            raw = pd.read_csv(path)
        except Exception as exc:  # noqa: BLE001 - pandas parser errors vary
            raise DataError(f"{path} is not a readable CSV ({_short(exc)}); {_HAT_CSV_FIX}") from None
        _check_hat_frame(raw, str(path))
        guess_space, guess_device = guess_hat_names(path)
        frame = pd.DataFrame({name: raw[name].astype(float) for name in FEATURE_NAMES})
        frame["encoder_ms"] = raw["latency_mean_encoder"].astype(float)
        frame["decoder_ms"] = raw["latency_mean_decoder"].astype(float)
        frame["encoder_std_ms"] = raw["latency_std_encoder"].astype(float)
        frame["decoder_std_ms"] = raw["latency_std_decoder"].astype(float)
        frame["latency_ms"] = frame["encoder_ms"] + frame["decoder_ms"]
        frame["space"] = space or guess_space
        frame["device"] = device or guess_device or path.name
        frame["source"] = "hat-csv"
        frame["statistic"] = "trimmed_mean"
        return cls(frame, source=str(path), fingerprint=_sha256(path))

    def to_hat_csv(self, path: str | Path) -> None:
        """Export HAT's CSV columns (means = the dataset's encoder_ms / decoder_ms), atomically."""
        f = self.frame
        out = pd.DataFrame({name: f[name].astype(float) for name in FEATURE_NAMES})
        out["latency_mean_encoder"] = f["encoder_ms"].astype(float)
        out["latency_mean_decoder"] = f["decoder_ms"].astype(float)
        out["latency_std_encoder"] = f["encoder_std_ms"].astype(float).fillna(0.0)
        out["latency_std_decoder"] = f["decoder_std_ms"].astype(float).fillna(0.0)
        compression = "gzip" if str(path).endswith(".gz") else None
        atomic_write(path, lambda tmp: out.to_csv(tmp, index=False, compression=compression))

    # ---- views ----
    def __len__(self) -> int:
        return len(self.frame)

    def devices(self) -> list[str]:
        return sorted(self.frame["device"].dropna().unique().tolist())

    def for_device(self, device: str | None) -> LatencyDataset:
        """Rows of one device; with ``device=None`` the data must hold exactly one device."""
        devices = self.devices()
        if device is None:
            if len(devices) > 1:
                raise DataError(f"{self.source} holds several devices ({', '.join(devices)}): choose one with --device")
            return self
        if device not in devices:
            raise DataError(f"{self.source} has no rows for device {device!r} (it has: {', '.join(devices) or 'none'})")
        return self._subset((self.frame["device"] == device).to_numpy())

    def rows(self, spec: str | None) -> LatencyDataset:
        """Rows ``A:B`` (0-based, B exclusive, either side optional) in stored order."""
        if spec is None:
            return self
        start, stop = parse_rows(spec, len(self))
        return self._subset(slice(start, stop))

    def archs(self) -> list[Arch] | None:
        """Full Archs of every row, or None when any row has only HAT's features."""
        values = self.frame["arch"]
        if values.isna().any():
            return None
        return [Arch.from_dict(json.loads(v), source=f"{self.source} arch") for v in values]

    def features(self) -> np.ndarray:
        """(n, 10) HAT features in FEATURE_NAMES order."""
        return self.frame[list(FEATURE_NAMES)].to_numpy(dtype=float)

    def latency(self, unit: str = "ms") -> np.ndarray:
        """(n,) total latency in ms (``unit="ms"``) or in reference units (``"ref"``: latency /
        the reference Arch's, same round; rows of the reference protocol only)."""
        if unit == "ref":
            if self.unit() != "ref":
                raise DataError(f"{self.source}: latency in reference units needs rows measured with the reference "
                                "protocol (protocol.mode: reference) against one reference Arch")
            return self.frame["latency_ref"].to_numpy(dtype=float)
        return self.frame["latency_ms"].to_numpy(dtype=float)

    def unit(self) -> str:
        """``"ref"`` when every row has a reference ratio against the same reference Arch, else ``"ms"``."""
        f = self.frame
        if len(f) and f["latency_ref"].notna().all() and f["reference_key"].nunique(dropna=False) == 1:
            return "ref"
        return "ms"

    def reference(self) -> dict[str, Any] | None:
        """The reference of ref-unit rows: its arch key and a calibration (the reference's median ms
        over the rows' rounds, its IQR, the row count) that turns reference units into ms."""
        if self.unit() != "ref":
            return None
        rounds = np.concatenate([json.loads(v) for v in self.frame["reference_ms_rounds"].dropna()] or [np.array([])])
        ms = rounds if len(rounds) else self.frame["reference_ms"].to_numpy(dtype=float)
        return {"key": str(self.frame["reference_key"].iloc[0]), "ms": float(np.median(ms)),
                "ms_iqr": float(np.subtract(*np.percentile(ms, [75, 25]))), "rows": len(self.frame)}

    def runtimes(self) -> list[str]:
        """The runtimes the rows were measured with (a profile's ``runtime``); rows without one
        (HAT's CSV: PyTorch; datasets written before runtimes were recorded) count as ``torch``."""
        return sorted({value if isinstance(value, str) else DEFAULT_RUNTIME for value in self.frame["runtime"]})

    def keys(self) -> set[tuple[str, str]]:
        f = self.frame.dropna(subset=["arch_key"])
        return set(zip(f["arch_key"], f["device"], strict=True))


class JournalWriter:
    """Append records to ``path``'s journal, one fsynced JSON line each (durable per row, or per
    batch with :meth:`append_many`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = journal_path(Path(path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append(self, record: Mapping[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: list[Mapping[str, Any]]) -> None:
        """Records that arrived together (a batch of simulations), with one fsync: a crash loses
        at most this batch, never a part of a row."""
        for record in records:
            row = {c: _plain(record.get(c)) for c in COLUMNS}
            self._fh.write(json.dumps(row, allow_nan=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def parse_rows(spec: str, n: int) -> tuple[int, int]:
    """``"A:B"`` -> (start, stop) within ``n`` rows; DataError when malformed or empty."""
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        stop = int(parts[1]) if parts[1].strip() else n
    except ValueError:
        raise DataError(f"--rows must look like A:B (0-based, B exclusive), got {spec!r}") from None
    if start < 0 or stop > n or start >= stop:
        raise DataError(f"--rows {spec} selects no valid rows: the data has {n} rows (0:{n})")
    return start, stop


def guess_hat_names(path: Path) -> tuple[str | None, str | None]:
    """HAT's file names ``{task}_{cpu|gpu}_{device}.csv`` -> (space, device profile) or None."""
    name = path.name.lower()
    space = next((s for t, s in _HAT_TASKS.items() if name.startswith(t)), None)
    device = next((d for t, d in _HAT_DEVICES.items() if t in name), None)
    return space, device


_HAT_TASKS = {"wmt14ende": "wmt14_en_de", "wmt14enfr": "wmt14_en_fr", "wmt19ende": "wmt19_en_de",
              "iwslt14deen": "iwslt14_de_en"}
_HAT_DEVICES = {"raspberrypi": "raspberrypi4", "xeon": "xeon_e5_2640", "titanxp": "titanxp"}


def _check_hat_frame(raw: pd.DataFrame, source: str) -> None:
    problems = [f"missing column {c!r}" for c in HAT_COLUMNS if c not in raw.columns]
    for col in (c for c in HAT_COLUMNS if c in raw.columns):
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            problems.append(f"column {col!r} has missing or non-numeric values in rows {_rows(bad)}")
        positive = col in HAT_TARGETS[:2] or col in FEATURE_NAMES
        wrong = np.flatnonzero((values <= 0 if positive else values < 0).fillna(False).to_numpy())
        if len(wrong):
            problems.append(f"column {col!r} must be {'positive' if positive else 'non-negative'}: rows {_rows(wrong)}")
    if not len(raw):
        problems.append("no data rows")
    if problems:
        raise DataError(f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in HAT latency CSV: "
                        + "; ".join(problems) + f"; {_HAT_CSV_FIX}")
    for col in HAT_COLUMNS:
        raw[col] = pd.to_numeric(raw[col])


def _rows(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:5])
    return shown + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")


def _read_journal(path: Path) -> list[dict[str, Any]]:
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # torn write of the last record during a crash
                log.warning("%s: ignoring an incomplete last line (interrupted write)", path)
                continue
            raise DataError(f"journal {path} is corrupted at line {i + 1}") from None
    return rows


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Every COLUMN present (missing ones as None), in COLUMNS order, extra columns dropped."""
    out = frame.reindex(columns=list(COLUMNS))
    return out.astype({c: "float64" for c in (*FEATURE_NAMES, "latency_ms", "encoder_ms", "decoder_ms", "latency_ref",
                                              "latency_ref_iqr", "reference_ms", "cycles", "matmul_ms",
                                              "memory_stall_ms", "nonlinear_ms")})


def _dedup(frame: pd.DataFrame) -> pd.DataFrame:
    keyed = frame["arch_key"].notna()
    dup = keyed & frame.duplicated(subset=list(KEY), keep="first")
    return frame[~dup].reset_index(drop=True)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path.is_file():
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith((".csv", ".csv.gz"))


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
