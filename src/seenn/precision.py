"""Inference precision: the convolutions that read spikes in bf16 or int8, membranes and logits in fp32.

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

import math
import operator
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .neuron import SpikingNeuron, initial_membrane

PRECISIONS = ("fp32", "bf16", "int8")
MAX_COUNT = 128  # the largest input count an int8 layer takes (see the module docstring)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


# ------------------------------------------------------------------------------------------- structure


def _grid_of_pool(m: nn.Module, grid):
    """The grid after an average pool: a window of k values on ``(step, count)`` gives ``(step / k, count * k)``
    sums; windows that may be cut short (ceil mode, padding left out of the divisor) are not on one grid."""
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    if getattr(m, "ceil_mode", False) or getattr(m, "divisor_override", None) is not None:
        return None
    if any(pair(m.padding)) and not m.count_include_pad:
        return None
    k = pair(m.kernel_size)
    n = k[0] * k[1]
    from .models.sequential import SumPool2d

    if isinstance(m, SumPool2d):  # NIR's sum pooling: the sum itself, on the same step
        return (grid[0], grid[1] * n)
    return (grid[0] / n, grid[1] * n)


def spike_grids(body: nn.Module) -> dict[str, tuple[float, int]]:
    """``{qualified name: (step, count)}`` of every convolution in ``body`` whose input is known to be ``step``
    times an integer in [0, count]: read from a spiking neuron through pools, flattening, gains and sums only.
    A layer called from several places is listed only if every call has the same grid. Empty if the body does not
    trace (a network built some other way simply stays in fp32)."""
    from torch import fx

    from .models.graph import Add
    from .models.sequential import Scale

    def is_neuron(m):
        return isinstance(m, SpikingNeuron) or type(m).__name__ == "CubaLIF"  # CubaLIF spikes are 0 / 1 too

    leaves = (SpikingNeuron, nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d, Scale, Add, nn.Flatten,
              nn.Identity, nn.Dropout, nn.BatchNorm2d, nn.BatchNorm1d)

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, leaves) or is_neuron(m) or type(m).__module__.startswith("seenn.models.stateful") \
                or super().is_leaf_module(m, name)

    try:
        graph = _Tracer().trace(body)
    except Exception:  # noqa: BLE001 - data-dependent Python in a body: no structure to read, stay fp32
        return {}
    mods = dict(body.named_modules())
    grid: dict = {}
    found: dict[str, object] = {}
    passthrough_fns = {torch.flatten, torch.reshape, F.dropout}
    for node in graph.nodes:
        ins = [a for a in node.args if isinstance(a, fx.Node)]
        g0 = grid.get(ins[0]) if ins else None
        out = None
        if node.op == "call_module":
            m = mods[node.target]
            if is_neuron(m):
                out = (1.0, 1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if isinstance(m, nn.Conv2d):
                    prev = found.get(node.target, "unset")
                    found[node.target] = g0 if prev == "unset" or prev == g0 else None
            elif isinstance(m, nn.AvgPool2d) and g0 is not None:
                out = _grid_of_pool(m, g0)
            elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
                out = g0
            elif isinstance(m, Scale) and g0 is not None and m.factor > 0:
                out = (g0[0] * m.factor, g0[1])
            elif isinstance(m, Add) and ins and all(grid.get(a) is not None for a in ins):
                steps = {grid[a][0] for a in ins}
                if len(steps) == 1 and len(ins) == len(node.args):
                    out = (steps.pop(), sum(grid[a][1] for a in ins))
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(ins) == 2 \
                and len(node.args) == 2 and not node.kwargs and all(grid.get(a) is not None for a in ins) \
                and grid[ins[0]][0] == grid[ins[1]][0]:
            out = (grid[ins[0]][0], grid[ins[0]][1] + grid[ins[1]][1])
        elif node.op == "call_function" and node.target in passthrough_fns:
            out = g0
        elif node.op == "call_method" and node.target in ("view", "reshape", "flatten", "contiguous"):
            out = g0
        if out is not None and out[1] <= MAX_COUNT and out[0] > 0 and math.isfinite(out[0]):
            grid[node] = out
    return {name: g for name, g in found.items() if g is not None}


# ----------------------------------------------------------------------------------------------- layers


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: ``(q int8, scale fp32 [C_out])`` with ``w ~ scale * q``; a channel of
    zeros gets scale 1 (its q are 0)."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    amax = flat.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8).reshape(w.shape)
    return q, scale


def _onednn_int8() -> bool:
    return hasattr(torch.ops, "onednn") and hasattr(torch.ops.onednn, "qconv2d_pointwise") \
        and torch.backends.mkldnn.is_available()


class Int8Conv2d(nn.Module):
    """A convolution on inputs ``step * n`` (``n`` integer counts in [0, count]) with int8 weights; fp32 out."""

    def __init__(self, conv: nn.Conv2d, step: float, count: int):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError("int8 convolutions take zero padding given as numbers")
        q, scale = quantize_weight(conv.weight)
        self.register_buffer("qweight", q)
        self.register_buffer("wscale", scale)
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.to(conv.weight.device))
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups, self.out_channels = conv.groups, conv.out_channels
        self.step, self.count = float(step), int(count)
        inv = 1.0 / self.step
        self._exact_inverse = float(round(inv)) == inv  # counts are x * inv exactly (1, 4, 16, ...)
        self._inv = inv
        self.__dict__["_packed"] = {}
        self.__dict__["_zp"] = None

    def __getstate__(self):  # copies repack on first use
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """The input as uint8 counts (exact for inputs on the layer's grid); counts already (a
        :class:`CountingNeuron` before it) pass as they are."""
        if x.dtype == torch.uint8:
            return x
        if self.step == 1.0:
            return x.to(torch.uint8)
        y = torch.mul(x, self._inv)
        if not self._exact_inverse:
            y = y.round_()
        return y.to(torch.uint8)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same integers convolved in fp64, scaled: what the int8 kernel must give (within fp32 rounding)."""
        n = self.counts(x).double()
        acc = F.conv2d(n, self.qweight.double(), None, self.stride, self.padding, self.dilation, self.groups)
        out = acc * (self.step * self.wscale.double()).view(1, -1, 1, 1) + self.bias.double().view(1, -1, 1, 1)
        return out.float()

    def _prepacked(self, x: torch.Tensor):
        key = x.shape[1:]
        packed = self.__dict__["_packed"].get(key)
        if packed is None:
            self.__dict__["_packed"].clear()
            packed = self.__dict__["_packed"][key] = torch.ops.onednn.qconv_prepack(
                self.qweight, self.wscale, self.step, 0, self.stride, self.padding, self.dilation, self.groups, None)
            self.__dict__["_zp"] = torch.zeros(self.out_channels, dtype=torch.long)
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.counts(x)
        if x.device.type == "cpu" and x.dim() == 4 and self.__dict__.get("_packed") is not None and _onednn_int8():
            try:
                return torch.ops.onednn.qconv2d_pointwise(
                    n, self.step, 0, self._prepacked(x), self.wscale, self.__dict__["_zp"], self.bias, self.stride,
                    self.padding, self.dilation, self.groups, 1.0, 0, torch.float32, "none", [], "")
            except RuntimeError as e:
                self.__dict__["_packed"] = None  # stay with the exact fallback from now on
                warnings.warn(f"oneDNN's int8 convolution failed ({str(e).splitlines()[0]}); using the exact "
                              "floating-point path")
        # exact fallback: integer values convolved in fp32 (every partial sum an integer below 2^24)
        acc = F.conv2d(n.float(), self.qweight.float(), None, self.stride, self.padding, self.dilation, self.groups)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), acc, (self.step * self.wscale).view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return (f"{self.qweight.shape[1] * self.groups}, {self.out_channels}, kernel={tuple(self.qweight.shape[2:])}, "
                f"input = {self.step:g} x [0, {self.count}], int8 weights per channel")


