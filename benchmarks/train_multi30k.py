"""Benchmark: SuperTransformer training on Multi30k vs a plain torch.nn.Transformer (not in CI).

Trains, side by side in one process and under the same wall-clock budget each, (a) the
SuperTransformer of the ``demo`` space (one sampled Arch per update, HAT's recipe) and (b) a
plain ``torch.nn.Transformer`` of the same max dimensions (d 256, FFN 1024, 4+4 layers, 4 heads,
tied embeddings, post-LN, no final stack norm, dropout 0.3 / attention 0.1), with the same
subword model, batches, loss, optimizer and schedule. The two alternate in slices of
``--slice`` seconds so both see the same machine load (the CPU may be shared).

Reports: SacreBLEU (+ tokenized BLEU) on test2016 for the supernet's largest, smallest and
"dense" Arch (the largest with every decoder layer attending only the last encoder layer: exactly
the plain model's shapes) and for the plain model (decoded by hat-ray's decoder after an exact
weight conversion, checked on a batch); training tokens/s of each over the run; and tokens/s of
the supernet run at the dense Arch against the plain model (the weight-sharing overhead at equal
size). ``--variants supernet,sandwich`` measures the sandwich rule instead, ``biased`` the
supernet trained on the largest Arch with chance ``--largest-prob`` per update, ``first`` the
supernet trained on the largest Arch only for its first ``--largest-first`` updates (OFA's order;
``supernet_recipes.py`` chose it). Writes JSON to ``benchmarks/results/``.

    python benchmarks/train_multi30k.py --minutes 40          # the issue's budget (each model)
    python benchmarks/train_multi30k.py --minutes 5 --beam 1  # a short run, greedy
    python benchmarks/train_multi30k.py --minutes 5 --variants supernet,sandwich  # sandwich rule, measured
    python benchmarks/train_multi30k.py --minutes 40 --variants biased,plain --largest-prob 0.25 --beam 1
    python benchmarks/train_multi30k.py --minutes 40 --variants first,plain --largest-first 660 --beam 1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hat_ray.arch import Arch
from hat_ray.data.batching import collate, encode_corpus
from hat_ray.data.datasets import load_split
from hat_ray.model.layers import make_positions, sinusoid_table
from hat_ray.model.transformer import ModelConfig, Transformer, build_super
from hat_ray.space import SearchSpace
from hat_ray.tokens import PAD
from hat_ray.train.config import TrainConfig
from hat_ray.train.evaluate import sacre_bleu, tokenized_bleu, translate
from hat_ray.train.run import DataOptions, prepare_data
from hat_ray.train.trainer import Trainer

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]


class PlainTransformer(nn.Module):
    """torch.nn.Transformer with HAT's embedding and regularisation recipe (see module docstring)."""

    def __init__(self, vocab: int, d: int, ffn: int, heads: int, enc: int, dec: int, dropout: float,
                 attn_dropout: float, max_positions: int) -> None:
        super().__init__()
        self.d = d
        self.embed = nn.Parameter(torch.randn(vocab, d) * d**-0.5)
        with torch.no_grad():
            self.embed[PAD].zero_()
        enc_layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout, batch_first=True)
        dec_layer = nn.TransformerDecoderLayer(d, heads, ffn, dropout, batch_first=True)
        self.core = nn.Transformer(d, heads, batch_first=True,
                                   custom_encoder=nn.TransformerEncoder(enc_layer, enc, enable_nested_tensor=False),
                                   custom_decoder=nn.TransformerDecoder(dec_layer, dec))
        for layer in [*self.core.encoder.layers, *self.core.decoder.layers]:
            layer.dropout.p = 0.0  # no activation dropout (fairseq/HAT default)
            layer.self_attn.dropout = attn_dropout
            if hasattr(layer, "multihead_attn"):
                layer.multihead_attn.dropout = attn_dropout
        self.register_buffer("positions", sinusoid_table(max_positions + PAD + 1, d, PAD), persistent=False)

    def _embed(self, tokens: Tensor) -> Tensor:
        return self.d**0.5 * nn.functional.embedding(tokens, self.embed) + self.positions[make_positions(tokens, PAD)]

    def forward(self, src: Tensor, prev: Tensor, arch: object = None) -> Tensor:
        """(B, S) left-padded source, (B, T) previous tokens -> logits (B, T, V)."""
        pad = src.eq(PAD)
        causal = torch.ones(prev.shape[1], prev.shape[1], dtype=torch.bool, device=prev.device).triu(1)  # True = masked
        x = nn.functional.dropout(self._embed(src), self.core.encoder.layers[0].dropout1.p, self.training)
        y = nn.functional.dropout(self._embed(prev), self.core.encoder.layers[0].dropout1.p, self.training)
        out = self.core(x, y, tgt_mask=causal, src_key_padding_mask=pad, memory_key_padding_mask=pad)
        return nn.functional.linear(out, self.embed)


