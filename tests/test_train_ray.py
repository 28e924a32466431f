"""Data-parallel supernet training with Ray Train (2 CPU workers, gloo)."""

from __future__ import annotations

import json

import torch
from tiny_space import tiny_space_dict

from hat_ray.data.synthetic import synthetic_split
from hat_ray.space import SearchSpace
from hat_ray.train.config import TrainConfig
from hat_ray.train.run import DataOptions, make_spec, run
from hat_ray.train.state import LAST
from hat_ray.train.trainer import archs_for_update

TINY = tiny_space_dict()


def write_corpus(folder, n_train=400, n_valid=40):
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_valid)):
        c = synthetic_split(split, size=n)
        (folder / f"{split}.src").write_text("\n".join(c.src) + "\n")
        (folder / f"{split}.tgt").write_text("\n".join(c.tgt) + "\n")
    return folder


def test_two_workers_train_the_same_arch_on_synchronised_gradients(ray_local, tmp_path):
    space = SearchSpace.from_dict(TINY)
    cfg = TrainConfig(max_updates=4, max_tokens=300, update_freq=2, warmup_updates=2, validate_every=2, save_every=2,
                      log_every=1, progress=False, tensorboard=False, trace=True)
    data = DataOptions(str(write_corpus(tmp_path / "data")), vocab_size=400)
    out = tmp_path / "run"
    summary = run(make_spec(space, cfg, data, out), workers=2)
    assert summary["update"] == 4 and "valid_loss_largest" in summary

    ranks = [[json.loads(x) for x in (out / "trace" / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [row["update"] for row in ranks[0]] == [1, 2, 3, 4]
    for a, b in zip(*ranks):
        assert a["archs"] == b["archs"] == [archs_for_update(space, cfg.seed, a["update"])[0].key()]
        assert a["grad_sha"] == b["grad_sha"] is not None  # gradients all-reduced: identical on both ranks
        assert a["first_batch"] != b["first_batch"]  # ... from different data shards
    assert len({tuple(r["archs"]) for r in ranks[0]}) > 1
    ckpt = torch.load(out / LAST, weights_only=True)
    assert ckpt["progress"]["world"] == 2 and ckpt["progress"]["update"] == 4
    assert ckpt["progress"]["position"] == 4 * 2 * 2  # updates x workers x update_freq batches consumed
