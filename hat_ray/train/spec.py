"""What a training worker needs, as plain data, and the one constructor that turns it into a Trainer.

A :class:`RunSpec` is everything a worker needs to build the same Trainer (it travels to Ray Train
workers through the object store); :func:`build_trainer` is the one constructor used both
in-process (:mod:`hat_ray.train.run`) and on Ray Train workers (:mod:`hat_ray.train.ray_train`).
Imports neither of those modules, nor Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from hat_ray.arch import Arch
from hat_ray.data.batching import EncodedCorpus
from hat_ray.data.tokenizer import tokenizer_from_state
from hat_ray.model.transformer import ModelConfig, Transformer, build_super
from hat_ray.space import SearchSpace
from hat_ray.train.comm import Comm
from hat_ray.train.config import TrainConfig
from hat_ray.train.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """Plain-data description of one training run (see module docstring)."""

    space: dict[str, Any]
    cfg: dict[str, Any]
    tokenizer: dict[str, Any]
    train: EncodedCorpus
    valid: EncodedCorpus
    out: str
    data_info: dict[str, Any]
    vocab: tuple[int, int]  # embedding rows (source, target)
    arch: dict[str, Any] | None = None  # subnet mode
    init_state: dict[str, Any] | None = None  # subnet weights inherited from a SuperTransformer
    resume: dict[str, Any] | None = None  # checkpoint to continue from
    meta: dict[str, Any] = field(default_factory=dict)


def build_model(space: SearchSpace, vocab: tuple[int, int], cfg: TrainConfig, arch: Arch | None = None,
                init_state: dict[str, Any] | None = None) -> Transformer:
    """A fresh SuperTransformer, or the static SubTransformer of ``arch`` (random, or with
    ``init_state`` weights), seeded by ``cfg.seed``. ``vocab``: (source, target) rows."""
    torch.manual_seed(cfg.seed)
    if arch is None:
        model = build_super(space, *vocab)
    else:
        model = Transformer(ModelConfig.for_arch(ModelConfig.for_space(space, *vocab), arch), arch=arch)
        if init_state is not None:
            model.load_state_dict(init_state)
    if cfg.dropout is not None:  # a training setting: read at each forward, saved with the config
        model.config = replace(model.config, dropout=cfg.dropout)
    return model


def build_trainer(spec: RunSpec, comm: Comm | None = None, device: str | torch.device = "cpu",
                  on_save: Callable[[], None] | None = None) -> Trainer:
    """The Trainer of ``spec`` writing into ``spec.out`` (restored when ``spec.resume``);
    ``on_save``: see :class:`~hat_ray.train.trainer.Trainer`."""
    space = SearchSpace.from_dict(spec.space, source="run space")
    cfg = TrainConfig.from_dict(spec.cfg)
    tok = tokenizer_from_state(spec.tokenizer)
    arch = Arch.from_dict(spec.arch) if spec.arch is not None else None
    model = build_model(space, tuple(spec.vocab), cfg, arch, spec.init_state)
    pieces = tok.pieces() if hasattr(tok, "pieces") else None
    extra = {"tokenizer": spec.tokenizer, "data": spec.data_info, "meta": dict(spec.meta),
             "vocab": {"src": pieces, "tgt": pieces} if pieces else None}
    trainer = Trainer(model, space, cfg, spec.train, spec.valid, Path(spec.out), comm, extra, device, on_save)
    if spec.resume is not None:
        trainer.restore(spec.resume)
        log.info("resumed at update %d (stream position %d)", trainer.update, trainer.position)
    return trainer
