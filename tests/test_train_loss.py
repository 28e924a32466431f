"""Label-smoothed CE, validation loss in bits, learning-rate schedules, arch sampling per update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hat_ray.data.batching import Batch
from hat_ray.space import SearchSpace
from hat_ray.tokens import PAD
from hat_ray.train.loss import label_smoothed_nll_loss, row_loss_sums, validation_loss
from hat_ray.train.schedule import Schedule
from hat_ray.train.trainer import archs_for_update


def test_label_smoothed_loss_matches_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    target = torch.randint(4, 11, (3, 5), generator=g)
    target[1, 3:] = PAD
    loss, nll = label_smoothed_nll_loss(logits, target, eps=0.1)
    keep = target.ne(PAD)
    lp = F.log_softmax(logits, -1)[keep]
    t = target[keep]
    want_nll = -lp.gather(1, t[:, None]).sum()
    want = 0.9 * want_nll - 0.1 / 11 * lp.sum()
    torch.testing.assert_close(nll, want_nll)
    torch.testing.assert_close(loss, want)
    # fairseq's smoothing equals torch's label_smoothing (uniform over the vocabulary)
    ref = F.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=PAD, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(loss, ref)


class _Const(torch.nn.Module):
    """Uniform logits over V: the loss is log2(V) bits per token whatever the smoothing."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, src, prev, arch=None):
        return torch.zeros(*prev.shape, self.vocab)


def test_validation_loss_is_bits_per_token_and_restores_mode():
    target = torch.tensor([[5, 6, 2], [7, 2, PAD]])
    batch = Batch(target, target, target, 5, np.arange(2))
    model = _Const(16).train()
    assert validation_loss(model, None, [batch, batch]) == pytest.approx(4.0)
    assert model.training


def test_row_loss_sums_add_up_to_the_validation_loss():
    """Per-sentence parts (multi-fidelity slices) add up to the batch loss; padding counts nothing."""
    torch.manual_seed(0)
    target = torch.tensor([[5, 6, 2], [7, 2, PAD], [9, 3, 2]])
    table = torch.randn(16, 16)

    class Fixed(torch.nn.Module):
        def forward(self, src, prev, arch):
            return table[prev]  # logits (B, T, 16) that depend on the tokens

    batches = [Batch(target[:2], target[:2], target[:2], 5, np.array([10, 11])),
               Batch(target[2:], target[2:], target[2:], 3, np.array([12]))]
    rows = row_loss_sums(Fixed(), None, batches)
    assert sorted(rows) == [10, 11, 12] and [rows[i][1] for i in (10, 11, 12)] == [3, 2, 3]
    total = sum(loss for loss, _ in rows.values()) / 8 / math.log(2)
    assert total == pytest.approx(validation_loss(Fixed(), None, batches), rel=1e-6)


def test_schedules():
    s = Schedule("inverse_sqrt", lr=1e-3, warmup_updates=100, warmup_init_lr=0.0)
    assert s.lr_at(50) == pytest.approx(5e-4) and s.lr_at(100) == pytest.approx(1e-3)
    assert s.lr_at(400) == pytest.approx(5e-4)
    c = Schedule("cosine", lr=1e-3, warmup_updates=10, min_lr=1e-7, max_updates=110)
    assert c.lr_at(10) == pytest.approx(1e-3) and c.lr_at(60) == pytest.approx((1e-3 + 1e-7) / 2)
    assert c.lr_at(110) == pytest.approx(1e-7) and c.lr_at(500) == pytest.approx(1e-7)
    with pytest.raises(ValueError, match="horizon"):
        Schedule("cosine")


def test_arch_of_an_update_depends_only_on_seed_and_update():
    space = SearchSpace.load("demo")
    seq = [archs_for_update(space, 7, u)[0] for u in range(1, 30)]
    assert seq == [archs_for_update(space, 7, u)[0] for u in range(1, 30)]
    assert len(set(seq)) > 20 and all(space.contains(a) for a in seq)
    assert archs_for_update(space, 7, 5, sandwich=True) == [space.largest(), space.smallest(), seq[4]]
    assert math.isclose(len({a.decoder_layers for a in seq}), 4)


def test_largest_prob_swaps_in_the_largest_arch_at_that_rate():
    from hat_ray.errors import ConfigError
    from hat_ray.train.config import TrainConfig

    space = SearchSpace.load("demo")
    plain = [archs_for_update(space, 7, u)[0] for u in range(1, 801)]
    biased = [archs_for_update(space, 7, u, largest_prob=0.3)[0] for u in range(1, 801)]
    assert plain == [archs_for_update(space, 7, u, largest_prob=0.0)[0] for u in range(1, 801)]  # HAT's, unchanged
    swapped = [u for u, (a, b) in enumerate(zip(plain, biased)) if a != b]
    assert all(biased[u] == space.largest() for u in swapped)
    assert biased == [archs_for_update(space, 7, u, largest_prob=0.3)[0] for u in range(1, 801)]  # deterministic
    assert 0.25 < sum(a == space.largest() for a in biased) / 800 < 0.35
    assert all(a == space.largest() for a in (archs_for_update(space, 7, u, largest_prob=1.0)[0] for u in range(9)))
    with pytest.raises(ConfigError, match="largest_prob must be in"):
        TrainConfig(max_updates=1, largest_prob=1.5)
    with pytest.raises(ConfigError, match="without the sandwich rule"):
        TrainConfig(max_updates=1, largest_prob=0.2, sandwich=True)


def test_largest_first_trains_the_largest_arch_then_hats_sequence():
    from hat_ray.errors import ConfigError
    from hat_ray.train.config import TrainConfig

    space = SearchSpace.load("demo")
    hat = [archs_for_update(space, 7, u)[0] for u in range(1, 201)]
    first = [archs_for_update(space, 7, u, largest_first=50)[0] for u in range(1, 201)]
    assert first[:50] == [space.largest()] * 50 and first[50:] == hat[50:]  # later updates: HAT's Archs, unchanged
    assert archs_for_update(space, 7, 3, sandwich=True, largest_first=3) == [space.largest()]
    assert archs_for_update(space, 7, 4, sandwich=True, largest_first=3) == archs_for_update(space, 7, 4, sandwich=True)
    with pytest.raises(ConfigError, match="largest_first must be >= 0"):
        TrainConfig(max_updates=1, largest_first=-1)
    with pytest.raises(ConfigError, match="largest_first applies to supernet training only"):
        TrainConfig(max_updates=1, mode="subnet", largest_first=10)


def test_dropout_override_reaches_the_model_and_is_validated():
    from hat_ray.errors import ConfigError
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.spec import build_model

    demo = SearchSpace.load("demo").to_dict()  # attention dropout off: only `dropout` varies
    space = SearchSpace.from_dict({**demo, "super": {**demo["super"], "attention_dropout": 0.0}}, source="test")
    src = torch.randint(4, 60, (2, 9))
    prev = torch.randint(4, 60, (2, 7))

    def two_passes(dropout):
        model = build_model(space, (60, 60), TrainConfig(max_updates=1, dropout=dropout)).train()
        arch = space.largest()
        return model, model(src, prev, arch), model(src, prev, arch)

    model, a, b = two_passes(0.0)
    assert model.config.dropout == 0.0 and torch.equal(a, b)  # no dropout: training passes agree
    model, a, b = two_passes(None)
    assert model.config.dropout == space.super.dropout > 0 and not torch.equal(a, b)  # the space's
    with pytest.raises(ConfigError, match="dropout must be in"):
        TrainConfig(max_updates=1, dropout=1.0)
