"""Latency backends: the runtime a measured model runs on (a device profile's ``runtime``).

measure.py owns the protocol: warm-up, timed runs, statistics, disturbance handling and the
reference protocol. A backend only turns an Arch into two callables that the shared code times
(:meth:`Backend.workloads`): ``encode`` (one encoder forward on ``batch`` sentences) and ``decode``
(``tgt_len`` incremental steps on ``batch * beam`` rows, full-vocabulary output projection
included), both on the same random-weight static model of the Arch and the same random tokens
(:func:`hat_ray.latency.backends.torch_eager.static_model` / ``tokens``). Building, converting or
exporting that model is never timed; it is reported as the record's ``setup_s``.

A backend is a subclass of :class:`Backend` decorated with :func:`register` in its own module;
its class attributes declare what profile validation needs (``name``, ``devices``, ``dtypes``,
``requires``, ``install``). Its module is listed in :data:`MODULES` (its declaration); profile
validation reads :data:`BACKENDS`, so adding a backend touches its module, that line and its
tests. Backend modules import torch and their runtime inside methods only: loading a profile
(this package) stays light, and a driver without the runtime installed can still load the
profile, fit and use its predictors; only measuring needs the runtime (:meth:`Backend.check`).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from hat_ray.errors import DeviceError

if TYPE_CHECKING:
    from hat_ray.arch import Arch
    from hat_ray.latency.profile import DeviceProfile
    from hat_ray.space import SearchSpace

DEFAULT = "torch"
MODULES = ("torch_eager", "torch_int8", "onnxruntime")  # the built-in backends' modules, imported below

Timer = Callable[[Callable[[], Any]], tuple[float, float]]  # fn -> (ms, cpu share or nan)


class Work(NamedTuple):
    """An Arch ready to time: the two parts and the seconds its setup took (not timed)."""

    encode: Callable[[], Any]
    decode: Callable[[], Any]
    setup_s: float


class Backend:
    """One runtime. Subclasses set the class attributes and implement :meth:`workloads`; the
    other methods have defaults for a single-threaded-or-N-threaded CPU runtime."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # profile devices it can measure on
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)  # profile dtypes (of the model before conversion)
    requires: ClassVar[tuple[str, ...]] = ()  # Python packages (import names) beyond hat-ray's own
    install: ClassVar[str] = ""  # how to install them, e.g. "pip install hat-ray[runtimes]"

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    @classmethod
    def problems(cls, device: str, dtype: str) -> list[str]:
        """What a profile asks of this runtime that it cannot do (static: imports nothing)."""
        out = []
        if device not in cls.devices:
            out.append(f"runtime {cls.name} measures on device {' / '.join(cls.devices)} only, not {device!r}")
        if dtype not in cls.dtypes:
            out.append(f"runtime {cls.name} measures dtype {' / '.join(cls.dtypes)} only, not {dtype!r}")
        return out

    @classmethod
    def missing(cls) -> list[str]:
        """The required packages that cannot be imported here."""
        out = []
        for module in cls.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                out.append(module)
        return out

    def check(self) -> None:
        """DeviceError when this machine cannot measure with this runtime (a package is missing,
        the device is absent)."""
        self.check_packages()

    def check_packages(self) -> None:
        """DeviceError naming the required packages missing here and how to install them."""
        missing = self.missing()
        if missing:
            how = f": `{self.install}`" if self.install else ""
            raise DeviceError(f"device profile {self.profile.name}: runtime {self.name} needs the Python package"
                              f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}, not installed here{how}")

    def version(self) -> str:
        """The runtime's version (recorded with every measurement)."""
        raise NotImplementedError

    @contextmanager
    def running(self) -> Iterator[None]:
        """The context in which workloads are built and timed (thread settings, inference mode)."""
        yield

    def threads_used(self) -> int:
        """Intra-op threads the timed runs use (recorded; the CPU-share detector divides by it)."""
        return self.profile.threads or 1

    def timer(self) -> Timer:
        return cpu_timer(self.threads_used())

    def workloads(self, space: SearchSpace, arch: Arch, vocab: int, seed: int) -> Work:
        """The encoder and decoder callables of ``arch``'s random-weight static model, with the
        profile's protocol (batch, beam, lengths) and ``vocab`` output rows; called inside
        :meth:`running`."""
        raise NotImplementedError


B = TypeVar("B", bound=type[Backend])
BACKENDS: dict[str, type[Backend]] = {}  # runtime name -> backend class, in registration order


def register(cls: B) -> B:
    """Class decorator: make a backend available as a profile's ``runtime: NAME``."""
    if not cls.name or cls.name in BACKENDS:
        raise ValueError(f"latency backend {cls.__name__}: name {cls.name!r} is empty or already registered")
    if not cls.devices or not cls.dtypes:
        raise ValueError(f"latency backend {cls.name}: declare the devices and dtypes it measures")
    BACKENDS[cls.name] = cls
    return cls


def backend_for(profile: DeviceProfile) -> Backend:
    """The profile's backend, checked to run here (DeviceError otherwise)."""
    backend = BACKENDS[profile.runtime](profile)
    backend.check()
    return backend


def cpu_timer(threads: int) -> Timer:
    """Wall time of one call and its CPU share: the calling thread's CPU time / wall time with one
    thread, else process CPU time / (wall time x ``threads``)."""
    single = threads == 1

    def timer(fn: Callable[[], Any]) -> tuple[float, float]:
        cpu0 = time.thread_time_ns() if single else time.process_time_ns()
        t0 = time.perf_counter_ns()
        fn()
        wall = time.perf_counter_ns() - t0
        cpu = (time.thread_time_ns() if single else time.process_time_ns()) - cpu0
        share = cpu / max(wall, 1) / (1 if single else max(threads, 1))
        return wall / 1e6, share

    return timer


for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