class CountingNeuron(SpikingNeuron):
    """A spiking neuron of an int8 inference copy that hands the int8 convolution after it its spikes as uint8
    counts, summed over the k x k pool between them (k = 1: no pool): charge, fire, reset and pooling in one pass of
    seenn's native kernel (``seenn.native``; on these 2 cores 2.9x the eager neuron and pool on a [256, 32, 28, 28]
    channels-last map, 7x at batch 1). The same numbers as the neuron, the average pool and the conversion to counts
    it replaces (tested); the multi-step pass and anything with gradients take that eager path."""

    @classmethod
    def from_neuron(cls, neuron: SpikingNeuron, k: int) -> "CountingNeuron":
        new = cls.__new__(cls)
        new.__dict__.update(neuron.__dict__)
        new._parameters, new._buffers, new._modules = (dict(neuron._parameters), dict(neuron._buffers),
                                                       dict(neuron._modules))
        new.__dict__["pool"] = int(k)
        return new

    def _count(self, s: torch.Tensor) -> torch.Tensor:
        k = self.__dict__["pool"]
        if k > 1:
            s = F.avg_pool2d(s, k).mul_(k * k).round_()
        return s.to(torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .native import kernel

        fn = kernel()
        if (fn is None or self.timesteps is not None or torch.is_grad_enabled() or x.device.type != "cpu"
                or x.dtype != torch.float32 or x.dim() != 4):
            return self._count(super().forward(x))
        p = self.params
        v = self.membrane()
        if v is None:
            v = None if p.v_init == 0.0 else initial_membrane(x, p)
        elif len(v) < len(x):  # rows past the membrane's: samples that joined at rest (continuous batching)
            rest = initial_membrane(x[len(v):], p)
            v = torch.cat([v, rest]).contiguous(memory_format=_layout(x))
        counts, v_new = fn(x, v, p.decay, p.threshold, p.soft_reset, self.__dict__["pool"])
        self.__dict__["v"], self.__dict__["_pending"] = v_new, None
        return counts


def _layout(x: torch.Tensor):
    return torch.channels_last if (not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)) \
        else torch.contiguous_format


