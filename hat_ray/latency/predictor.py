"""LatencyPredictor: fit / predict / adapt / save / load (numpy + torch, no Ray).

Models:

* ``default``: a robust additive cost model (features.py basis, relative-error Huber IRLS in
  robust.py). ``mode="arch"`` when every training row has a full Arch (54 per-layer columns),
  ``mode="features"`` when some rows only carry HAT's 10 features (HAT's CSVs): 36 columns that
  the averages determine exactly. Point prediction = the fit on all rows; uncertainty = the
  spread of a bootstrap ensemble (``members`` refits on resampled rows: model uncertainty)
  combined with the robust scale of the training residuals (measurement noise / drift), so
  ``predict_with_uncertainty`` gives a std the search can use as a safety margin. Predictions
  are floored at 1% of the smallest training latency (a linear model never returns <= 0).
* ``hat-mlp``: HAT's recipe (hat_mlp.py), for comparison.

Few-shot transfer (:meth:`adapt`): the base model's per-column contributions are rescaled for a
new device, ``w_new = w_base * s * (1 + u)``, with a global scale ``s`` (median latency ratio) and
per-column corrections ``u`` fit by Huber on relative errors with a ridge penalty toward 0 whose
strength is chosen by 5-fold cross-validation on the k new rows.

Units: a predictor fits the data's own unit. Rows of the reference protocol (every row has
``latency_ref`` against one reference Arch) are fit in REFERENCE units (latency / the reference
Arch's, measured in the same round: the machine's drift cancels); other rows in ms. A ref-unit
predictor records the reference (its arch key) and a calibration: the reference's median ms over
the training rows' rounds. :meth:`predict` and :meth:`predict_with_uncertainty` always return ms
(reference units x calibration, so searches and reports keep working in ms);
:meth:`predict_native` and :meth:`paired` work in the predictor's own unit, which is where its
accuracy is measured.

The file records the search space (its full definition) and the device: predicting an Arch
outside the space, or evaluating on another space's or device's rows, is a clear error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from hat_ray.arch import Arch
from hat_ray.errors import ArchError, ConfigError, DataError
from hat_ray.latency import features as feat
from hat_ray.latency.dataset import DEFAULT_RUNTIME, LatencyDataset
from hat_ray.latency.robust import fit_relative, fit_ridge_huber, robust_scale
from hat_ray.space import SearchSpace

log = logging.getLogger(__name__)
MODELS = ("default", "hat-mlp")
FORMAT = "hat-ray-latency-predictor"
VERSION = 1
_LAMBDAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class LatencyPredictor:
    """A fitted latency predictor for one (search space, device). :meth:`predict` gives ms."""

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.meta = meta
        self.arrays = arrays
        self.space = SearchSpace.from_dict(meta["space"], source="predictor space")
        self._latency_space = self.space.latency_space()

    # ---- identity ----
    @property
    def device(self) -> str:
        return str(self.meta["device"])

    @property
    def space_name(self) -> str:
        return self.space.name

    @property
    def model(self) -> str:
        return str(self.meta["model"])

    @property
    def mode(self) -> str:
        return str(self.meta["mode"])

    @property
    def runtime(self) -> str:
        """The runtime its rows were measured with (profile ``runtime``; ``torch`` for predictors
        fit before runtimes were recorded)."""
        return str(self.meta.get("runtime", DEFAULT_RUNTIME))

    @property
    def unit(self) -> str:
        """``"ms"``, or ``"ref"``: multiples of the reference Arch's latency (see the module docstring)."""
        return str(self.meta.get("unit", "ms"))

    @property
    def reference(self) -> dict[str, Any] | None:
        """Reference key and calibration (``ms``: the reference's median ms, ``ms_iqr``, ``rows``) of a
        ref-unit predictor; None for an ms predictor."""
        return self.meta.get("reference") if self.unit == "ref" else None

    @property
    def ms_per_unit(self) -> float:
        """ms per unit of the predictor's target: 1, or the reference's calibrated ms."""
        ref = self.reference
        return float(ref["ms"]) if ref else 1.0

    def to_ms(self, value: float) -> float:
        """A latency in the predictor's unit, in ms (reference units x the calibration)."""
        return float(value) * self.ms_per_unit

    def comparable_ms(self, record: dict[str, Any]) -> float:
        """A measurement record's latency as this predictor's predictions see it: for a ref-unit
        predictor and a record against the same reference, ``latency_ref`` x the calibration (the
        drift of the machine between the calibration and this measurement cancels); otherwise the
        record's absolute ``latency_ms``."""
        ref = self.reference
        if ref and record.get("latency_ref") is not None and record.get("reference_key") == ref["key"]:
            return self.to_ms(record["latency_ref"])
        return float(record["latency_ms"])

    # ---- fitting ----
    @classmethod
    def fit(cls, data: LatencyDataset, *, model: str = "default", space: SearchSpace | None = None,
            device: str | None = None, mode: str = "auto", seed: int = 0, members: int = 16,
            normaliser_ms: float | None = None, mlp_steps: int | None = None, unit: str = "auto") -> LatencyPredictor:
        """Fit on every row of ``data`` (one device). ``space``/``device`` default to the data's
        own (unique) values; ``normaliser_ms`` is hat-mlp's target scale in the fit's unit
        (default: mean latency) and ``mlp_steps`` its training steps (default HAT's 5000); ``unit`` "auto"
        fits the data's own unit (reference units where every row has them), "ms" forces ms."""
        if model not in MODELS:
            raise ConfigError("latency predictor", [f"model must be one of {list(MODELS)}, got {model!r}"])
        if len(data) < 2:
            raise DataError(f"{data.source}: need at least 2 rows to fit a predictor, got {len(data)}")
        if space is not None:
            _check_space_column(data, space.name)
        space = space or _data_space(data)
        device = device or _unique(data, "device")
        mode = _choose_mode(data, model, mode)
        unit = _choose_unit(data, unit)
        y = data.latency(unit)
        meta: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "model": model, "mode": mode, "space": space.to_dict(),
            "device": device, "runtime": _one_runtime(data), "n_train": len(data), "seed": seed,
            "training": [_provenance(data)],
            "floor_ms": float(0.01 * y.min()), "unit": unit, "reference": data.reference() if unit == "ref" else None,
        }
        if model == "hat-mlp":
            from hat_ray.latency import hat_mlp  # torch: only for this model

            meta["normaliser_ms"] = float(normaliser_ms or y.mean())
            arrays = hat_mlp.fit(data.features(), y, meta["normaliser_ms"], seed=seed, steps=mlp_steps or hat_mlp.STEPS)
            meta["noise"] = robust_scale(hat_mlp.predict(arrays, data.features(), meta["normaliser_ms"]) / y - 1)
            return cls(meta, arrays)
        x = design(data, mode)
        coef, meta["noise"] = fit_relative(x, y)
        rng = np.random.default_rng(seed)
        boot = [fit_relative(x[idx], y[idx])[0] for idx in (rng.integers(0, len(y), len(y)) for _ in range(members))]
        return cls(meta, {"coef": coef, "members": np.stack(boot) if boot else coef[None, :]})

    def adapt(self, data: LatencyDataset, *, device: str | None = None, seed: int = 0) -> LatencyPredictor:
        """Few-shot transfer: a predictor for ``data``'s device from this one plus k rows."""
        if self.model != "default":
            raise ConfigError("latency predictor", [f"few-shot adaptation needs a 'default' base predictor, not {self.model!r}"])
        _check_space_column(data, self.space_name)
        unit = data.unit()  # the global scale below also converts between units
        x, y = design(data, self.mode), data.latency(unit)
        contrib = x * self.arrays["coef"][None, :]
        base = contrib.sum(axis=1)
        if np.any(base <= 0):
            raise DataError(f"{data.source}: the base predictor gives non-positive latencies for some rows")
        scale = float(np.median(y / base))
        a, t = contrib * scale / y[:, None], 1.0 - base * scale / y
        lam, cv_error = _choose_lambda(a, t, seed)
        u = fit_ridge_huber(a, t, lam * len(y)) if len(y) >= 2 else np.zeros(a.shape[1])
        factors = scale * (1.0 + u)
        meta = dict(self.meta, device=device or _unique(data, "device"), runtime=_one_runtime(data),
                    n_train=len(data),
                    training=[*self.meta["training"], _provenance(data)], floor_ms=float(0.01 * y.min()),
                    unit=unit, reference=data.reference() if unit == "ref" else None,
                    noise=1.2533 * cv_error,  # cross-validated relative error on the new device
                    base={"device": self.device, "n_train": self.meta["n_train"], "k": len(y), "lambda": lam})
        arrays = {"coef": self.arrays["coef"] * factors, "members": self.arrays["members"] * factors[None, :]}
        return LatencyPredictor(meta, arrays)

    # ---- prediction ----
    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency (ms) of each Arch; ArchError if one is outside the predictor's space."""
        return self.predict_with_uncertainty(archs)[0]

    def predict_with_uncertainty(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """(mean_ms, std_ms): std combines the ensemble spread and the training noise level."""
        mean, std = self.predict_native_with_uncertainty(archs)
        return mean * self.ms_per_unit, std * self.ms_per_unit

    def predict_native(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency in the predictor's own :attr:`unit`."""
        return self.predict_native_with_uncertainty(archs)[0]

    def predict_native_with_uncertainty(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        self.check_archs(archs)
        if self.model == "hat-mlp" or self.mode == "features":
            return self._predict_features(np.array([a.features() for a in archs], dtype=float).reshape(-1, 10))
        return self._predict_matrix(feat.from_archs(archs, "arch"))

    def paired(self, data: LatencyDataset, check_device: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, measured) for every row of ``data``, both in the predictor's unit: what its
        accuracy is measured on. DataError when a ref-unit predictor meets rows of another
        protocol or reference."""
        if self.unit == "ref":
            ref = data.reference()
            if ref is None or ref["key"] != self.reference["key"]:
                raise DataError(f"{data.source}: this predictor is in units of reference Arch "
                                f"{self.reference['key'][:12]}; the rows are "
                                + ("not all from the reference protocol" if ref is None else
                                   f"relative to another reference ({ref['key'][:12]})")
                                + ": evaluate it on rows collected with the same profile")
        return self.predict_dataset(data, check_device=check_device), data.latency(self.unit)

    def predict_dataset(self, data: LatencyDataset, check_device: bool = True) -> np.ndarray:
        """Predictions in the predictor's :attr:`unit` for every row of ``data`` (after :meth:`check_data`)."""
        self.check_data(data, check_device=check_device)
        archs = data.archs()
        if archs is not None:
            return self.predict_native(archs)
        if self.mode == "arch":
            raise DataError(f"{data.source}: this predictor was fit on full architectures and needs them; "
                            "the data has only HAT's 10 features (fit a predictor on this kind of data instead)")
        return self._predict_features(data.features())[0]

    def _predict_features(self, x10: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.model == "hat-mlp":
            from hat_ray.latency import hat_mlp

            mean = np.maximum(hat_mlp.predict(self.arrays, x10, self.meta["normaliser_ms"]), self.meta["floor_ms"])
            return mean, mean * float(self.meta["noise"])
        return self._predict_matrix(feat.from_features(x10))

    def _predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.maximum(x @ self.arrays["coef"], self.meta["floor_ms"])
        spread = (x @ self.arrays["members"].T).std(axis=1)
        return mean, np.sqrt(spread**2 + (mean * float(self.meta["noise"])) ** 2)

    # ---- guards ----
    def check_archs(self, archs: Sequence[Arch]) -> None:
        for i, arch in enumerate(archs):
            problems = self._latency_space.problems(arch)
            if problems:
                raise ArchError(problems, f"arch {i} (this latency predictor is for space {self.space_name})")

    def check_data(self, data: LatencyDataset, check_device: bool = True) -> None:
        """DataError when ``data`` comes from another space, device or runtime, or overlaps training rows."""
        _check_space_column(data, self.space_name)
        if check_device:
            others = sorted(set(data.devices()) - {self.device})
            if others:
                raise DataError(f"{data.source}: rows are from device {', '.join(others)} but the predictor "
                                f"is for device {self.device}; evaluate it on --device {self.device} rows, or fit a "
                                f"predictor for {others[0]} with `hat-ray latency fit`")
            runtimes = sorted(set(data.runtimes()) - {self.runtime})
            if runtimes:
                raise DataError(f"{data.source}: rows were measured with runtime {', '.join(runtimes)} but the "
                                f"predictor is for {self.device} with runtime {self.runtime}: evaluate it on rows of "
                                "the same runtime")
        _check_feature_ranges(data, self._latency_space)
        _check_held_out(data, self.meta["training"])

    def fingerprint(self) -> str:
        """A hash of the predictor's contents (metadata and fitted arrays): equal for the same
        fit wherever its file lies, different after a refit."""
        from hat_ray.io import content_hash

        return content_hash(json.dumps(self.meta, sort_keys=True, default=str), sorted(self.arrays.items()))

    # ---- files ----
    def save(self, path: Any) -> None:
        from hat_ray.latency.predictor_io import save_predictor

        save_predictor(path, self.meta, self.arrays)

    @classmethod
    def load(cls, path: Any) -> LatencyPredictor:
        from hat_ray.latency.predictor_io import load_predictor

        meta, arrays = load_predictor(path, FORMAT, VERSION)
        try:
            return cls(meta, arrays)
        except (ConfigError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: latency predictor metadata is invalid ({exc})") from None


def design(data: LatencyDataset, mode: str) -> np.ndarray:
    """The default model's design matrix for ``data`` in ``mode``."""
    if mode == "arch":
        archs = data.archs()
        if archs is None:
            raise DataError(f"{data.source}: mode 'arch' needs full architectures; these rows have only HAT's features")
        return feat.from_archs(archs, "arch")
    return feat.from_features(data.features())


def _choose_mode(data: LatencyDataset, model: str, mode: str) -> str:
    if mode not in ("auto", *feat.MODES):
        raise ConfigError("latency predictor", [f"mode must be auto, features or arch, got {mode!r}"])
    if model == "hat-mlp":
        return "features"
    if mode == "auto":
        return "arch" if data.archs() is not None else "features"
    return mode


def _choose_unit(data: LatencyDataset, unit: str) -> str:
    if unit not in ("auto", "ms", "ref"):
        raise ConfigError("latency predictor", [f"unit must be auto, ms or ref, got {unit!r}"])
    if unit == "ref":
        data.latency("ref")  # DataError when the rows have no reference units
    return data.unit() if unit == "auto" else unit


def _choose_lambda(a: np.ndarray, t: np.ndarray, seed: int) -> tuple[float, float]:
    """Ridge strength by 5-fold CV (mean absolute relative error); returns (lambda, its error)."""
    k = len(t)
    if k < 4:
        return _LAMBDAS[-1], float(np.mean(np.abs(t)))
    folds = np.array_split(np.random.default_rng(seed).permutation(k), min(5, k))
    best = (float("inf"), _LAMBDAS[-1])
    for lam in _LAMBDAS:
        errors = []
        for fold in folds:
            train = np.setdiff1d(np.arange(k), fold)
            u = fit_ridge_huber(a[train], t[train], lam * len(train))
            errors.append(np.abs(a[fold] @ u - t[fold]))
        err = float(np.mean(np.concatenate(errors)))
        if err < best[0]:
            best = (err, lam)
    return best[1], best[0]


def _data_space(data: LatencyDataset) -> SearchSpace:
    name = _unique(data, "space")
    try:
        return SearchSpace.load(name)
    except ConfigError:
        raise ConfigError("latency predictor", [f"the data's search space {name!r} is not a bundled space: "
                                                "pass the space's YAML (--space)"]) from None


def _one_runtime(data: LatencyDataset) -> str:
    """The rows' runtime; DataError when they mix runtimes (one predictor per runtime)."""
    runtimes = data.runtimes()
    if len(runtimes) > 1:
        raise DataError(f"{data.source}: the rows were measured with several runtimes ({', '.join(runtimes)}): "
                        "a predictor is for one runtime; fit on the rows of one device profile")
    return runtimes[0] if runtimes else DEFAULT_RUNTIME


def _unique(data: LatencyDataset, column: str) -> str:
    values = data.frame[column].dropna().unique().tolist()
    if len(values) != 1:
        what = "no" if not values else f"several ({', '.join(map(str, values))})"
        raise DataError(f"{data.source}: {what} {column} values in the rows: pass --{column}")
    return str(values[0])


def fit_problems(data: LatencyDataset | None = None, *, model: str = "default", space: SearchSpace | None = None,
                 min_rows: int = 2) -> list[str]:
    """What :meth:`LatencyPredictor.fit` would refuse in these inputs, found without fitting (the
    pipeline checks its ``latency:`` section and each device's imported latency data with it
    before any stage runs): an unknown model, fewer than ``min_rows`` rows, rows of another space."""
    out = []
    if model not in MODELS:
        out.append(f"model must be one of {list(MODELS)}, got {model!r}")
    if data is not None:
        if len(data) < max(min_rows, 2):
            out.append(f"{data.source}: {len(data)} rows; a predictor needs at least {max(min_rows, 2)}")
        if space is not None:
            try:
                _check_space_column(data, space.name)
            except DataError as exc:
                out.append(str(exc))
    return out


def _check_space_column(data: LatencyDataset, space_name: str) -> None:
    names = sorted(set(data.frame["space"].dropna().tolist()) - {space_name})
    if names:
        raise DataError(f"{data.source}: rows are from search space {', '.join(names)} but the predictor "
                        f"is for space {space_name}; use a predictor fit on {names[0]} rows")


def _check_feature_ranges(data: LatencyDataset, space: SearchSpace) -> None:
    """Features-only rows cannot be checked as Archs: check embed dims, depths and averages."""
    x = data.features()
    c = space.choices
    checks = [(0, "encoder_embed_dim", True), (1, "encoder_layers", True), (4, "decoder_embed_dim", True),
              (5, "decoder_layers", True), (2, "encoder_ffn_embed_dim", False), (6, "decoder_ffn_embed_dim", False)]
    for col, key, exact in checks:
        allowed = np.array(c[key], dtype=float)
        ok = np.isin(x[:, col], allowed) if exact else (x[:, col] >= allowed.min() - 1e-6) & (x[:, col] <= allowed.max() + 1e-6)
        if not ok.all():
            bad = np.flatnonzero(~ok)[:3].tolist()
            raise DataError(f"{data.source}: rows {bad} have {key} outside the predictor's space {space.name} "
                            f"({sorted(set(allowed.tolist()))}): this predictor is for another search space")


def _provenance(data: LatencyDataset) -> dict[str, Any]:
    keys = data.frame["arch_key"].dropna().tolist()
    return {"source": data.source, "fingerprint": data.fingerprint, "row_ids": _ranges(data.row_ids),
            "devices": data.devices(), "arch_keys": keys}


def _check_held_out(data: LatencyDataset, training: list[dict[str, Any]]) -> None:
    for seen in training:
        overlap = 0
        if data.fingerprint is not None and seen.get("fingerprint") == data.fingerprint:
            ids = np.concatenate([np.arange(a, b) for a, b in seen["row_ids"]]) if seen["row_ids"] else np.array([])
            overlap = int(np.isin(data.row_ids, ids).sum())
        if not overlap and seen.get("arch_keys"):
            same = data.frame[data.frame["device"].isin(seen.get("devices", []))]["arch_key"].dropna()
            overlap = int(same.isin(set(seen["arch_keys"])).sum())
        if overlap:
            raise DataError(f"{data.source}: {overlap} of these rows were used to fit the predictor "
                            "(metrics must be on held-out rows): choose other --rows")


def _ranges(ids: np.ndarray) -> list[list[int]]:
    """Sorted row ids -> [[start, stop), ...] runs (compact provenance)."""
    ids = np.unique(np.asarray(ids, dtype=int))
    if not len(ids):
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1)
    starts = np.concatenate([[ids[0]], ids[breaks + 1]])
    stops = np.concatenate([ids[breaks] + 1, [ids[-1] + 1]])
    return [[int(a), int(b)] for a, b in zip(starts, stops, strict=True)]
