"""HAT / fairseq checkpoint import: files written here in HAT's exact layout, by hand.

The writer below deliberately does not use anything in hat_ray that knows HAT's layout: it
renames a freshly built SuperTransformer's tensors to HAT's keys (fused enc-dec in_proj,
positional placeholders, version buffers), pickles fairseq-like meter objects under a fake
``fairseq.meters`` module that is gone again before loading, and writes dict.<lang>.txt files.
"""

from __future__ import annotations

import argparse
import builtins
import os
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hat_ray.arch import Arch
from hat_ray.checkpoint import load_checkpoint, model_from_checkpoint
from hat_ray.cli.main import main
from hat_ray.errors import DataError
from hat_ray.model import hat_import
from hat_ray.model.extract import extract_subnet
from hat_ray.model.hat_import import import_hat_checkpoint, load_hat_file, read_fairseq_dict
from hat_ray.model.transformer import Transformer, build_super
from hat_ray.space import SearchSpace
from hat_ray.tokens import EOS, PAD

TINY = {
    "name": "tiny",
    "super": {
        "encoder_embed_dim": 32, "decoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
        "decoder_ffn_embed_dim": 64, "encoder_layers": 3, "decoder_layers": 3,
        "encoder_attention_heads": 4, "decoder_attention_heads": 4, "qkv_dim": 16,
        "share_embeddings": True, "dropout": 0.3, "attention_dropout": 0.1, "max_positions": 64,
    },
    "choices": {
        "encoder_embed_dim": [32, 24], "decoder_embed_dim": [32, 24], "encoder_layers": [3],
        "decoder_layers": [3, 2, 1], "encoder_ffn_embed_dim": [64, 48, 32],
        "decoder_ffn_embed_dim": [64, 48, 32], "encoder_self_attention_heads": [4, 2],
        "decoder_self_attention_heads": [4, 2], "decoder_ende_attention_heads": [4, 2],
        "decoder_arbitrary_ende_attn": [-1, 1, 2],
    },
}
# hat-ray choice key -> HAT args attribute
CHOICE_ATTRS = {
    "encoder_embed_dim": "encoder_embed_choice", "decoder_embed_dim": "decoder_embed_choice",
    "encoder_layers": "encoder_layer_num_choice", "decoder_layers": "decoder_layer_num_choice",
    "encoder_ffn_embed_dim": "encoder_ffn_embed_dim_choice", "decoder_ffn_embed_dim": "decoder_ffn_embed_dim_choice",
    "encoder_self_attention_heads": "encoder_self_attention_heads_choice",
    "decoder_self_attention_heads": "decoder_self_attention_heads_choice",
    "decoder_ende_attention_heads": "decoder_ende_attention_heads_choice",
    "decoder_arbitrary_ende_attn": "decoder_arbitrary_ende_attn_choice",
}
SUB = Arch(24, 32, (48, 64, 32), (2, 4, 4), (64, 32), (4, 2), (2, 4), (2, -1))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest, and on a busy 2-core machine the default
    thread pool's spin-waiting makes each small matmul ~1000x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_space(shared: bool = True, **super_overrides: object) -> SearchSpace:
    data = {**TINY, "super": {**TINY["super"], "share_embeddings": shared, **super_overrides}}
    return SearchSpace.from_dict(data)


# ---------------------------------------------------------------------------------------------
# a HAT checkpoint writer (independent of hat_ray's importer)
# ---------------------------------------------------------------------------------------------
def hat_state_dict(model: Transformer, half: bool) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in sd.items():
        if name == "encoder_embed":
            out["encoder.embed_tokens.weight"] = tensor
        elif name == "decoder_embed":
            out["decoder.embed_tokens.weight"] = tensor  # fairseq saves the tied matrix twice
        elif name == "output_proj":
            out["decoder.embed_out"] = tensor
        elif ".encoder_attn.q_proj_" in name:
            continue
        elif ".encoder_attn.kv_proj_" in name:
            fused = torch.cat([sd[name.replace("kv_proj", "q_proj")], tensor])
            stack, rest = name.split("_layers.", 1)
            out[f"{stack}.layers.{rest.replace('kv_proj_', 'in_proj_')}"] = fused
        else:
            stack, rest = name.split("_layers.", 1)
            out[f"{stack}.layers.{rest}"] = tensor
    for stack in ("encoder", "decoder"):
        out[f"{stack}.embed_positions._float_tensor"] = torch.FloatTensor(1)
        out[f"{stack}.version"] = torch.Tensor([3])
    if half:
        memo: dict[int, torch.Tensor] = {}
        out = {k: memo.setdefault(id(v), v.half()) if v.is_floating_point() else v for k, v in out.items()}
    return out