def _fuse_counting(body: nn.Module) -> list[str]:
    """In sequential bodies: each neuron whose spikes go (through one plain k x k average pool, or directly) into
    an int8 convolution alone becomes a :class:`CountingNeuron`, the pool dropped. Only where the native kernel
    is there."""
    from .native import kernel

    done = []
    seqs = [(n, m) for n, m in body.named_modules() if isinstance(m, nn.Sequential)]
    for name, seq in seqs:
        keys = list(seq._modules)
        i = 0
        while i < len(keys):
            m = seq._modules[keys[i]]
            nxt = seq._modules[keys[i + 1]] if i + 1 < len(keys) else None
            after = seq._modules[keys[i + 2]] if i + 2 < len(keys) else None
            if type(m) is SpikingNeuron and (isinstance(nxt, Int8Conv2d) or (_plain_pool(nxt) and
                                                                              isinstance(after, Int8Conv2d))):
                if kernel() is None:
                    return done
                k = 1 if isinstance(nxt, Int8Conv2d) else _plain_pool(nxt)
                seq._modules[keys[i]] = CountingNeuron.from_neuron(m, k)
                if k > 1:
                    del seq._modules[keys[i + 1]]
                    keys.pop(i + 1)
                done.append(f"{name}.{keys[i]}" if name else keys[i])
            i += 1
    return done


def _plain_pool(m) -> int:
    """k for a plain k x k, stride-k average pool (floor mode, no padding); 0 otherwise."""
    if not isinstance(m, nn.AvgPool2d):
        return 0
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    k, s = pair(m.kernel_size), pair(m.stride or m.kernel_size)
    if k[0] != k[1] or s != k or any(pair(m.padding)) or m.ceil_mode or m.divisor_override is not None:
        return 0
    return k[0] if k[0] * k[0] <= MAX_COUNT else 0


class Bf16Conv2d(nn.Module):
    """A convolution on spike inputs in bf16 (inputs exact, weights rounded), bias added in fp32; fp32 out."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().to(torch.bfloat16).contiguous(
            memory_format=torch.channels_last))
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.to(conv.weight.device).view(1, -1, 1, 1))
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x.to(torch.bfloat16), self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        return out.float().add_(self.bias)


# ------------------------------------------------------------------------------------------------ entry


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
        raise ConfigError("--precision needs an inference copy with batch norm folded (seenn.fold.inference_model)")
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
        _fuse_counting(body)
    return done
