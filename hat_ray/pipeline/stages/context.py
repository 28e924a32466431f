"""What every pipeline stage gets (:class:`Context`: the experiment, the run folder, a lazy Ray
connection, paths shared by stages) and small helpers the stages share."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hat_ray.io import atomic_write
from hat_ray.latency.profile import DeviceProfile
from hat_ray.pipeline.config import Experiment
from hat_ray.space import SearchSpace

log = logging.getLogger(__name__)
DONE = "done.json"



@dataclass
class Context:
    """What every stage gets: the experiment, the run folder, and a lazy Ray connection."""

    exp: Experiment
    out: Path
    space: SearchSpace
    say: Callable[[str], None] = print
    _ray_started: bool = field(default=False, repr=False)
    _profiles: dict[str, DeviceProfile] = field(default_factory=dict, repr=False)

    def profile(self, name: str) -> DeviceProfile:
        if name not in self._profiles:
            self._profiles[name] = DeviceProfile.load(name)
        return self._profiles[name]

    @property
    def profiles(self) -> list[DeviceProfile]:
        return [self.profile(d.profile) for d in self.exp.devices]

    def connect(self) -> None:
        """Join the experiment's cluster (or start a local Ray declaring the local devices)."""
        import ray

        if ray.is_initialized():
            return
        from hat_ray.cluster import connect

        local = [p for p in self.profiles if p.ray.local] if not self.exp.address else []
        self._ray_started = connect(self.exp.address, local)

    def disconnect(self) -> None:
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    # ---- paths shared by several stages ----
    @property
    def supernet_ckpt(self) -> Path:
        from hat_ray.train.state import LAST

        return self.out / "supernet" / LAST

    def predictor_path(self, device: str) -> Path:
        return self.out / "latency" / f"{device}.npz"

    def latency_data(self, device: str) -> Path:
        entry = next(d for d in self.exp.devices if self.profile(d.profile).name == device)
        return self.out / "latency" / (f"{device}.parquet" if entry.latency_data else "measured.parquet")

    def vocab(self) -> int:
        """Output vocabulary rows of the trained SuperTransformer (what latency is measured with)."""
        from hat_ray.checkpoint import load_checkpoint

        return int(load_checkpoint(self.supernet_ckpt)["model_config"]["tgt_vocab"])


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def data_options(exp: Experiment) -> Any:
    from hat_ray.train.run import DataOptions

    d = exp.data
    return DataOptions(d.name, d.data_dir, d.src_lang, d.tgt_lang, d.vocab_size, d.download)


def with_threads(threads: int | None, fn: Callable[[], Any]) -> Any:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


class Bar:
    """tqdm progress bar on stderr (quiet when stderr is not a terminal)."""

    def __init__(self, label: str, total: int) -> None:
        import sys

        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, disable=not sys.stderr.isatty(), leave=False)

    def update(self, n: int) -> None:
        self.bar.n = n
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
