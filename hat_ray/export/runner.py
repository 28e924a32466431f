"""Run an export folder (hat_ray.export.folder): :class:`ExportedModel` runs the encoder and
decoder-step graphs with ONNX Runtime (CPUExecutionProvider) or TorchScript and exposes the
interface hat_ray.model.decode uses on a torch Transformer, so ``greedy_decode`` and
``beam_search`` (and hat_ray.train.evaluate's ``translate``) decode with it unchanged:

* ``encode(src)`` -> EncoderOut whose ``layers`` are the cross-attention keys and values
  ``[cross_k_0, cross_v_0, cross_k_1, ...]`` and whose ``padding_mask`` is ``src_pad``;
* ``decode(prefix, enc, arch, state)`` runs one step for the prefix's last token (position:
  padding_idx + prefix length), reading and extending ``state["layers"][i]["self"]`` (the
  self-attention cache) and ``state["layers"][i]["cross"]`` (the cross K/V, taken from ``enc``
  at the first step) as torch tensors, so ``reorder_encoder_out`` / ``reorder_state`` reorder them
  for beam search; it returns logits (rows, 1, V). Teacher forcing (``state=None``) is not
  available: the step graph is incremental.

``ExportedModel.load(folder).translate(lines)`` translates text with the folder's own tokenizer.
TorchScript files are code as well as weights: load exports you trust (the sha256 check on
load guards against damage, not against a forged manifest).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hat_ray.arch import Arch
from hat_ray.errors import DataError, ExportError
from hat_ray.export.folder import KIND, MANIFEST, VERSION
from hat_ray.io import file_sha256
from hat_ray.model.transformer import DecoderState, EncoderOut, ModelConfig


def read_manifest(folder: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of the export in ``folder``; DataError naming the problem when the folder is
    not an export, is from a newer hat-ray, or (``verify``) a file is missing or changed."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise DataError(f"--model {folder} is not a folder; pass a folder written by `hat-ray export`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder} has no {MANIFEST}: not a hat-ray export; pass a folder written by "
                        "`hat-ray export`") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is damaged ({exc}); export the model again") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise DataError(f"{path} is not a hat-ray export manifest; pass a folder written by `hat-ray export`")
    if manifest.get("version", 0) > VERSION:
        raise DataError(f"{folder} was exported by a newer hat-ray (version {manifest['version']}); upgrade hat-ray")
    if verify:
        for name, info in manifest.get("files", {}).items():
            file = folder / name
            if not file.is_file():
                raise DataError(f"{file} is missing from the export; export the model again")
            if file_sha256(file) != info.get("sha256"):
                raise DataError(f"{file} differs from the file exported (sha256 mismatch); export the model again")
    return manifest


class _OrtGraphs:
    """Both graphs as ONNX Runtime sessions on the CPU execution provider."""

    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError(f"{folder} is an ONNX export: pip install 'hat-ray[runtimes]' (onnxruntime) "
                              "to run it") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        graphs = manifest["graphs"]
        self.sessions = {part: ort.InferenceSession(str(folder / graphs[part]["file"]), opts,
                                                    providers=["CPUExecutionProvider"])
                         for part in ("encoder", "step")}
        self.inputs = {part: graphs[part]["inputs"] for part in ("encoder", "step")}

    def run(self, part: str, args: Sequence[Tensor]) -> list[Tensor]:
        feed = {name: np.ascontiguousarray(a.numpy()) for name, a in zip(self.inputs[part], args)}
        return [torch.from_numpy(x) for x in self.sessions[part].run(None, feed)]


class _TorchScriptGraphs:
    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int | None) -> None:
        from hat_ray.export.torchscript import load_torchscript

        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
        self.modules = {part: load_torchscript(folder / manifest["graphs"][part]["file"]) for part in ("encoder", "step")}

    def run(self, part: str, args: Sequence[Tensor]) -> list[Tensor]:
        with torch.no_grad():
            return list(self.modules[part](*args))


class ExportedModel:
    """A loaded export folder, decodable with hat_ray.model.decode (see the module docstring)."""

    training = False

    def __init__(self, folder: Path, manifest: dict[str, Any], graphs: _OrtGraphs | _TorchScriptGraphs) -> None:
        self.folder = folder
        self.manifest = manifest
        self.config = ModelConfig.from_dict(manifest["model_config"])
        self.bound_arch = Arch.from_dict(manifest["arch"], source=str(folder / MANIFEST))
        self.graphs = graphs
        self._tokenizer = None
        a, q = self.bound_arch, self.config.qkv_dim
        self._heads = [(h, q // h) for h in a.decoder_self_attention_heads]

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None, verify: bool = True) -> ExportedModel:
        """Open ``folder``. ``threads``: ONNX Runtime's intra-op threads (default: its own choice,
        one per physical core); for TorchScript it sets torch's (process-wide) thread count.
        ``verify``: check every file's sha256 against the manifest first."""
        folder = Path(folder)
        manifest = read_manifest(folder, verify)
        fmt = manifest.get("format")
        if fmt == "onnx":
            graphs: _OrtGraphs | _TorchScriptGraphs = _OrtGraphs(folder, manifest, threads)
        elif fmt == "torchscript":
            graphs = _TorchScriptGraphs(folder, manifest, threads)
        else:
            raise DataError(f"{folder / MANIFEST}: unknown format {fmt!r}; export the model again")
        return cls(folder, manifest, graphs)

    # ---- what hat_ray.model.decode and hat_ray.train.evaluate.translate use ----
    def eval(self) -> ExportedModel:
        return self

    def train(self, mode: bool = True) -> ExportedModel:
        if mode:
            raise ValueError("an exported model is inference-only")
        return self

    def resolve(self, arch: Arch | None) -> Arch:
        if arch is not None and arch != self.bound_arch:
            raise ValueError("this exported SubTransformer is bound to another Arch")
        return self.bound_arch

    def encode(self, src_tokens: Tensor, arch: Arch | None = None) -> EncoderOut:
        """src (B, S) left-padded -> EncoderOut([cross_k_0, cross_v_0, ...], src_pad)."""
        self.resolve(arch)
        src_pad, *cross = self.graphs.run("encoder", [src_tokens.long()])
        return EncoderOut(cross, src_pad)

    def decode(self, prev_tokens: Tensor, enc: EncoderOut, arch: Arch | None = None,
               state: DecoderState | None = None) -> Tensor:
        """One incremental step (see the module docstring) -> logits (B, 1, V)."""
        self.resolve(arch)
        if state is None:
            raise ValueError("an exported decoder runs incrementally: pass a state dict ({} at the first step)")
        rows, prefix = prev_tokens.shape
        if "layers" not in state:
            state["layers"] = [{"self": {}, "cross": {}} for _ in self._heads]
        cross: list[Tensor] = []
        past: list[Tensor] = []
        for i, (layer, (heads, head_dim)) in enumerate(zip(state["layers"], self._heads)):
            if "k" not in layer["cross"]:
                layer["cross"]["k"], layer["cross"]["v"] = enc.layers[2 * i], enc.layers[2 * i + 1]
            cross += [layer["cross"]["k"], layer["cross"]["v"]]
            empty = torch.zeros(rows, heads, 0, head_dim)
            past += [layer["self"].get("k", empty), layer["self"].get("v", empty)]
        token = prev_tokens[:, -1:].long()
        position = torch.full((rows,), self.config.padding_idx + prefix, dtype=torch.long)
        logits, *new = self.graphs.run("step", [token, position, enc.padding_mask, *cross, *past])
        for i, layer in enumerate(state["layers"]):
            layer["self"]["k"], layer["self"]["v"] = new[2 * i], new[2 * i + 1]
        return logits[:, None, :]

    # ---- text in, text out ----
    @property
    def tokenizer(self):
        """The tokenizer exported with the model (DataError when the export has none)."""
        if self._tokenizer is None:
            from hat_ray.data.tokenizer import FairseqDictTokenizer, SentencePieceTokenizer

            info = self.manifest.get("tokenizer")
            if not info:
                raise DataError(f"{self.folder} was exported without a tokenizer: feed token ids to "
                                "hat_ray.model.decode's greedy_decode / beam_search instead")
            path = self.folder / info["file"]
            if info["kind"] == "sentencepiece":
                self._tokenizer = SentencePieceTokenizer(path.read_bytes())
            else:
                self._tokenizer = FairseqDictTokenizer(json.loads(path.read_text(encoding="utf-8")))
        return self._tokenizer

    def translate(self, sentences: Sequence[str], beam: int = 4, lenpen: float = 0.6, max_tokens: int = 4096,
                  max_len_a: float = 1.2, max_len_b: int = 10) -> list[str]:
        """Detokenised translations of ``sentences`` (raw text for a sentencepiece export,
        BPE-segmented text for fairseq dictionaries), in order; ``beam`` 1 is greedy. Defaults
        as ``hat-ray evaluate``'s (beam 4, length penalty 0.6)."""
        from hat_ray.train.evaluate import translate

        if not sentences:
            return []
        return translate(self, None, self.tokenizer, list(sentences), beam, lenpen, max_tokens, max_len_a, max_len_b)
