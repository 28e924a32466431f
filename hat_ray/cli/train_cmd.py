"""`hat-ray train supernet|subnet`: train a SuperTransformer or one SubTransformer."""

from __future__ import annotations

import argparse
import json
import os

from hat_ray.cli.common import check_output, load_arch
from hat_ray.errors import ConfigError
from hat_ray.space import SearchSpace
from hat_ray.train.config import TrainConfig
from hat_ray.train.schedule import SCHEDULES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a SuperTransformer (supernet) or a SubTransformer (subnet)")
    tsub = p.add_subparsers(dest="train_command", metavar="MODE", parser_class=type(p))
    tsub.required = True
    sup = tsub.add_parser("supernet", help="weight-shared SuperTransformer: one sampled Arch per update")
    sup.add_argument("--sandwich", action="store_true",
                     help="also train the largest and smallest Arch every update (sandwich rule)")
    sup.add_argument("--largest-prob", type=float, default=0.0, metavar="P",
                     help="train the largest Arch instead of a sampled one with chance P per update (default 0: "
                          "HAT's uniform sampling)")
    sup.add_argument("--largest-first", type=int, default=0, metavar="N",
                     help="train the largest Arch only for the first N updates, then sample (default 0: HAT's "
                          "sampling from the start; short runs train much better with ~half their updates here, "
                          "see BENCHMARKS.md)")
    sup.add_argument("--largest-first-minutes", type=float, default=0.0, metavar="M",
                     help="train the largest Arch only for the first M minutes of training time, then sample: the "
                          "same share of a --max-minutes budget on any machine (default 0)")
    subnet = tsub.add_parser("subnet", help="one fixed SubTransformer, from scratch or inherited weights")
    subnet.add_argument("--arch", required=True, help="Arch YAML (HAT's format or hat-ray's)")
    subnet.add_argument("--init-from", metavar="SUPER_CKPT",
                        help="start from this SuperTransformer checkpoint's weights (and its tokenizer)")
    for parser, mode in ((sup, "supernet"), (subnet, "subnet")):
        _common(parser)
        parser.set_defaults(func=_train, mode=mode)


def _common(p: argparse.ArgumentParser) -> None:
    d = TrainConfig(max_updates=1)  # for the defaults only
    p.add_argument("--space", required=True, help="search space name or YAML path")
    p.add_argument("--data", default="synthetic",
                   help="multi30k | wmt14_en_de | iwslt14_de_en | synthetic | a folder of {train,valid}.LANG[.gz]")
    p.add_argument("--data-dir", help="folder already holding the named dataset's files (no download)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, TensorBoard)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    p.add_argument("--max-updates", type=int)
    p.add_argument("--max-minutes", type=float, help="wall-clock budget over all sessions of the run")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers (default 1: no Ray)")
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl)")
    p.add_argument("--address", help="Ray cluster for --workers > 1 (default: RAY_ADDRESS, else a local instance); "
                                     "the outputs land in --out on this machine either way")
    p.add_argument("--threads", type=int, help="torch threads for a 1-worker run (default: torch's)")
    p.add_argument("--src-lang")
    p.add_argument("--tgt-lang")
    p.add_argument("--vocab-size", type=int, default=8000, help="subword vocabulary (upper bound)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading a named dataset")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--update-freq", type=int, default=d.update_freq)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-updates", type=int, default=d.warmup_updates)
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--clip-norm", type=float, default=d.clip_norm)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--dropout", type=float, help="dropout for this run (default: the space's)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--validate-every", type=int, default=d.validate_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--keep-last", type=int, default=d.keep_last)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        mode=args.mode, max_updates=args.max_updates, max_minutes=args.max_minutes, max_tokens=args.max_tokens,
        update_freq=args.update_freq, schedule=args.schedule, lr=args.lr, warmup_updates=args.warmup_updates,
        min_lr=args.min_lr, clip_norm=args.clip_norm, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, dropout=args.dropout, seed=args.seed,
        sandwich=getattr(args, "sandwich", False), largest_prob=getattr(args, "largest_prob", 0.0),
        largest_first=getattr(args, "largest_first", 0),
        largest_first_minutes=getattr(args, "largest_first_minutes", 0.0),
        validate_every=args.validate_every, save_every=args.save_every, keep_last=args.keep_last,
        log_every=args.log_every, progress=not args.no_progress, tensorboard=not args.no_tensorboard,
    )


def _train(args: argparse.Namespace) -> int:
    import torch  # heavy imports only when the command runs (keeps `hat-ray --help` fast)

    from hat_ray.train.run import DataOptions, make_spec, require_cuda, run

    space = SearchSpace.load(args.space)
    cfg = _config(args)
    check_output(args.out, "--out", folder=True)
    arch = load_arch(args.arch, space) if args.mode == "subnet" else None
    data = DataOptions(args.data, args.data_dir, args.src_lang, args.tgt_lang, args.vocab_size,
                       download=not args.no_download)
    if args.workers < 1 or args.cpus_per_worker < 1:
        raise ConfigError("command line", ["--workers and --cpus-per-worker must be >= 1"])
    if args.gpu and args.workers == 1:
        require_cuda()  # before any data is prepared; with --workers the cluster's GPUs are checked
    if args.workers > 1 and (args.address or os.environ.get("RAY_ADDRESS")):
        from hat_ray.cluster import check_address

        check_address(args.address or os.environ["RAY_ADDRESS"])  # in seconds, before the data is prepared
    spec = make_spec(space, cfg, data, args.out, resume=args.resume, arch=arch,
                     init_from=getattr(args, "init_from", None))
    if args.threads and args.workers == 1:
        torch.set_num_threads(args.threads)
    summary = run(spec, args.workers, args.cpus_per_worker, args.gpu, address=args.address)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        losses = ", ".join(f"{k.removeprefix('valid_loss_')} {v:.3f}" for k, v in summary.items()
                           if k.startswith("valid_loss_"))
        print(f"trained {summary.get('update', 0):.0f} updates, {summary.get('tokens', 0):.0f} target tokens "
              f"({summary.get('tokens_per_s', 0):.0f} tok/s); valid loss (bits): {losses or 'n/a'}")
        print(f"checkpoint: {args.out}/checkpoint_last.pt")
    return 0