def hat_args(space: SearchSpace, sub: Arch | None, src: str, tgt: str, **extra: object) -> argparse.Namespace:
    s = space.super
    args = argparse.Namespace(
        arch="transformersuper_wmt_en_de", task="translation", source_lang=src, target_lang=tgt,
        data="data/binary/x", share_all_embeddings=s.share_embeddings,
        share_decoder_input_output_embed=s.share_embeddings, encoder_embed_dim=s.encoder_embed_dim,
        decoder_embed_dim=s.decoder_embed_dim, encoder_ffn_embed_dim=s.encoder_ffn_embed_dim,
        decoder_ffn_embed_dim=s.decoder_ffn_embed_dim, encoder_layers=s.encoder_layers,
        decoder_layers=s.decoder_layers, encoder_attention_heads=s.encoder_attention_heads,
        decoder_attention_heads=s.decoder_attention_heads, qkv_dim=s.qkv_dim, dropout=s.dropout,
        attention_dropout=s.attention_dropout, max_source_positions=s.max_positions,
        max_target_positions=s.max_positions, encoder_normalize_before=False, decoder_normalize_before=False,
        encoder_learned_pos=False, decoder_learned_pos=False, no_token_positional_embeddings=False,
        activation_fn="relu", adaptive_softmax_cutoff=None, vocab_original_scaling=False,
        criterion="label_smoothed_cross_entropy", lr=[0.001], adam_betas="(0.9, 0.98)", fp16=True,
        max_update=40000, train_subtransformer=sub is not None and extra.pop("sub_run", False),
    )
    for key, attr in CHOICE_ATTRS.items():
        setattr(args, attr, list(space.choices[key]))
    for key, value in (sub.to_hat() if sub is not None else {}).items():
        setattr(args, key.replace("-", "_"), value)
    for key, value in extra.items():
        setattr(args, key, value)
    return args


def fake_fairseq() -> tuple[types.ModuleType, types.ModuleType]:
    pkg, meters = types.ModuleType("fairseq"), types.ModuleType("fairseq.meters")
    pkg.meters = meters
    for name in ("AverageMeter", "TimeMeter", "StopwatchMeter"):
        setattr(meters, name, type(name, (), {"__module__": "fairseq.meters"}))
    return pkg, meters


def meters(mod: types.ModuleType) -> OrderedDict:
    def make(cls_name: str, **state: object) -> object:
        obj = getattr(mod, cls_name)()
        obj.__dict__.update(state)
        return obj

    return OrderedDict(
        train_loss=make("AverageMeter", val=4.1, avg=4.3, sum=430.0, count=100),
        wps=make("TimeMeter", init=0, start=1.6e9, n=123456),
        train_wall=make("StopwatchMeter", sum=3600.5, n=10, start_time=None),
    )


def save_hat(path: Path, container_fn, zip_format: bool = True) -> None:
    """torch.save the container built by ``container_fn(meters_module)`` while a fake fairseq
    is importable; fairseq is gone again afterwards."""
    pkg, mod = fake_fairseq()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "fairseq", pkg)
        mp.setitem(sys.modules, "fairseq.meters", mod)
        torch.save(container_fn(mod), path, _use_new_zipfile_serialization=zip_format)
    assert "fairseq.meters" not in sys.modules


def container(state: dict, args: argparse.Namespace, mod: types.ModuleType) -> dict:
    return {
        "args": args,
        "model": state,
        "optimizer_history": [
            {"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "FP16Optimizer",
             "lr_scheduler_state": {"best": 4.0}, "num_updates": 1000},
            {"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "FP16Optimizer",
             "lr_scheduler_state": {"best": 3.8}, "num_updates": 1234},
        ],
        "extra_state": {"train_iterator": {"epoch": 7, "iterations_in_epoch": 0}, "val_loss": 3.9,
                        "best": 3.8, "train_meters": meters(mod)},
        "last_optimizer_state": {
            "state": {0: {"step": 1234, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.ones(3)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.98), "eps": 1e-8, "params": [0]}],
            "loss_scale": 128.0,
        },
    }


