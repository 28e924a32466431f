"""HAT's latency predictor recipe (spec section 5), kept for comparison (``--model hat-mlp``).

Input: the 10 HAT features divided by FEATURE_NORM; target: latency / the device's normaliser
(200 GPU, 300 Xeon, 5000 Pi ms). MLP 10 -> 400 -> 400 -> 400 -> 400 -> 1 with ReLU, MSE loss,
Adam lr 1e-5, 5000 steps of batch 128 (shuffled epochs), trained on every row given.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from hat_ray.arch import FEATURE_NORM

HIDDEN = 400
DEPTH = 4  # hidden layers
STEPS = 5000
BATCH = 128
LR = 1e-5


def build() -> nn.Sequential:
    layers: list[nn.Module] = []
    width = len(FEATURE_NORM)
    for _ in range(DEPTH):
        layers += [nn.Linear(width, HIDDEN), nn.ReLU()]
        width = HIDDEN
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def fit(features: np.ndarray, latency_ms: np.ndarray, normaliser_ms: float, seed: int = 0,
        steps: int = STEPS) -> dict[str, np.ndarray]:
    """Train HAT's MLP; returns its state as plain float32 arrays (name -> array). Runs on one
    torch thread (these matmuls are too small to gain from more; on a busy machine extra
    threads made training 20x slower)."""
    with single_thread():
        return _fit(features, latency_ms, normaliser_ms, seed, steps)


@contextmanager
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(features: np.ndarray, latency_ms: np.ndarray, normaliser_ms: float, seed: int,
         steps: int) -> dict[str, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    x = torch.tensor(np.asarray(features) / np.array(FEATURE_NORM), dtype=torch.float32)
    y = torch.tensor(np.asarray(latency_ms) / normaliser_ms, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    order = torch.randperm(len(x), generator=gen)
    pos = 0
    for _ in range(steps):
        if pos >= len(order):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + BATCH]
        pos += BATCH
        loss = nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}


def predict(state: dict[str, np.ndarray], features: np.ndarray, normaliser_ms: float) -> np.ndarray:
    """(n, 10) raw features -> (n,) latency in ms."""
    model = build()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    x = torch.tensor(np.asarray(features) / np.array(FEATURE_NORM), dtype=torch.float32)
    with torch.inference_mode(), single_thread():
        return model(x).squeeze(1).double().numpy() * normaliser_ms
