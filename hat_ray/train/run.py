"""From user inputs to a running Trainer: data + tokenizer, model construction (supernet, subnet
from scratch, subnet inherited from a SuperTransformer checkpoint), resume, local or Ray run.

:func:`make_spec` resolves the inputs into a :class:`~hat_ray.train.spec.RunSpec` (plain data, see
:mod:`hat_ray.train.spec`); :func:`run` trains it here or, with several workers, on Ray Train
(:mod:`hat_ray.train.ray_train`, imported only then: Ray stays out of this module's imports).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hat_ray.arch import Arch
from hat_ray.checkpoint import load_checkpoint, model_from_checkpoint
from hat_ray.data.batching import EncodedCorpus, encode_corpus
from hat_ray.data.datasets import NAMES, load_split
from hat_ray.data.tokenizer import FairseqDictTokenizer, SentencePieceTokenizer, Tokenizer, tokenizer_from_checkpoint
from hat_ray.errors import DataError, HatRayError
from hat_ray.model.extract import extract_subnet
from hat_ray.space import SearchSpace
from hat_ray.train.config import TrainConfig
from hat_ray.train.spec import RunSpec, build_trainer
from hat_ray.train.state import LAST, load_resume


@dataclass(frozen=True)
class DataOptions:
    data: str = "synthetic"  # dataset name, folder, or "synthetic"
    data_dir: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None
    vocab_size: int = 8000
    download: bool = True


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train: EncodedCorpus
    valid: EncodedCorpus
    info: dict[str, Any]


def prepare_data(opts: DataOptions, max_positions: int, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Read train/valid, train the joint subword model on train (unless given), encode both."""
    # fairseq dictionaries (imported HAT models) read pre-segmented files; sentencepiece raw text
    segmented = isinstance(tokenizer, FairseqDictTokenizer)
    kw = {"src_lang": opts.src_lang, "tgt_lang": opts.tgt_lang, "download": opts.download, "segmented": segmented}
    train = load_split(opts.data, "train", opts.data_dir, **kw).without_empty()
    valid = load_split(opts.data, "valid", opts.data_dir, **kw)
    if tokenizer is None:
        tokenizer = SentencePieceTokenizer.train([*train.src, *train.tgt], opts.vocab_size)
    enc_train = encode_corpus(train, tokenizer, max_positions)
    enc_valid = encode_corpus(valid, tokenizer, max_positions)
    if len(enc_train) == 0:
        raise DataError(f"{train.source}: no training pair fits in {max_positions} tokens")
    # Absolute paths, so `hat-ray evaluate` finds the data from any working directory.
    data_name = opts.data if opts.data in NAMES else str(Path(opts.data).resolve())
    data_dir = str(Path(opts.data_dir).resolve()) if opts.data_dir else None
    info = {"data": data_name, "data_dir": data_dir, "src_lang": train.src_lang, "tgt_lang": train.tgt_lang,
            "train_pairs": len(enc_train), "valid_pairs": len(enc_valid)}
    return PreparedData(tokenizer, enc_train, enc_valid, info)


def make_spec(space: SearchSpace, cfg: TrainConfig, data: DataOptions, out: str | Path, resume: bool = False,
              arch: Arch | None = None, init_from: str | Path | None = None) -> RunSpec:
    """Resolve the user's inputs into a RunSpec; every input problem is a HatRayError raised
    before anything is written."""
    out = Path(out).resolve()  # absolute: Ray Train workers run in another working directory
    ckpt = tokenizer = init_state = vocab = None
    if resume:
        ckpt = load_resume(out)
        if ckpt["space"] != space.to_dict():
            raise DataError(f"{out / LAST} was trained on space {ckpt['space'].get('name')!r}, not {space.name!r}: "
                            "resume with the --space it was trained on, or start a new run with another --out")
        tokenizer = tokenizer_from_checkpoint(ckpt, str(out / LAST))
        vocab = _vocab_rows(ckpt)
    elif (out / LAST).exists():
        raise DataError(f"{out} already holds {LAST}: pass --resume to continue it, or choose another --out")
    if init_from is not None and arch is not None:
        init_state, init_tok, init_vocab = _inherit(init_from, space, arch)
        tokenizer, vocab = tokenizer or init_tok, vocab or init_vocab
    prepared = prepare_data(data, space.super.max_positions, tokenizer)
    vocab = vocab or (prepared.tokenizer.vocab_size, prepared.tokenizer.vocab_size)
    meta = {"init_from": str(init_from) if init_from else None, "mode": cfg.mode}
    return RunSpec(space.to_dict(), cfg.to_dict(), prepared.tokenizer.to_state(), prepared.train, prepared.valid,
                   str(out), prepared.info, vocab, arch.to_dict() if arch else None, init_state, ckpt, meta)


def _vocab_rows(ckpt: dict[str, Any]) -> tuple[int, int]:
    config = ckpt["model_config"]
    return int(config["src_vocab"]), int(config["tgt_vocab"])


def _inherit(path: str | Path, space: SearchSpace, arch: Arch) -> tuple[dict[str, Any], Tokenizer, tuple[int, int]]:
    """SubTransformer weights of ``arch`` inherited from a SuperTransformer checkpoint, with its
    tokenizer and embedding sizes."""
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "supernet":
        raise DataError(f"--init-from {path} is a {ckpt.get('kind')} checkpoint; it must be a SuperTransformer "
                        "(pass a checkpoint of `hat-ray train supernet`)")
    model, ckpt_space = model_from_checkpoint(ckpt)
    ckpt_space.check(arch, source=f"arch (space of {path})")
    space.check(arch)
    sub = extract_subnet(model, arch)
    state = {k: v.clone() for k, v in sub.state_dict().items()}
    return state, tokenizer_from_checkpoint(ckpt, str(path)), _vocab_rows(ckpt)


def require_cuda() -> None:
    """HatRayError unless torch sees a CUDA GPU here (``--gpu`` in one process)."""
    if not torch.cuda.is_available():
        raise HatRayError("--gpu: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                          "drop --gpu, or install a CUDA build of torch on a machine with a GPU")


def run(spec: RunSpec, workers: int = 1, cpus_per_worker: int = 1, use_gpu: bool = False,
        address: str | None = None) -> dict[str, Any]:
    """Train in this process (``workers`` 1) or data-parallel on Ray Train workers (on the Ray
    cluster at ``address`` / ``RAY_ADDRESS``, else a local instance; see
    :func:`~hat_ray.train.ray_train.train_distributed`)."""
    if workers > 1:
        from hat_ray.train.ray_train import train_distributed

        return train_distributed(spec, workers, cpus_per_worker, use_gpu, address=address)
    if use_gpu:
        require_cuda()
    return build_trainer(spec, device="cuda" if use_gpu else "cpu").train()
