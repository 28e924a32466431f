"""ONNX export of a static SubTransformer (hat_ray.export.graphs), fp32 or int8 (ONNX Runtime's
dynamic quantization of the MatMul weights)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from hat_ray.export.graphs import DecoderStepGraph, EncoderGraph, dynamic_axes, example_inputs, names
from hat_ray.model.transformer import Transformer

OPSET = 17
FILES = {"encoder": "encoder.onnx", "step": "decoder_step.onnx"}


def export_onnx(model: Transformer, out: str | Path, int8: bool = False) -> dict[str, Path]:
    """Write ``encoder.onnx`` and ``decoder_step.onnx`` into ``out``; with ``int8`` the MatMul
    weights are quantized to int8 (activations quantized per call). Returns {graph: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arch = model.bound_arch
    if arch is None:
        raise ValueError("export needs a static SubTransformer (extract_subnet), not a SuperTransformer")
    io, axes, inputs = names(arch), dynamic_axes(arch), example_inputs(model)
    training = model.training
    model.eval()  # the exporter restores each wrapper's mode (and its submodules') afterwards
    paths = {}
    try:
        for part, graph in (("encoder", EncoderGraph(model)), ("step", DecoderStepGraph(model))):
            path = out / FILES[part]
            prefix = "encoder" if part == "encoder" else "step"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python values: shapes are dynamic axes
                torch.onnx.export(graph.eval(), inputs[part], str(path), dynamo=False, opset_version=OPSET,
                                  input_names=io[f"{prefix}_in"], output_names=io[f"{prefix}_out"],
                                  dynamic_axes={**axes[part]})
            paths[part] = path
    finally:
        model.train(training)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # ORT's quantizer logs on the root logger: an INFO line per tensor it leaves in float, and a
        # warning that quant_pre_process may help (measured on a Multi30k model: same BLEU and
        # outputs; its symbolic shape inference fails on these graphs, and without that it only
        # fuses ops). Only its errors get through.
        hint = _QuantizerChatter()
        logging.getLogger().addFilter(hint)
        try:
            for path in paths.values():
                fp32 = path.with_suffix(".fp32.onnx")
                path.replace(fp32)
                quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
                fp32.unlink()
        finally:
            logging.getLogger().removeFilter(hint)
    return paths


class _QuantizerChatter(logging.Filter):
    """Drops onnxruntime.quantization's records below ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or f"onnxruntime{os.sep}quantization" not in record.pathname