def write_dict(path: Path, n_tokens: int, madeup: int = 0, flag_line: int = -1) -> None:
    lines = [f"w{i} {1000 - i}" + (" #fairseq:overwrite" if i == flag_line else "") for i in range(n_tokens)]
    lines += [f"madeupword{i:04d} 0" for i in range(madeup)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class Case:
    space: SearchSpace
    ref: Transformer  # the SuperTransformer holding exactly the (rounded) tensors written
    state: dict
    args: argparse.Namespace
    dict_dir: Path
    src_vocab: int
    tgt_vocab: int


def make_case(root: Path, shared: bool, seed: int = 0) -> Case:
    """shared: joined 16-token dict, tied embeddings, fp16 (WMT-like). Otherwise: de (24) -> en
    (16), separate embeddings and decoder.embed_out, fp32 (IWSLT-like)."""
    space = tiny_space(shared)
    src_v, tgt_v = (16, 16) if shared else (24, 16)
    ref = build_super(space, src_v, tgt_v, seed=seed).eval()
    if shared:
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(p.half().float())
    root.mkdir(parents=True, exist_ok=True)
    if shared:  # 4 special + 10 + 2 padding made up at read time
        write_dict(root / "dict.en.txt", 10, flag_line=3)
        write_dict(root / "dict.de.txt", 10, flag_line=3)
        src, tgt = "en", "de"
    else:  # de: 4 + 17 -> padded to 24; en: saved with its madeupwords like fairseq's preprocess
        write_dict(root / "dict.de.txt", 17)
        write_dict(root / "dict.en.txt", 10, madeup=2)
        src, tgt = "de", "en"
    args = hat_args(space, SUB, src, tgt)
    return Case(space, ref, hat_state_dict(ref, half=shared), args, root, src_v, tgt_v)


@pytest.fixture(scope="module", params=["shared", "separate"])
def case(request, tmp_path_factory) -> Case:
    return make_case(tmp_path_factory.mktemp(request.param), request.param == "shared")


def write_case(case: Case, path: Path, zip_format: bool = True, state: dict | None = None,
               args: argparse.Namespace | None = None) -> Path:
    save_hat(path, lambda mod: container(state or case.state, args or case.args, mod), zip_format)
    return path


def batch(src_vocab: int, tgt_vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, src_vocab, (3, 7), generator=g)
    src[0, :3] = PAD  # sources are left-padded
    src[1, :1] = PAD
    src[:, -1] = EOS
    prev = torch.randint(4, tgt_vocab, (3, 6), generator=g)
    prev[:, 0] = EOS
    return src, prev


# ---------------------------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_import_round_trip(case: Case, zip_format: bool, tmp_path: Path) -> None:
    path = write_case(case, tmp_path / "checkpoint_best.pt", zip_format)
    ckpt = import_hat_checkpoint(path, dict_dir=case.dict_dir)
    out = tmp_path / "imported.pt"
    torch.save(ckpt, out)
    ckpt = load_checkpoint(out)  # the result is loadable with weights_only=True
    model, space = model_from_checkpoint(ckpt)
    model.eval()
    assert ckpt["kind"] == "supernet" and space.super == case.space.super
    assert dict(space.choices) == dict(case.space.choices)
    assert all(t.dtype == torch.float32 for t in ckpt["model"].values())
    src, prev = batch(case.src_vocab, case.tgt_vocab)
    rng = np.random.default_rng(7)
    with torch.no_grad():
        for arch in [space.sample(rng) for _ in range(6)] + [space.largest(), space.smallest()]:
            torch.testing.assert_close(model(src, prev, arch), case.ref(src, prev, arch), atol=1e-5, rtol=0)


def test_import_metadata_vocab_and_sub_config(case: Case, tmp_path: Path) -> None:
    ckpt = import_hat_checkpoint(write_case(case, tmp_path / "c.pt"), dict_dir=case.dict_dir)
    assert ckpt["arch"] == SUB.to_dict()
    assert ckpt["meta"]["num_updates"] == 1234 and ckpt["meta"]["epoch"] == 7
    assert ckpt["meta"]["imported_from"] == str(tmp_path / "c.pt")
    assert ckpt["meta"]["hat_args"]["qkv_dim"] == 16
    assert (ckpt["meta"]["float16_tensors"] > 0) == case.space.super.share_embeddings
    src, tgt = ckpt["vocab"]["src"], ckpt["vocab"]["tgt"]
    assert (len(src), len(tgt)) == (case.src_vocab, case.tgt_vocab)
    assert src[:5] == ["<s>", "<pad>", "</s>", "<unk>", "w0"]
    assert tgt[-2:] == ["madeupword0000", "madeupword0001"]
    # the released SubTransformer runs as a static model extracted from the imported weights
    model, _ = model_from_checkpoint(ckpt)
    sub = extract_subnet(model.eval(), Arch.from_dict(ckpt["arch"]))
    s, p = batch(case.src_vocab, case.tgt_vocab, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(sub(s, p), case.ref(s, p, SUB), atol=1e-5, rtol=0)


def test_import_without_dicts_and_with_explicit_space(case: Case, tmp_path: Path) -> None:
    path = write_case(case, tmp_path / "c.pt")
    ckpt = import_hat_checkpoint(path, space=case.space)
    assert ckpt["vocab"] is None and ckpt["space"]["name"] == "tiny"


def test_meters_load_as_inert_stand_ins(case: Case, tmp_path: Path) -> None:
    loaded = load_hat_file(write_case(case, tmp_path / "c.pt", zip_format=False))
    assert "fairseq" not in sys.modules
    train_meters = loaded["extra_state"]["train_meters"]
    assert isinstance(train_meters["train_loss"], hat_import.AverageMeter)
    assert train_meters["train_loss"].state["avg"] == 4.3
    assert isinstance(train_meters["wps"], hat_import.TimeMeter)
    assert isinstance(train_meters["train_wall"], hat_import.StopwatchMeter)
    assert isinstance(loaded["args"], argparse.Namespace) and loaded["args"].qkv_dim == 16


def test_sub_transformer_run_without_real_choices(tmp_path: Path) -> None:
    """HAT's SubTransformer training runs carry only its default choice lists (which do not fit
    the super dims): the space is the super dims plus the sub-config."""
    case = make_case(tmp_path / "d", shared=True)
    args = hat_args(case.space, SUB, "en", "de", sub_run=True, encoder_layer_num_choice=[7, 6, 5, 4, 3, 2],
                    encoder_ffn_embed_dim_choice=[4096, 3072, 2048, 1024])
    ckpt = import_hat_checkpoint(write_case(case, tmp_path / "c.pt", args=args))
    space = SearchSpace.from_dict(ckpt["space"])
    assert space.contains(SUB) and space.choices["encoder_ffn_embed_dim"] == (64, 48, 32)
    assert space.choices["decoder_layers"] == (3, 2)


# ---------------------------------------------------------------------------------------------
# safety
# ---------------------------------------------------------------------------------------------
class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval(_Shell):
    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w')",))


class _Unknown:
    pass


_Unknown.__module__ = "fairseq.optim.fp16_optimizer"  # pickled as an unknown (unimportable) class


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload, refused", [(_Shell, os.system.__module__ + ".system"),
                                              (_Eval, "builtins.eval"),
                                              (_Unknown, "fairseq.optim.fp16_optimizer._Unknown")])
