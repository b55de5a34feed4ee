"""The layers of low-precision inference copies: int8 and bf16 convolutions on spike inputs, and the counting
neuron that hands an int8 convolution its pooled spikes as uint8 counts (the native kernel, ``native.py``)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...nn.fold import _recast
from ...nn.neuron import SpikingNeuron
from .grids import MAX_COUNT, pair
from .native import kernel


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
        self.__dict__["_packed"] = {}
        self.__dict__["_zp"] = torch.zeros(conv.out_channels, dtype=torch.long)  # symmetric: zero points all 0

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
        return torch.mul(x, 1.0 / self.step).round_().to(torch.uint8)

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
    seenn's native kernel (``seenn.runtime.precision.native``; speed: docs/benchmarks.md). The same numbers as the neuron, the average pool and the conversion to counts
    it replaces (tested); the multi-step pass and anything with gradients take that eager path."""

    @classmethod
    def from_neuron(cls, neuron: SpikingNeuron, k: int) -> "CountingNeuron":
        new = _recast(neuron, cls)  # the same parameters, buffers and settings (frozen threshold included)
        new.__dict__["pool"] = int(k)
        return new

    def _count(self, s: torch.Tensor) -> torch.Tensor:
        k = self.__dict__["pool"]
        if k > 1:
            s = F.avg_pool2d(s, k).mul_(k * k).round_()
        return s.to(torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = kernel()
        if (fn is None or self.timesteps is not None or torch.is_grad_enabled() or x.device.type != "cpu"
                or x.dtype != torch.float32 or x.dim() != 4):
            return self._count(super().forward(x))
        p = self.params
        v = self.membrane()
        if v is None:
            v = None if self.starts_at_zero else self.initial(x)
        elif len(v) < len(x):  # rows past the membrane's: samples that joined at rest (continuous batching)
            rest = self.initial(x[len(v):])
            v = torch.cat([v, rest]).contiguous(memory_format=_layout(x))
        counts, v_new = fn(x, v, p.decay, p.threshold, p.soft_reset, self.__dict__["pool"])
        self.__dict__["v"], self.__dict__["_pending"] = v_new, None
        return counts


def _layout(x: torch.Tensor):
    return torch.channels_last if (not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)) \
        else torch.contiguous_format


def fuse_counting(body: nn.Module) -> list[str]:
    """In sequential bodies: each neuron whose spikes go (through one plain k x k average pool, or directly) into
    an int8 convolution alone becomes a :class:`CountingNeuron`, the pool dropped. Only where the native kernel
    is there."""
    done = []
    if kernel() is None:
        return done
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

