"""Deployment: `hat-ray export` (ONNX fp32 / int8, TorchScript) and the runner of its folders.

Equivalence is checked on a model that translates: a small static SubTransformer trained on
Multi30k for 300 updates (~35 s here, once per module), whose greedy outputs are varied
multi-token German sentences. The exported graphs decode through hat_ray.model.decode's own
``greedy_decode`` / ``beam_search`` (the runner exposes the Transformer's decoding interface), so
equal outputs mean the graphs compute what the torch model computes, step by step.
Measured numbers are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from search_helpers import TINY, tiny_space, tiny_super, write_supernet_checkpoint

from hat_ray.arch import Arch
from hat_ray.checkpoint import load_model
from hat_ray.cli.main import main
from hat_ray.data.datasets import load_split
from hat_ray.data.tokenizer import tokenizer_from_checkpoint
from hat_ray.errors import DataError, ExportError
from hat_ray.export.folder import export_model
from hat_ray.export.runner import ExportedModel
from hat_ray.model.decode import beam_search, greedy_decode
from hat_ray.model.extract import extract_subnet
from hat_ray.space import SearchSpace
from hat_ray.tokens import EOS, PAD
from hat_ray.train.evaluate import sacre_bleu, translate

pytestmark = pytest.mark.timeout(300)

W = 64  # a small space with the demo space's structure: per-layer FFN / heads, arbitrary enc-dec attention
SPACE = {
    "name": "export-small",
    "super": {"encoder_embed_dim": W, "decoder_embed_dim": W, "encoder_ffn_embed_dim": 2 * W,
              "decoder_ffn_embed_dim": 2 * W, "encoder_layers": 2, "decoder_layers": 2,
              "encoder_attention_heads": 4, "decoder_attention_heads": 4, "qkv_dim": W, "max_positions": 128,
              "dropout": 0.1, "share_embeddings": True},
    "choices": {"encoder_embed_dim": [W], "decoder_embed_dim": [W], "encoder_layers": [2], "decoder_layers": [1, 2],
                "encoder_ffn_embed_dim": [2 * W, W], "decoder_ffn_embed_dim": [2 * W, W],
                "encoder_self_attention_heads": [4, 2], "decoder_self_attention_heads": [4, 2],
                "decoder_ende_attention_heads": [4, 2], "decoder_arbitrary_ende_attn": [-1, 1]},
}
# heterogeneous layers: cache shapes differ per layer; layer 0 attends the last two encoder layers
ARCH = Arch(encoder_embed_dim=W, decoder_embed_dim=W, encoder_ffn_embed_dim=(2 * W, W),
            encoder_self_attention_heads=(4, 2), decoder_ffn_embed_dim=(2 * W, W),
            decoder_self_attention_heads=(4, 2), decoder_ende_attention_heads=(2, 4),
            decoder_arbitrary_ende_attn=(1, -1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """A SubTransformer checkpoint trained on Multi30k (300 updates, one thread) + its test set."""
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.run import DataOptions, make_spec, run

    root = tmp_path_factory.mktemp("export_trained")
    data = shared_data / "multi30k"
    cfg = TrainConfig(mode="subnet", max_updates=300, max_tokens=2048, warmup_updates=50, lr=3e-3, dropout=0.1,
                      validate_every=0, save_every=0, keep_last=0, log_every=100, progress=False, tensorboard=False)
    start = time.perf_counter()
    spec = make_spec(SearchSpace.from_dict(SPACE), cfg, DataOptions("multi30k", str(data), vocab_size=1000),
                     root / "run", arch=ARCH)
    run(spec)
    print(f"\n[export] trained {ARCH.key()} for 300 updates in {time.perf_counter() - start:.1f} s")
    ckpt = root / "run" / "checkpoint_last.pt"
    model, _, raw = load_model(ckpt)
    test = load_split("multi30k", "test", data)
    return SimpleNamespace(ckpt=ckpt, model=model.eval(), tokenizer=tokenizer_from_checkpoint(raw), raw=raw,
                           src=list(test.src), tgt=list(test.tgt), root=root)


@pytest.fixture(scope="module")
def exports(trained):
    """The trained model exported three ways: {"onnx", "onnx_int8", "torchscript"} -> folder."""
    out = {}
    for name, fmt, int8 in (("onnx", "onnx", False), ("onnx_int8", "onnx", True), ("torchscript", "torchscript", False)):
        folder = trained.root / f"export_{name}"
        manifest = export_model(trained.model, folder, fmt, int8, trained.tokenizer.to_state())
        sizes = {k: v["bytes"] for k, v in manifest["files"].items()}
        print(f"[export] {name}: {manifest['export_seconds']:.2f} s, files {sizes}")
        out[name] = folder
    assert not trained.model.training  # the exporters leave the model's mode as they found it
    return out


def _batches(tokenizer, lines: list[str], size: int, limit: int = 128) -> list[torch.Tensor]:
    """Left-padded source batches as evaluate.translate builds them (ids + EOS)."""
    ids = [t[:limit - 1] + [EOS] for t in tokenizer.encode_batch(lines, "src")]
    out = []
    for i in range(0, len(ids), size):
        chunk = ids[i:i + size]
        width = max(map(len, chunk))
        src = torch.full((len(chunk), width), PAD, dtype=torch.long)
        for row, t in enumerate(chunk):
            src[row, width - len(t):] = torch.tensor(t)
        out.append(src)
    return out


class Recording:
    """A model whose decode() outputs are kept (before decode.py masks PAD in place)."""

    def __init__(self, model) -> None:
        self.model = model
        self.logits: list[torch.Tensor] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def decode(self, *args, **kwargs):
        out = self.model.decode(*args, **kwargs)
        self.logits.append(out.detach().clone())
        return out


def _greedy_compare(trained, runner: ExportedModel, n: int) -> tuple[list[list[int]], int, float, int]:
    """Greedy-decode the first n test sentences with both; (torch outputs, identical, max |dlogit|, steps)."""
    ref_all, same, worst, steps = [], 0, 0.0, 0
    for src in _batches(trained.tokenizer, trained.src[:n], 50):
        ref_model, exp_model = Recording(trained.model), Recording(runner)
        ref, got = greedy_decode(ref_model, src), greedy_decode(exp_model, src)
        ref_all += ref
        same += sum(a == b for a, b in zip(ref, got))
        assert len(ref_model.logits) == len(exp_model.logits)
        for a, b in zip(ref_model.logits, exp_model.logits):
            worst = max(worst, float((a - b).abs().max()))
            steps += 1
    return ref_all, same, worst, steps


def _check_translates(outputs: list[list[int]]) -> None:
    """The decodes compared are real translations, not EOS at once or one repeated string."""
    mean_len = sum(map(len, outputs)) / len(outputs)
    distinct = len({tuple(o) for o in outputs})
    assert mean_len > 3 and distinct > 0.7 * len(outputs), (mean_len, distinct)


# ---- (a) ONNX fp32: the equivalence test ----
def test_onnx_greedy_identical_to_pytorch_on_200_multi30k_sentences(trained, exports):
    runner = ExportedModel.load(exports["onnx"], threads=1)
    ref, same, worst, steps = _greedy_compare(trained, runner, 200)
    _check_translates(ref)
    print(f"[export] onnx fp32 greedy: {same}/200 identical, max |logit diff| {worst:.2e} over {steps} steps, "
          f"mean length {sum(map(len, ref)) / len(ref):.1f} tokens, {len({tuple(r) for r in ref})} distinct")
    assert same == 200
    assert worst < 1e-4


def test_onnx_beam_search_identical_to_pytorch(trained, exports):
    runner = ExportedModel.load(exports["onnx"], threads=1)
    same = total = 0
    for src in _batches(trained.tokenizer, trained.src[200:260], 20):
        ref = beam_search(trained.model, src, beam=4, lenpen=0.6)
        got = beam_search(runner, src, beam=4, lenpen=0.6)
        _check_translates(ref)
        same += sum(a == b for a, b in zip(ref, got))
        total += len(ref)
    print(f"[export] onnx fp32 beam 4: {same}/{total} identical")
    assert same == total


def test_runner_translates_with_only_the_export_folder(trained, exports, tmp_path):
    """Text in, text out from a copy of the folder (no checkpoint), as `hat-ray evaluate` would."""
    folder = Path(shutil.copytree(exports["onnx"], tmp_path / "deployed"))
    runner = ExportedModel.load(folder, threads=1)
    lines = trained.src[:30]
    assert runner.translate(lines, beam=1) == translate(trained.model, None, trained.tokenizer, lines, 1)
    assert runner.translate(lines[:10]) == translate(trained.model, None, trained.tokenizer, lines[:10], 4, 0.6)
    assert runner.translate([]) == []
    with pytest.raises(ValueError, match="incrementally"):
        runner.decode(torch.tensor([[EOS]]), runner.encode(torch.tensor([[5, EOS]])))
    # a damaged file is refused by name
    (folder / "decoder_step.onnx").write_bytes((folder / "decoder_step.onnx").read_bytes()[:-10])
    with pytest.raises(DataError, match="decoder_step.onnx differs"):
        ExportedModel.load(folder)


# ---- (b) ONNX int8 ----
def test_onnx_int8_runs_and_keeps_bleu(trained, exports):
    fp32 = ExportedModel.load(exports["onnx"], threads=1)
    int8 = ExportedModel.load(exports["onnx_int8"], threads=1)
    start = time.perf_counter()
    hyp32 = fp32.translate(trained.src, beam=1)
    t32 = time.perf_counter() - start
    start = time.perf_counter()
    hyp8 = int8.translate(trained.src, beam=1)
    t8 = time.perf_counter() - start
    bleu32, sig = sacre_bleu(hyp32, trained.tgt)
    bleu8, _ = sacre_bleu(hyp8, trained.tgt)
    same = sum(a == b for a, b in zip(hyp32, hyp8))
    size = {name: sum(v["bytes"] for k, v in json.loads((exports[name] / "manifest.json").read_text())["files"].items()
                      if k.endswith(".onnx")) for name in ("onnx", "onnx_int8")}
    print(f"[export] multi30k test ({len(hyp32)} sentences, greedy): SacreBLEU fp32 {bleu32:.2f}, int8 {bleu8:.2f} "
          f"({sig}); {same} identical outputs; decode {t32:.2f} s fp32, {t8:.2f} s int8; graphs "
          f"{size['onnx'] / 1e6:.2f} MB fp32, {size['onnx_int8'] / 1e6:.2f} MB int8")
    assert bleu32 > 2  # the model translates
    assert abs(bleu8 - bleu32) < 0.35 * bleu32  # quantization noise, not a broken graph
    assert same > 0.4 * len(hyp32)
    assert size["onnx_int8"] < 0.5 * size["onnx"]


# ---- (c) TorchScript ----
def test_torchscript_identical_to_pytorch(trained, exports):
    runner = ExportedModel.load(exports["torchscript"])
    ref, same, worst, steps = _greedy_compare(trained, runner, 200)
    print(f"[export] torchscript greedy: {same}/200 identical, max |logit diff| {worst:.2e} over {steps} steps")
    assert same == 200 and worst < 1e-4
    src = _batches(trained.tokenizer, trained.src[200:220], 20)[0]
    assert beam_search(runner, src, beam=4, lenpen=0.6) == beam_search(trained.model, src, beam=4, lenpen=0.6)


def test_torchscript_int8_is_refused_because_nothing_would_be_quantized(trained, tmp_path):
    with pytest.raises(ExportError, match="--int8 needs --format onnx"):
        export_model(trained.model, tmp_path / "ts8", "torchscript", int8=True)
    assert not (tmp_path / "ts8").exists()
    # the reason: torch's dynamic quantization finds no nn.Linear in a SubTransformer
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated
        q = quantize_dynamic(copy.deepcopy(trained.model), {torch.nn.Linear}, dtype=torch.qint8)
    assert not any("quantized" in type(m).__module__ for m in q.modules())


def test_export_leaves_a_training_model_in_training_mode(tmp_path):
    sub = extract_subnet(tiny_super(), tiny_space().smallest()).train()
    for fmt in ("onnx", "torchscript"):
        export_model(sub, tmp_path / fmt, fmt)
        assert sub.training and all(m.training for m in sub.modules()), fmt


def test_fairseq_dictionaries_travel_with_the_export(tmp_path):
    """An imported HAT model's tokenizer (fairseq dictionaries over BPE'd text) -> vocab.json."""
    from hat_ray.data.tokenizer import FairseqDictTokenizer

    words = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}@@" if i % 3 else f"w{i}" for i in range(36)]
    tok = FairseqDictTokenizer({"src": words, "tgt": words})
    sub = extract_subnet(tiny_super(), tiny_space().largest()).eval()
    manifest = export_model(sub, tmp_path / "fs", "onnx", tokenizer=tok.to_state())
    assert manifest["tokenizer"] == {"kind": "fairseq_dict", "file": "vocab.json"}
    runner = ExportedModel.load(tmp_path / "fs", threads=1)
    lines = ["w1@@ w2 w3", "w4 w5@@ w6 w7 w8", "w9"]
    assert runner.translate(lines, beam=2) == translate(sub, None, tok, lines, 2, 0.6)


# ---- (d) the CLI ----
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_export_subnet_checkpoint(trained, tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "deploy"
    code, stdout, err = run(capsys, "export", "--checkpoint", trained.ckpt, "--format", "onnx", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["arch_key"] == ARCH.key() and summary["format"] == "onnx" and not summary["int8"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "hat-ray-export" and manifest["format"] == "onnx" and manifest["opset"] == 17
    assert Arch.from_dict(manifest["arch"]) == ARCH
    assert manifest["model_config"] == trained.model.config.to_dict()
    assert manifest["vocab"] == {"src": trained.model.config.src_vocab, "tgt": trained.model.config.tgt_vocab}
    assert manifest["tokenizer"] == {"kind": "sentencepiece", "file": "tokenizer.model"}
    assert (out / "tokenizer.model").read_bytes() == trained.raw["tokenizer"]["model"]
    assert manifest["versions"]["torch"] == torch.__version__ and manifest["versions"]["onnxruntime"] == ort.__version__
    assert manifest["source"]["checkpoint_kind"] == "subnet" and manifest["source"]["update"] == 300
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    for part in ("encoder", "step"):
        graph = manifest["graphs"][part]
        session = ort.InferenceSession(str(out / graph["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == graph["inputs"]
        assert [o.name for o in session.get_outputs()] == graph["outputs"]
        assert session.get_providers() == ["CPUExecutionProvider"]
    # the same folder again: an earlier export is replaced, here by the int8 one
    code, stdout, err = run(capsys, "export", "--checkpoint", trained.ckpt, "--int8", "--out", out)
    assert code == 0, err
    assert "(onnx, int8)" in stdout and json.loads((out / "manifest.json").read_text())["int8"] is True
    assert sorted(p.name for p in out.parent.iterdir()) == ["deploy"]  # no temporary folder left behind


def test_cli_export_supernet_with_arch_then_translate(tmp_path, capsys):
    ckpt = tmp_path / "super.pt"
    model, tok = write_supernet_checkpoint(ckpt)
    arch = tiny_space().smallest()
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch.to_hat()))  # HAT's keys, as a search writes them
    out = tmp_path / "ts"
    code, stdout, err = run(capsys, "export", "--checkpoint", ckpt, "--arch", tmp_path / "arch.yaml",
                            "--format", "torchscript", "--out", out)
    assert code == 0, err
    assert stdout.startswith(f"exported {arch.key()} (torchscript, fp32)")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["checkpoint_kind"] == "supernet" and manifest["opset"] is None
    lines = ["a b c d", "e f g", "", "h i j k l m"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    code, stdout, err = run(capsys, "translate", "--model", out, "--input", tmp_path / "in.txt", "--beam", "1")
    assert code == 0, err
    sub = extract_subnet(model, arch).eval()
    assert stdout.splitlines() == translate(sub, None, tok, lines, 1)
    code, stdout, err = run(capsys, "translate", "--model", out, "--input", tmp_path / "in.txt",
                            "--output", tmp_path / "hyp.txt")
    assert code == 0 and stdout == "" and (tmp_path / "hyp.txt").read_text() == "".join(
        h + "\n" for h in translate(sub, None, tok, lines, 4, 0.6))


def test_cli_export_subnet_with_its_own_arch_and_a_wrong_one(tmp_path, capsys):
    from hat_ray.checkpoint import make_checkpoint, save_checkpoint

    space = SearchSpace.from_dict(TINY)
    sub = extract_subnet(write_supernet_checkpoint(tmp_path / "super.pt")[0], space.smallest())
    save_checkpoint(tmp_path / "sub.pt", make_checkpoint(sub, space))  # no tokenizer: ids only
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(space.smallest().to_dict()))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(space.largest().to_dict()))
    code, _, err = run(capsys, "export", "--checkpoint", tmp_path / "sub.pt", "--arch", tmp_path / "own.yaml",
                       "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["tokenizer"] is None
    with pytest.raises(DataError, match="exported without a tokenizer"):
        _ = ExportedModel.load(tmp_path / "o").tokenizer
    code, _, err = run(capsys, "export", "--checkpoint", tmp_path / "sub.pt", "--arch", tmp_path / "other.yaml",
                       "--out", tmp_path / "o2")
    assert code == 2 and "is not the Arch of the SubTransformer checkpoint" in err and err.count("\n") == 1
    assert not (tmp_path / "o2").exists()
