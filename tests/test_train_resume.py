"""Exact resume: an interrupted run continues bit-identically (batches, Archs, Adam, weights)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_space import tiny_space_dict

from hat_ray.data.batching import encode_corpus
from hat_ray.data.synthetic import synthetic_split
from hat_ray.data.tokenizer import SentencePieceTokenizer
from hat_ray.errors import ConfigError, DataError
from hat_ray.model.transformer import build_super
from hat_ray.space import SearchSpace
from hat_ray.train.config import TrainConfig
from hat_ray.train.state import LAST, load_resume, numbered_checkpoints
from hat_ray.train.trainer import Trainer

TINY = tiny_space_dict()
N = 6


@pytest.fixture(scope="module")
def setup():
    space = SearchSpace.from_dict(TINY)
    train, valid = synthetic_split("train", size=300), synthetic_split("valid", size=40)
    tok = SentencePieceTokenizer.train([*train.src, *train.tgt], 400)
    return space, tok, encode_corpus(train, tok, 128), encode_corpus(valid, tok, 128)


def make(setup, out, seed_model=0, **cfg):
    space, tok, train, valid = setup
    config = TrainConfig(max_updates=N, max_tokens=400, update_freq=2, warmup_updates=3, lr=2e-3, validate_every=3,
                         save_every=2, log_every=1, progress=False, tensorboard=False, **cfg)
    model = build_super(space, tok.vocab_size, seed=seed_model)
    return Trainer(model, space, config, train, valid, out=out, checkpoint_extra={"tokenizer": tok.to_state()})


def record(into):
    def callback(trainer, stats):
        into[stats["update"]] = (stats["loss"], stats["archs"], trainer.position)
    return callback


def params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _crash_at(n, exc):
    def callback(trainer, stats):
        if stats["update"] == n:
            raise exc
    return callback


@pytest.mark.parametrize(("interrupt", "rule"), [("crash", {}), ("ctrl-c", {}), ("crash", {"largest_first": 5})],
                         ids=["crash", "ctrl-c", "crash-in-largest-first"])
def test_interrupted_run_resumes_bit_identically(setup, tmp_path, interrupt, rule):
    straight, steps = make(setup, tmp_path / "a", **rule), {}
    straight.train(record(steps))
    want = params(straight)
    if rule:  # updates 1-5 train the largest Arch only, update 6 its HAT sample
        largest = setup[0].largest().key()
        assert [steps[u][1] for u in range(1, N + 1)] == [[largest]] * 5 + [steps[6][1]] and steps[6][1] != [largest]

    out = tmp_path / "b"
    first = make(setup, out, **rule)
    if interrupt == "crash":  # dies after update 5: the last periodic checkpoint is update 4
        with pytest.raises(RuntimeError):
            first.train(_crash_at(5, RuntimeError("killed")))
        resumed_at = 4
    else:  # Ctrl-C after update 3: the loop saves update 3 before the interrupt propagates
        with pytest.raises(KeyboardInterrupt):
            first.train(_crash_at(3, KeyboardInterrupt()))
        resumed_at = 3
    ckpt = load_resume(out)
    assert ckpt["progress"]["update"] == resumed_at
    second, after = make(setup, out, seed_model=99, **rule), {}  # different init: restore must overwrite it
    second.restore(ckpt)
    second.train(record(after))

    assert sorted(after) == list(range(resumed_at + 1, N + 1))
    for u in after:
        assert after[u] == steps[u], f"update {u} differs after resume"
    got = params(second)
    assert all(torch.equal(got[k], want[k]) for k in want)
    s_opt, r_opt = straight.opt.state_dict()["state"], second.opt.state_dict()["state"]
    assert all(torch.equal(s_opt[i]["exp_avg_sq"], r_opt[i]["exp_avg_sq"]) for i in s_opt)
    logged = [json.loads(x)["update"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, N + 1))  # replayed updates are not logged twice


def test_largest_first_minutes_switches_on_the_clock_and_resumes_exactly(setup, tmp_path, monkeypatch):
    """A clock where update u ends at minute u: with largest_first_minutes=3 updates 1-3 train the
    largest Arch, 4-6 their HAT samples; the switch is kept in the checkpoint, so a run that dies
    after update 5 resumes (from update 4) into the same updates."""
    from hat_ray.train.trainer import Trainer, archs_for_update

    monkeypatch.setattr(Trainer, "elapsed", lambda self: 60.0 * (self.update + 1))
    space = setup[0]
    straight, steps = make(setup, tmp_path / "a", largest_first_minutes=3), {}
    straight.train(record(steps))
    largest = space.largest().key()
    assert [steps[u][1] for u in range(1, 4)] == [[largest]] * 3 and straight.largest_until == 3
    assert [steps[u][1] for u in range(4, N + 1)] == [[archs_for_update(space, 1, u)[0].key()] for u in range(4, N + 1)]
    first = make(setup, tmp_path / "b", largest_first_minutes=3)
    with pytest.raises(RuntimeError):
        first.train(_crash_at(5, RuntimeError("killed")))
    ckpt = load_resume(tmp_path / "b")
    assert ckpt["progress"]["update"] == 4 and ckpt["progress"]["largest_until"] == 3
    monkeypatch.setattr(Trainer, "elapsed", lambda self: 0.0)  # a resumed clock would not switch again
    second, after = make(setup, tmp_path / "b", largest_first_minutes=3), {}
    second.restore(ckpt)
    second.train(record(after))
    assert after == {u: steps[u] for u in (5, 6)}
    with pytest.raises(ConfigError, match="largest_first_minutes .* must be below max_minutes"):
        TrainConfig(max_minutes=2, largest_first_minutes=2)
    with pytest.raises(ConfigError, match="largest_first_minutes applies to supernet training only"):
        TrainConfig(max_updates=1, mode="subnet", largest_first_minutes=1)


def test_checkpoint_files_and_resume_errors(setup, tmp_path):
    trainer = make(setup, tmp_path, keep_last=2)
    summary = trainer.train()
    assert summary["update"] == N and "valid_loss_largest" in summary and "valid_loss_smallest" in summary
    assert [p.name for p in numbered_checkpoints(tmp_path)] == ["checkpoint_u0000004.pt", "checkpoint_u0000006.pt"]
    ckpt = torch.load(tmp_path / LAST, weights_only=True)
    assert {"optimizer", "progress", "tokenizer", "train_config"} <= set(ckpt) and ckpt["kind"] == "supernet"
    assert json.loads((tmp_path / "summary.json").read_text())["update"] == N
    with pytest.raises(DataError, match="no checkpoint to resume from"):
        load_resume(tmp_path / "empty")
    other = make(setup, tmp_path / "x", mode="subnet")
    with pytest.raises(DataError, match="from supernet training, not subnet"):
        other.restore(ckpt)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / LAST).write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="corrupted"):
        load_resume(tmp_path / "broken")