def test_malicious_pickle_is_refused(tmp_path: Path, payload, refused: str, zip_format: bool) -> None:
    marker = tmp_path / "MARKER"
    state = {"encoder.version": torch.Tensor([3])}
    args = argparse.Namespace(arch="transformersuper")
    evil = payload(marker) if payload is not _Unknown else _Unknown()
    path = tmp_path / "evil.pt"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("fairseq", "fairseq.optim", "fairseq.optim.fp16_optimizer"):
            module = types.ModuleType(name)
            module._Unknown = _Unknown
            mp.setitem(sys.modules, name, module)
        torch.save({"args": args, "model": state, "extra_state": {"x": evil}}, path,
                   _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    with pytest.raises(DataError) as err:
        import_hat_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and refused in message and "safety" in message
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_dict_size_mismatch(case: Case, tmp_path: Path) -> None:
    path = write_case(case, tmp_path / "c.pt")
    bad = tmp_path / "dicts"
    bad.mkdir()
    src_lang, tgt_lang = case.args.source_lang, case.args.target_lang
    write_dict(bad / f"dict.{src_lang}.txt", 10 if case.src_vocab == 16 else 17)
    write_dict(bad / f"dict.{tgt_lang}.txt", 13)  # 4 + 13 -> padded to 24, embedding has 16
    with pytest.raises(DataError, match=rf"dict\.{tgt_lang}\.txt has 24 entries .* 16 rows"):
        import_hat_checkpoint(path, dict_dir=bad)
    (bad / f"dict.{tgt_lang}.txt").unlink()
    with pytest.raises(DataError, match=rf"dict\.{tgt_lang}\.txt does not exist"):
        import_hat_checkpoint(path, dict_dir=bad)


def test_missing_and_unexpected_keys(case: Case, tmp_path: Path) -> None:
    state = dict(case.state)
    del state["encoder.layers.1.fc2.bias"]
    del state["decoder.layers.2.encoder_attn.in_proj_weight"]
    state["encoder.layer_norm.weight"] = torch.ones(32)
    path = write_case(case, tmp_path / "c.pt", state=state)
    with pytest.raises(DataError) as err:
        import_hat_checkpoint(path)
    message = str(err.value)
    assert "2 missing keys: decoder.layers.2.encoder_attn.in_proj_weight, encoder.layers.1.fc2.bias" in message
    assert "1 unexpected key: encoder.layer_norm.weight" in message and str(path) in message


def test_tied_embeddings_must_match(tmp_path: Path) -> None:
    case = make_case(tmp_path / "d", shared=True)
    state = dict(case.state)
    state["decoder.embed_tokens.weight"] = state["encoder.embed_tokens.weight"] + 1
    with pytest.raises(DataError, match="decoder.embed_tokens.weight differ"):
        import_hat_checkpoint(write_case(case, tmp_path / "c.pt", state=state))


def test_missing_container_entries(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"model": {}, "optimizer_history": []}, path)
    with pytest.raises(DataError, match="lacks args"):
        import_hat_checkpoint(path)


