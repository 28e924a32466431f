"""``runtime: onnxruntime`` and ``onnxruntime-int8``: ONNX Runtime sessions (CPUExecutionProvider)
of the graphs ``hat-ray export`` writes (hat_ray.export.onnx): the encoder graph and the
decoder-step graph, whose self-attention cache is an explicit input and output.

Per Arch the random-weight static model is exported into a temporary folder (fp32, or with
``onnxruntime-int8`` ONNX Runtime's dynamic int8 quantization of the MatMul weights) and two
sessions are created: that setup (seconds) is recorded as ``setup_s``, never timed. Timed:

* encoder: one run of the encoder session on (batch, src_len) tokens; its outputs include every
  decoder layer's cross-attention keys and values (the exported encoder computes them once per
  sentence; the torch backends compute them at the decoder's first step instead);
* decoder: ``tgt_len`` runs of the step session on ``batch * beam`` rows, each feeding the
  previous step's self-attention cache outputs back in (empty at the first step), the
  full-vocabulary logits included.

Threads: ``intra_op_num_threads`` and ``inter_op_num_threads`` = the profile's ``threads`` (0: ONNX
Runtime's default, one per physical core).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hat_ray.latency.backends import Backend, Work, register
from hat_ray.latency.backends.torch_eager import static_model, tokens

if TYPE_CHECKING:
    from hat_ray.arch import Arch
    from hat_ray.space import SearchSpace


@register
class OnnxRuntime(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime (CPUExecutionProvider) on the exported fp32 encoder and decoder-step graphs"
    requires = ("onnxruntime", "onnx")
    install = "pip install hat-ray[runtimes]"
    int8 = False

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def threads_used(self) -> int:
        return self.profile.threads or _physical_cores()

    @contextmanager
    def running(self) -> Iterator[None]:
        from hat_ray.latency.backends.torch_eager import torch_threads

        with torch_threads(self.profile.threads):  # the (untimed) export stays within the profile's threads too
            yield

    def workloads(self, space: SearchSpace, arch: Arch, vocab: int, seed: int) -> Work:
        import numpy as np
        import onnxruntime as ort

        from hat_ray.export.graphs import empty_cache, names
        from hat_ray.export.onnx import export_onnx
        from hat_ray.tokens import PAD

        t0 = time.perf_counter()
        proto = self.profile.protocol
        model = static_model(space, arch, vocab, seed)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.profile.threads
        options.inter_op_num_threads = self.profile.threads
        options.log_severity_level = 3  # errors only
        with tempfile.TemporaryDirectory(prefix="hat-ray-ort-") as tmp:
            paths = export_onnx(model, tmp, int8=self.int8)
            # a session holds the model in memory: the files may go once it is created
            encoder, step = (ort.InferenceSession(str(paths[part]), options, providers=["CPUExecutionProvider"])
                             for part in ("encoder", "step"))
        io = names(arch)
        src, prefix = (t.numpy() for t in tokens(proto, space, vocab, seed))
        rows, tgt_len = prefix.shape
        feed_encoder = {"src": src}
        outputs = encoder.run(None, feed_encoder)
        order = np.arange(proto.batch).repeat(proto.beam)
        fixed = {name: np.ascontiguousarray(value[order]) for name, value in zip(io["encoder_out"], outputs, strict=True)}
        past_names = [name for name in io["step_in"] if name.startswith("self_")]
        empty = [t.numpy() for t in empty_cache(model, rows)]
        steps = [{"token": np.ascontiguousarray(prefix[:, t - 1:t]), "position": np.full(rows, PAD + t, dtype=np.int64)}
                 for t in range(1, tgt_len + 1)]
        del model

        def encode() -> Any:
            return encoder.run(None, feed_encoder)

        def decode() -> Any:
            past = empty
            for inputs in steps:
                out = step.run(None, {**inputs, **fixed, **dict(zip(past_names, past, strict=True))})
                past = out[1:]
            return out[0]  # (rows, V) logits of the last step

        return Work(encode, decode, time.perf_counter() - t0)


@register
class OnnxRuntimeInt8(OnnxRuntime):
    name = "onnxruntime-int8"
    description = "ONNX Runtime (CPUExecutionProvider) on the exported graphs with int8 MatMul weights"
    int8 = True


def _physical_cores() -> int:
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # noqa: BLE001 - best effort
        return os.cpu_count() or 1
