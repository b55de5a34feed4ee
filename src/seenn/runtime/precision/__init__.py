"""Inference precision (``--precision fp32|bf16|int8``): the convolutions that read spikes in bf16 or int8,
membranes and logits in fp32. Entry point: :func:`apply_precision` (``seenn.nn.fold.inference_model`` calls it).

A spiking layer's input is exactly representable in 8 bits: spikes are 0 or 1, a k x k average pool of spikes is
a count over k^2, a constant gain (a converted network's skip connection) multiplies the grid. So for those layers
only the weights lose precision:

- ``int8``: weights quantized per output channel, symmetric (``w = s_c * q``, ``q`` in [-127, 127]); the input
  as the unsigned counts it is made of (``x = step * n``, ``n`` in [0, 128]); the product accumulated in int32 by
  oneDNN's u8 x s8 convolution (``torch.ops.onednn.qconv2d_pointwise``), and the scales ``step * s_c`` (and the
  bias) applied as the current leaves in fp32, where the membrane is. Counts stay at most 128 so that AVX2's
  16-bit sums of u8 x s8 pairs (``vpmaddubsw``) cannot saturate. Where that operator is missing (another device,
  another CPU) the same integers are convolved in floating point, which is exact for these sizes (every partial
  sum is an integer below 2^24) and is also the reference the tests hold the oneDNN path to.
- ``bf16``: the same layers with bf16 weights and inputs (the inputs exactly), accumulated in fp32 by the
  kernel, the current rounded to bf16 and added to the fp32 membrane. Only fast where the CPU has bf16
  arithmetic (AVX512-BF16, AMX) or on a GPU; measured in docs/benchmarks.md.

What reads spikes is found from the network's structure (:func:`spike_grids`, a ``torch.fx`` trace of the body
with neurons, pools and gains as leaves); the stem (the analog image) and every layer whose input is not on a
known grid stay fp32, and so does the readout (a linear layer: few operations, and the logits the exit rule
reads).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ...errors import ConfigError
from .grids import MAX_COUNT, spike_grids
from .layers import Bf16Conv2d, CountingNeuron, Int8Conv2d, fuse_counting, quantize_weight

__all__ = ["PRECISIONS", "MAX_COUNT", "apply_precision", "check_precision", "native_bf16", "spike_grids",
           "Int8Conv2d", "Bf16Conv2d", "CountingNeuron", "quantize_weight"]

PRECISIONS = ("fp32", "bf16", "int8")


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` does bf16 arithmetic in hardware: a GPU that supports bf16, or a CPU with AVX512-BF16
    or AMX. Elsewhere oneDNN emulates bf16 and it is several times slower than fp32 (docs/benchmarks.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in ("_is_avx512_bf16_supported",
                                                                       "_is_amx_tile_supported"))


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", param="precision")
    return precision


def apply_precision(model: nn.Module, precision: str) -> list[str]:
    """Rewrite ``model`` (an inference copy: BN folded) in place so the convolutions of its body that read
    spikes run in ``precision``; returns their names (empty for fp32, or for a network with none)."""
    check_precision(precision)
    if precision == "fp32":
        return []
    body = getattr(model, "body", None)
    if body is None or not getattr(model, "foldable", True):
        raise ConfigError(f"--precision {precision} applies to seenn's own and converted networks; this one "
                          f"({type(model).__name__}) runs in fp32")
    if any(isinstance(m, nn.BatchNorm2d) for m in body.modules()):
        raise ConfigError("precision needs an inference copy with batch norm folded (seenn.nn.fold.inference_model)",
                          param="precision")
    grids = spike_grids(body)
    done = []
    for name, (step, count) in grids.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = body.get_submodule(parent_name) if parent_name else body
        conv = getattr(parent, leaf)
        new = Int8Conv2d(conv, step, count) if precision == "int8" else Bf16Conv2d(conv)
        setattr(parent, leaf, new)
        done.append(name)
    if precision == "int8" and os.environ.get("SEENN_NATIVE", "1") != "0":
        fuse_counting(body)
    return done

