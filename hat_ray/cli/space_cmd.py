"""`hat-ray space list|show`."""

from __future__ import annotations

import argparse

from hat_ray.cli.common import print_json
from hat_ray.model.accounting import count_flops, count_params
from hat_ray.resources import bundled_names
from hat_ray.space import SearchSpace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="list and inspect search spaces")
    ssub = p.add_subparsers(dest="space_command", metavar="ACTION", parser_class=type(p))
    ssub.required = True
    show = ssub.add_parser("show", help="validate and print a search space")
    show.add_argument("space", help="bundled name (e.g. wmt14_en_de) or path to a YAML file")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)
    lst = ssub.add_parser("list", help="list bundled search spaces")
    lst.set_defaults(func=_list)


def summary(space: SearchSpace) -> dict:
    q, t = space.super.qkv_dim, space.super.seq_len
    big, small = space.largest(), space.smallest()
    return {
        **space.to_dict(),
        "size": space.size(),
        "largest": {"params": count_params(big, q), "flops": count_flops(big, q, t)},
        "smallest": {"params": count_params(small, q), "flops": count_flops(small, q, t)},
    }


def _show(args: argparse.Namespace) -> int:
    space = SearchSpace.load(args.space)
    info = summary(space)
    if args.json:
        print_json(info)
        return 0
    s = space.super
    print(f"{space.name}: {space.description}")
    print(f"  super: embed {s.encoder_embed_dim}/{s.decoder_embed_dim}, ffn {s.encoder_ffn_embed_dim}/"
          f"{s.decoder_ffn_embed_dim}, layers {s.encoder_layers}/{s.decoder_layers}, heads "
          f"{s.encoder_attention_heads}/{s.decoder_attention_heads}, qkv {s.qkv_dim}, "
          f"{'tied' if s.share_embeddings else 'separate'} embeddings")
    for key, values in space.choices.items():
        wider = space.latency_choices.get(key)
        extra = f"   (latency datasets: {list(wider)})" if wider else ""
        print(f"  {key:32s} {list(values)}{extra}")
    print(f"  SubTransformers: {info['size']:.3e}")
    for which in ("largest", "smallest"):
        print(f"  {which:9s} {info[which]['params'] / 1e6:.2f} M params, {info[which]['flops'] / 1e9:.2f} GFLOPs")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name in bundled_names("search_spaces"):
        print(name)
    return 0