def test_wrong_shapes(case: Case, tmp_path: Path) -> None:
    path = write_case(case, tmp_path / "c.pt")
    wider = tiny_space(case.space.super.share_embeddings, encoder_ffn_embed_dim=96)
    with pytest.raises(DataError) as err:
        import_hat_checkpoint(path, space=wider)
    message = str(err.value)
    assert "encoder.layers.0.fc1.weight (64, 32) (space tiny needs (96, 32))" in message
    assert "9 tensor shape(s) differ" in message  # fc1.weight, fc1.bias, fc2.weight x 3 layers
    other = tiny_space(not case.space.super.share_embeddings)
    with pytest.raises(DataError, match="share_all_embeddings"):
        import_hat_checkpoint(path, space=other)


def test_bad_qkv_split_and_unsupported_options(case: Case, tmp_path: Path) -> None:
    args = hat_args(case.space, SUB, case.args.source_lang, case.args.target_lang, qkv_dim=8)
    with pytest.raises(DataError, match=r"encoder_attn\.in_proj_weight has shape \(48, 32\), expected 24 rows"):
        import_hat_checkpoint(write_case(case, tmp_path / "q.pt", args=args))
    args = hat_args(case.space, SUB, "en", "de", decoder_normalize_before=True)
    with pytest.raises(DataError, match="cannot represent .*decoder_normalize_before"):
        import_hat_checkpoint(write_case(case, tmp_path / "n.pt", args=args))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tensor", "missing"])
def test_corrupt_files(case: Case, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "c.pt"
    if damage == "truncate":
        data = write_case(case, path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "tensor":
        torch.save(torch.zeros(3), path)
    with pytest.raises(DataError, match=str(path).replace(".", r"\.")):
        import_hat_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# dictionaries
# ---------------------------------------------------------------------------------------------
def test_read_fairseq_dict(tmp_path: Path) -> None:
    path = tmp_path / "dict.x.txt"
    path.write_text("the 100\n, 90 #fairseq:overwrite\nnew york 5\n\n", encoding="utf-8")
    tokens = read_fairseq_dict(path)
    assert tokens == ["<s>", "<pad>", "</s>", "<unk>", "the", ",", "new york", "madeupword0000"]
    assert read_fairseq_dict(path, pad_to=1)[-1] == "new york"
    path.write_text("a 1\nb\nc 3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dict\.x\.txt, line 2"):
        read_fairseq_dict(path)
    path.write_text("a 1\nb x\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: expected '<token> <count>'"):
        read_fairseq_dict(path)
    with pytest.raises(DataError, match="does not exist"):
        read_fairseq_dict(tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_import(case: Case, tmp_path: Path, capsys) -> None:
    path = write_case(case, tmp_path / "checkpoint_best.pt")
    space_yaml = tmp_path / "tiny.yaml"
    space_yaml.write_text(yaml.safe_dump(case.space.to_dict()), encoding="utf-8")
    out = tmp_path / "out" / "imported.pt"
    code = main(["import-hat", str(path), "--out", str(out), "--dict-dir", str(case.dict_dir),
                 "--space", str(space_yaml)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and "space tiny" in lines[0] and "1234 updates" in lines[0]
    ckpt = load_checkpoint(out)
    assert ckpt["arch"] == SUB.to_dict() and len(ckpt["vocab"]["tgt"]) == case.tgt_vocab


def test_cli_corrupt_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    code = main(["import-hat", str(bad), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hat-ray: error:") and "broken.pt" in err
    assert not (tmp_path / "o.pt").exists()
