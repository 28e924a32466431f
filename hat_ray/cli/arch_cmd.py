"""`hat-ray arch info|sample`."""

from __future__ import annotations

import argparse

import numpy as np
import yaml

from hat_ray.cli.common import load_arch, print_json
from hat_ray.model.accounting import arch_info
from hat_ray.space import SearchSpace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arch", help="inspect and sample SubTransformer architectures")
    asub = p.add_subparsers(dest="arch_command", metavar="ACTION", parser_class=type(p))
    asub.required = True
    info = asub.add_parser("info", help="params, FLOPs and HAT features of an Arch YAML")
    info.add_argument("arch", help="Arch YAML: HAT's format or hat-ray's own")
    info.add_argument("--space", required=True, help="search space name or YAML path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_info)
    sample = asub.add_parser("sample", help="print random Archs of a space as YAML")
    sample.add_argument("--space", required=True)
    sample.add_argument("-n", type=int, default=1)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--format", choices=("hat-ray", "hat"), default="hat-ray")
    sample.set_defaults(func=_sample)


def _info(args: argparse.Namespace) -> int:
    space = SearchSpace.load(args.space)
    arch = load_arch(args.arch, space)
    info = arch_info(arch, space.super.qkv_dim, space.super.seq_len)
    if args.json:
        print_json(info)
    else:
        print(f"{arch.key()}")
        print(f"  params {info['params_m']:.2f} M ({info['params']}), FLOPs {info['flops_g']:.2f} G ({info['flops']})")
        print("  features " + ", ".join(f"{v:g}" for v in info["features"]))
    return 0


def _sample(args: argparse.Namespace) -> int:
    space = SearchSpace.load(args.space)
    rng = np.random.default_rng(args.seed)
    docs = []
    for _ in range(max(args.n, 0)):
        arch = space.sample(rng)
        docs.append(arch.to_hat() if args.format == "hat" else arch.to_dict())
    print(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=None), end="")
    return 0