def plain_model(space: SearchSpace, vocab: int, dropout: float | None = None) -> PlainTransformer:
    """The plain Transformer of ``space``'s max size (dropout: the space's unless given)."""
    s = space.super
    return PlainTransformer(vocab, s.encoder_embed_dim, s.encoder_ffn_embed_dim, s.encoder_attention_heads,
                            s.encoder_layers, s.decoder_layers, s.dropout if dropout is None else dropout,
                            s.attention_dropout, s.max_positions)


def to_hat_ray(plain: PlainTransformer, config: ModelConfig) -> Transformer:
    """The same weights in hat-ray's dense Transformer layout (for its beam search)."""
    model = Transformer(config)
    d = plain.d
    state = {"encoder_embed": plain.embed, "decoder_embed": plain.embed}
    for i, layer in enumerate(plain.core.encoder.layers):
        p = f"encoder_layers.{i}."
        state.update({p + "self_attn.in_proj_weight": layer.self_attn.in_proj_weight,
                      p + "self_attn.in_proj_bias": layer.self_attn.in_proj_bias,
                      **_pairs(p, layer, {"self_attn.out_proj": "self_attn.out_proj", "self_attn_layer_norm": "norm1",
                                          "fc1": "linear1", "fc2": "linear2", "final_layer_norm": "norm2"})})
    for i, layer in enumerate(plain.core.decoder.layers):
        p = f"decoder_layers.{i}."
        w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
        state.update({p + "self_attn.in_proj_weight": layer.self_attn.in_proj_weight,
                      p + "self_attn.in_proj_bias": layer.self_attn.in_proj_bias,
                      p + "encoder_attn.q_proj_weight": w[:d], p + "encoder_attn.q_proj_bias": b[:d],
                      p + "encoder_attn.kv_proj_weight": w[d:], p + "encoder_attn.kv_proj_bias": b[d:],
                      **_pairs(p, layer, {"self_attn.out_proj": "self_attn.out_proj", "self_attn_layer_norm": "norm1",
                                          "encoder_attn.out_proj": "multihead_attn.out_proj",
                                          "encoder_attn_layer_norm": "norm2", "fc1": "linear1", "fc2": "linear2",
                                          "final_layer_norm": "norm3"})})
    model.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return model


def _pairs(prefix: str, layer: nn.Module, names: dict[str, str]) -> dict[str, Tensor]:
    mods = dict(layer.named_modules())
    return {f"{prefix}{ours}.{w}": getattr(mods[theirs], w) for ours, theirs in names.items() for w in ("weight", "bias")}


def interleave(trainers: dict[str, Trainer], seconds: float, slice_s: float) -> dict[str, dict]:
    """Alternate ``slice_s``-second slices of train_step() until each trainer used ``seconds``."""
    used = dict.fromkeys(trainers, 0.0)
    tokens = dict.fromkeys(trainers, 0)
    while any(u < seconds for u in used.values()):
        for name, tr in trainers.items():
            start = time.perf_counter()
            while used[name] + time.perf_counter() - start < seconds and time.perf_counter() - start < slice_s:
                tokens[name] += tr.train_step()["ntokens"]
            used[name] += time.perf_counter() - start
        log.info("progress: %s", {n: f"{t.update} upd, {used[n] / 60:.1f} min" for n, t in trainers.items()})
    return {n: {"updates": trainers[n].update, "seconds": used[n], "tokens": tokens[n],
                "tokens_per_s": tokens[n] / used[n]} for n in trainers}


def dense_arch(space: SearchSpace) -> Arch:
    """The largest Arch with every decoder layer attending the LAST encoder layer only: exactly the
    plain Transformer's shapes and FLOPs (the largest Arch attends the last three)."""
    largest = space.largest()
    return replace(largest, decoder_arbitrary_ende_attn=(-1,) * largest.decoder_layers)


