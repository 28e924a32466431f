"""TorchScript export of a static SubTransformer (hat_ray.export.graphs), fp32 only.

``torch.jit.trace`` still works in torch 2.13 (it warns that it is deprecated in favour of
``torch.export``; those warnings are silenced here). Each graph is traced from a copy of the model
that keeps only the tensors that graph reads: tied embeddings are untied in the copies (tracing
refuses a parameter reachable under two names) and each file stays about the size of its part.

int8 is refused: ``torch.ao.quantization.quantize_dynamic`` swaps ``nn.Linear`` modules for
quantized ones, and this model has none: every projection is ``F.linear`` on (first-k slices of)
parameters held by ElasticLinear / attention modules (hat_ray.model.layers), so dynamic
quantization leaves a static SubTransformer unchanged (0 modules quantized). Use ``--format onnx
--int8`` (ONNX Runtime quantizes the MatMul weights of the exported graph).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from hat_ray.errors import ExportError
from hat_ray.export.graphs import DecoderStepGraph, EncoderGraph, example_inputs
from hat_ray.model.transformer import Transformer

FILES = {"encoder": "encoder.pt", "step": "decoder_step.pt"}
INT8_REFUSED = ("--int8 needs --format onnx: torch's dynamic quantization replaces nn.Linear modules and this "
                "model computes every projection with functional linear on its parameters, so a TorchScript "
                "int8 export would be fp32 in disguise; use --format onnx --int8")


@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation notices and the tracer's warnings about Python values
    (the shapes they mention are traced as tensor sizes: the graphs take any batch and length)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _part_of(model: Transformer, part: str) -> Transformer:
    """A copy of ``model`` holding only what ``part``'s graph reads (others: empty tensors)."""
    m = copy.deepcopy(model)

    def empty() -> nn.Parameter:
        return nn.Parameter(torch.empty(0), requires_grad=False)

    if part == "encoder":  # token embedding, encoder layers, the decoder layers' cross K/V projections
        m.decoder_embed = empty()
        if m.output_proj is not None:
            m.output_proj = empty()
        for layer in m.decoder_layers:
            for name in ("self_attn", "self_attn_layer_norm", "encoder_attn_layer_norm", "fc1", "fc2",
                         "final_layer_norm"):
                setattr(layer, name, nn.Identity())
            layer.encoder_attn.q_proj_weight = empty()
            layer.encoder_attn.q_proj_bias = empty()
            layer.encoder_attn.out_proj = nn.Identity()
    else:  # the decoder: embedding (tied or not), decoder layers without the K/V projections
        m.encoder_embed = empty()  # rebinding one name unties a shared embedding
        m.encoder_layers = nn.ModuleList()
        for layer in m.decoder_layers:
            layer.encoder_attn.kv_proj_weight = empty()
            layer.encoder_attn.kv_proj_bias = empty()
    return m.eval()


def export_torchscript(model: Transformer, out: str | Path, int8: bool = False) -> dict[str, Path]:
    """Write ``encoder.pt`` and ``decoder_step.pt`` (traced TorchScript) into ``out``. Returns
    {graph: path}. ``int8`` raises :class:`ExportError` (see the module docstring)."""
    if int8:
        raise ExportError(INT8_REFUSED)
    if model.bound_arch is None:
        raise ValueError("export needs a static SubTransformer (extract_subnet), not a SuperTransformer")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(model)
    paths = {}
    for part, graph in (("encoder", EncoderGraph), ("step", DecoderStepGraph)):
        wrapper = graph(_part_of(model, part)).eval()
        with torch.no_grad(), quiet_jit():
            traced = torch.jit.trace(wrapper, inputs[part], check_trace=False)
            paths[part] = out / FILES[part]
            traced.save(str(paths[part]))
    return paths


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    with quiet_jit():
        return torch.jit.load(str(path), map_location="cpu").eval()
