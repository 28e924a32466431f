"""``runtime: torch`` (the default): the static model in PyTorch eager mode, as HAT measures it;
CPU or CUDA (CUDA events after synchronisation), fp32 / fp16 / bf16.

Also the pieces every backend shares so that they all time the same thing: :func:`static_model`
(the random-weight static model of an Arch), :func:`lengths` and :func:`tokens` (the protocol's
random source sentences and decoder prefixes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hat_ray.errors import DeviceError
from hat_ray.latency.backends import Backend, Timer, Work, register

if TYPE_CHECKING:
    import torch

    from hat_ray.arch import Arch
    from hat_ray.latency.profile import DeviceProfile, Protocol
    from hat_ray.model.transformer import Transformer
    from hat_ray.space import SearchSpace


@register
class TorchEager(Backend):
    name = "torch"
    description = "PyTorch eager mode (HAT's protocol): CPU or CUDA, fp32 / fp16 / bf16"
    devices = ("cpu", "cuda")
    dtypes = ("float32", "float16", "bfloat16")

    def check(self) -> None:
        super().check()
        import torch

        if self.profile.device == "cuda" and not torch.cuda.is_available():
            raise DeviceError(f"device profile {self.profile.name} needs CUDA but torch.cuda.is_available() is "
                              "False here")

    def version(self) -> str:
        import torch

        return str(torch.__version__)

    @contextmanager
    def running(self) -> Iterator[None]:
        import torch

        with torch_threads(self.profile.threads), torch.inference_mode():
            yield

    def threads_used(self) -> int:
        import torch

        return self.profile.threads or torch.get_num_threads()

    def timer(self) -> Timer:
        return cuda_timer if self.profile.device == "cuda" else super().timer()

    def workloads(self, space: SearchSpace, arch: Arch, vocab: int, seed: int) -> Work:
        import torch

        t0 = time.perf_counter()
        device = torch.device(self.profile.device)
        dtype = getattr(torch, self.profile.dtype)  # torch.float32 / float16 / bfloat16
        model = static_model(space, arch, vocab, seed).to(device=device, dtype=dtype)
        encode, decode = eager_workloads(model, self.profile, space, vocab, seed)
        return Work(encode, decode, time.perf_counter() - t0)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Fix torch's intra-op thread count for the measurement (0 = leave PyTorch's default)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def static_model(space: SearchSpace, arch: Arch, vocab: int, seed: int) -> Transformer:
    """Static random-weight fp32 CPU model of exactly ``arch``, in eval mode (global RNG state
    left untouched): latency does not depend on weight values."""
    import torch

    from hat_ray.model.transformer import ModelConfig, Transformer

    base = ModelConfig.for_space(space.latency_space(), vocab, vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(ModelConfig.for_arch(base, arch), arch=arch)
    return model.eval()


def lengths(protocol: Protocol, space: SearchSpace) -> tuple[int, int]:
    """(source length, decoder steps) of the protocol for ``space``."""
    src_len = protocol.src_len or space.super.seq_len
    return src_len, protocol.tgt_len or src_len


def tokens(protocol: Protocol, space: SearchSpace, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random source sentences (batch, src_len), no padding, and decoder prefixes
    (batch * beam, tgt_len): the same for every backend."""
    import torch

    src_len, tgt_len = lengths(protocol, space)
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (protocol.batch, src_len), generator=gen)
    prefix = torch.randint(4, vocab, (protocol.batch * protocol.beam, tgt_len), generator=gen)
    return src, prefix


def eager_workloads(model: Transformer, profile: DeviceProfile, space: SearchSpace, vocab: int,
                    seed: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The encoder forward and the decoder's ``tgt_len`` incremental steps on beam rows of an eager
    model (on the profile's device). The decoder computes the cross-attention keys and values at
    its first step, as incremental decoding in torch does."""
    import torch

    from hat_ray.model.transformer import reorder_encoder_out

    proto, device = profile.protocol, next(model.parameters()).device
    src, prefix = (t.to(device) for t in tokens(proto, space, vocab, seed))  # (B, S), (B*beam, T)
    tgt_len = prefix.shape[1]
    order = torch.arange(proto.batch, device=device).repeat_interleave(proto.beam)
    enc = reorder_encoder_out(model.encode(src), order)  # (B*beam, S, E) per layer

    def encode() -> Any:
        return model.encode(src)

    def decode() -> Any:
        state: dict[str, Any] = {}
        for t in range(1, tgt_len + 1):
            logits = model.decode(prefix[:, :t], enc, state=state)  # (B*beam, 1, V)
        return logits

    return encode, decode


def cuda_timer(fn: Callable[[], Any]) -> tuple[float, float]:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)), float("nan")