def equal_size_throughput(super_tr: Trainer, plain_tr: Trainer, updates: int, rounds: int = 5) -> dict[str, float]:
    """tokens/s of the supernet forced to the plain model's shapes (:func:`dense_arch`) vs the
    plain model: ``rounds`` alternations of ``updates // rounds`` updates each on the next batches
    of each; the median round per model (robust to load from other processes)."""
    dense = dense_arch(super_tr.space)
    sampler = super_tr.archs
    super_tr.archs = lambda u: [dense]  # type: ignore[method-assign]
    rates: dict[str, list[float]] = {"supernet_dense": [], "plain": []}
    try:
        for _ in range(rounds):
            for name, tr in (("supernet_dense", super_tr), ("plain", plain_tr)):
                start, tok = time.perf_counter(), 0
                for _ in range(max(updates // rounds, 1)):
                    tok += tr.train_step()["ntokens"]
                rates[name].append(tok / (time.perf_counter() - start))
    finally:
        super_tr.archs = sampler  # type: ignore[method-assign]
    return {name: float(np.median(r)) for name, r in rates.items()} | {"rounds": rates}


VARIANTS = ("supernet", "first", "sandwich", "biased", "plain")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=40.0, help="training budget of EACH model")
    ap.add_argument("--variants", default="supernet,plain",
                    help=f"comma-separated, of {VARIANTS}: sandwich = supernet with the sandwich rule, "
                         "biased = supernet with --largest-prob, first = supernet with --largest-first")
    ap.add_argument("--largest-prob", type=float, default=0.25, help="the biased variant's chance per update of "
                    "training the largest Arch")
    ap.add_argument("--largest-first", type=int, default=660, help="the first variant's updates that train the "
                    "largest Arch only (660: about the first 20 of 40 minutes on this 2-core machine)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--lenpen", type=float, default=0.6)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--slice", type=float, default=60.0, help="seconds per alternation slice")
    ap.add_argument("--throughput-updates", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--test-limit", type=int, help="score only the first N test sentences (smoke runs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if not variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants: choose from {VARIANTS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    space = SearchSpace.load("demo")
    data = prepare_data(DataOptions("multi30k", args.data_dir, vocab_size=args.vocab_size), space.super.max_positions)
    trainers = build_trainers(variants, space, data, args)
    results = {"budget_minutes_each": args.minutes, "args": vars(args), "vocab": data.tokenizer.vocab_size,
               "train": interleave(trainers, args.minutes * 60, args.slice)}
    supernet = next((trainers[v] for v in ("first", "supernet", "biased", "sandwich") if v in trainers), None)
    if supernet is not None and "plain" in trainers:
        results["equal_size_tokens_per_s"] = equal_size_throughput(supernet, trainers["plain"],
                                                                   args.throughput_updates)
    results["valid"] = {n: t.validate() for n, t in trainers.items()}
    results["bleu"] = score(trainers, data.tokenizer, args, space)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"train_multi30k_{args.minutes:g}min_{'_'.join(variants)}.json"
    path.write_text(json.dumps(results, indent=2))
    log.info("wrote %s\n%s", path, json.dumps({k: v for k, v in results.items() if k != "args"}, indent=2))


def build_trainers(variants: list[str], space: SearchSpace, data, args: argparse.Namespace) -> dict[str, Trainer]:
    """Same batches, loss, optimizer and schedule for every variant; each model seeded alike."""
    vocab = data.tokenizer.vocab_size
    cfg = TrainConfig(max_updates=10**9, max_tokens=args.max_tokens, lr=args.lr, warmup_updates=args.warmup,
                      progress=False, tensorboard=False, log_every=50)
    trainers = {}
    for name in variants:
        if name == "plain":
            torch.manual_seed(1)
            model = plain_model(space, vocab)
            trainers[name] = Trainer(model, space, cfg.replace(mode="subnet"), data.train, data.valid)
        else:
            model = build_super(space, vocab, vocab, seed=1)
            rule = cfg.replace(sandwich=name == "sandwich", largest_prob=args.largest_prob if name == "biased" else 0.0,
                               largest_first=args.largest_first if name == "first" else 0)
            trainers[name] = Trainer(model, space, rule, data.train, data.valid)
    return trainers


def score(trainers: dict[str, Trainer], tokenizer, args: argparse.Namespace, space: SearchSpace) -> dict:
    """SacreBLEU / tokenized BLEU on test2016: largest, dense-equivalent and smallest Arch of each
    supernet, and the plain model through hat-ray's decoder (conversion checked first)."""
    test = load_split("multi30k", "test", args.data_dir)
    if args.test_limit:
        test = test.subset(range(args.test_limit))
    jobs = []
    for name, tr in trainers.items():
        if name == "plain":
            jobs.append(("plain", checked_conversion(tr.model, test, tokenizer, space), dense_arch(space)))
        else:
            jobs += [(f"{name}_largest", tr.model, space.largest()), (f"{name}_dense", tr.model, dense_arch(space)),
                     (f"{name}_smallest", tr.model, space.smallest())]
    out = {}
    for name, model, arch in jobs:
        start = time.perf_counter()
        hyps = translate(model, arch, tokenizer, test.src, args.beam, args.lenpen)
        bleu, sig = sacre_bleu(hyps, test.tgt)
        out[name] = {"sacrebleu": bleu, "tok_bleu": tokenized_bleu(hyps, test.tgt), "signature": sig,
                     "decode_s": time.perf_counter() - start, "example": hyps[0]}
        log.info("%s: SacreBLEU %.2f", name, bleu)
    return out


def checked_conversion(plain: PlainTransformer, test, tokenizer, space: SearchSpace) -> Transformer:
    """The plain model as a hat-ray Transformer; asserts equal logits on 8 test sentences."""
    plain.eval()
    config = ModelConfig.for_space(space, plain.embed.shape[0], plain.embed.shape[0])
    converted = to_hat_ray(plain, config).eval()
    probe = encode_corpus(test.subset(range(min(8, len(test)))), tokenizer, space.super.max_positions)
    b = collate(probe, list(range(8)))
    with torch.inference_mode():
        diff = (plain(b.src, b.prev) - converted(b.src, b.prev, dense_arch(space))).abs().max().item()
    log.info("plain -> hat-ray conversion: max |logit diff| %.2e", diff)
    assert diff < 1e-3, diff
    return converted


if __name__ == "__main__":
    main()
