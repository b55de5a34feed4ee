"""Inference-time rewrites: batch-norm folding (``conv -> BN`` becomes one convolution with a bias), convolutions
with their weights pre-packed for oneDNN (:class:`PackedConv2d`), and fast 2x2 average pooling.

In eval mode BN is an affine map per channel, so ``BN(conv(x)) = conv'(x)`` with
``w' = w * g / sqrt(var + eps)`` and ``b' = (b - mean) * g / sqrt(var + eps) + beta``. The result is a new model;
the original keeps its BN layers (training and checkpoints are untouched).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_bn(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``layer`` (a conv or linear layer) with the eval-mode ``bn`` after it folded into its weights and
    bias."""
    fused = copy.deepcopy(layer)
    scale = (bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(layer.weight * scale.view((-1,) + (1,) * (layer.weight.ndim - 1)))
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
    return fused


def _fold_in_place(module: nn.Module) -> None:
    children = list(module.named_children())
    for (name, child), (next_name, nxt) in zip(children, children[1:]):
        if isinstance(child, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and nxt.track_running_stats:
            setattr(module, name, fold_bn(child, nxt))
            setattr(module, next_name, nn.Identity())
    if isinstance(module, nn.Sequential):  # drop the Identity left behind: one module call less per step
        for name in [n for n, c in module.named_children() if isinstance(c, nn.Identity)]:
            del module._modules[name]
    for _, child in module.named_children():
        _fold_in_place(child)


def pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 / stride-2 average pool of ``[B, C, H, W]`` in floor mode (an odd last row / column is left out): sums of
    the two rows, then of the two columns, times 1/4, the same additions in the same order in every layout (on
    spikes every sum is exact). ``x``: contiguous, or channels-last (as oneDNN returns it). Also the pool fused
    into training's neuron pass (``neuron.neuron_multistep_fused``)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:  # floor mode: the last row / column is left out, as avg_pool2d does
        rows = x[:, :, 0:h - 1:2, : w - w % 2] + x[:, :, 1:h:2, : w - w % 2]
        return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)
    if not x.is_contiguous():  # channels-last: the same pairs on the [b, h, w, c] memory
        rows = x.permute(0, 2, 3, 1).view(b, h // 2, 2, w, c)
        pairs = (rows[:, :, 0] + rows[:, :, 1]).view(b, h // 2, w // 2, 2, c)
        return (pairs[:, :, :, 0] + pairs[:, :, :, 1]).mul_(0.25).permute(0, 3, 1, 2)
    rows = x.view(b, c, h // 2, 2, w)
    pairs = (rows[:, :, :, 0] + rows[:, :, :, 1]).view(b, c, h // 2, w // 2, 2)
    return (pairs[..., 0] + pairs[..., 1]).mul_(0.25)


class _Pool2x2(torch.autograd.Function):
    """2x2 / stride-2 average pool as two strided additions; the backward writes a quarter of each output gradient
    to each position of its 2x2 window (avg_pool2d's backward zero-fills and scatters, several times slower)."""

    @staticmethod
    def forward(ctx, x):
        ctx.in_size = tuple(x.shape[2:])
        return pool2x2(x)

    @staticmethod
    def backward(ctx, g):
        b, c, h2, w2 = g.shape
        h, w = ctx.in_size
        if h % 2 or w % 2 or not g.is_contiguous():  # the row / column the pool left out gets no gradient
            out = g.new_zeros(b, c, h, w)
            for i in (0, 1):
                for j in (0, 1):
                    torch.mul(g, 0.25, out=out[:, :, i:2 * h2:2, j:2 * w2:2])
            return out
        out = g.new_empty(b, c, h2, 2, w2, 2)
        for i in (0, 1):  # four strided writes, each scaling as it goes: 2-3x faster than one 6-d expand + copy
            for j in (0, 1):
                torch.mul(g, 0.25, out=out[:, :, :, i, :, j])
        return out.view(b, c, 2 * h2, 2 * w2)


class FastAvgPool2d(nn.AvgPool2d):
    """A 2x2, stride-2 average pool (floor mode) computed as two strided additions, faster than ``avg_pool2d`` on
    CPU for contiguous spike maps (exactly equal on spikes, whose sums are exact; within rounding otherwise), with a
    matching backward for training. Channels-last maps (the packed convolutions' layout) take ``avg_pool2d``'s
    channels-last kernel where that is faster: 64 or more channels, or small tensors. Other inputs (not 4-d,
    smaller than 2x2, neither layout) take the ordinary pool. Measurements: docs/benchmarks.md, "Figures the code
    was tuned on"."""

    def forward(self, x):
        if x.dim() != 4 or x.shape[2] < 2 or x.shape[3] < 2:
            return super().forward(x)
        if not x.is_contiguous():
            if not x.is_contiguous(memory_format=torch.channels_last):
                return super().forward(x)
            if not x.requires_grad and (x.shape[1] >= 64 or x.numel() <= 1 << 19):
                return super().forward(x)  # PyTorch's channels-last kernel, faster here
        if torch.is_grad_enabled() and x.requires_grad:
            return _Pool2x2.apply(x)
        return pool2x2(x)  # inference: no autograd node (its call costs microseconds at batch 1)


def _is_plain_2x2(m: nn.Module) -> bool:
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    return (type(m) is nn.AvgPool2d and pair(m.kernel_size) == (2, 2) and pair(m.stride or m.kernel_size) == (2, 2)
            and pair(m.padding) == (0, 0) and not m.ceil_mode and m.divisor_override is None)


class PackedConv2d(nn.Conv2d):
    """A convolution for inference whose weight is re-laid out once for oneDNN (the blocked layout its kernels
    read) and kept, instead of on every call (faster 3x3 layers and whole passes: docs/benchmarks.md, "Figures the
    code was tuned on"). The result equals ``conv2d``'s within float
    rounding (another summation order), in channels-last layout. Everything else (gradients wanted, another device
    or dtype, no oneDNN) takes the ordinary convolution; the packed weight is redone if the weight changes."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PackedConv2d:
        new = _recast(conv, cls)
        new.__dict__["_packed"] = {}
        return new

    def __getstate__(self):  # copies (deepcopy) repack on first use: oneDNN tensors cannot be copied
        state = self.__dict__.copy()
        if state.get("_packed") is not None:
            state["_packed"] = {}
        return state

    def _packed_weight(self, x: torch.Tensor):
        w = self.weight
        key = (tuple(x.shape[1:]), w._version, w.data_ptr())
        cache = self.__dict__.setdefault("_packed", {})
        packed = cache.get(key)
        if packed is None:
            cache.clear()  # one shape at a time (a model sees one image size)
            packed = cache[key] = torch._C._nn.mkldnn_reorder_conv2d_weight(
                w.detach().to_mkldnn(), list(self.padding), list(self.stride), list(self.dilation), self.groups,
                [1, *x.shape[1:]])
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.__dict__.get("_packed") is None or x.device.type != "cpu" or x.dtype != torch.float32
                or x.dim() != 4 or self.weight.dtype != torch.float32 or self.padding_mode != "zeros"
                or isinstance(self.padding, str)
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                or (x.shape[0] == 1 and self.weight[0].numel() * self.out_channels < 1000)):
            # (the last: at batch 1 a layer this light, a stem on 1-3 channels, is faster plain)
            return super().forward(x)
        try:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed_weight(x), self.bias, list(self.padding), list(self.stride), list(self.dilation),
                self.groups, "none", [], "")
        except (RuntimeError, AttributeError):
            out = super().forward(x)  # an input this layer cannot take raises here, as it would without packing
            self.__dict__["_packed"] = None  # the plain one works where packing did not: stay with it
            return out


def _recast(module: nn.Module, cls: type) -> nn.Module:
    """``module`` as an instance of ``cls`` (a subclass or the base class of its own), sharing its parameters,
    buffers, hooks and settings; without a packed weight."""
    new = cls.__new__(cls)
    new.__dict__.update({k: v for k, v in module.__dict__.items() if k != "_packed"})
    new._parameters, new._buffers, new._modules = (dict(module._parameters), dict(module._buffers),
                                                   dict(module._modules))
    return new


def _replace(module: nn.Module, match, make) -> None:
    """Every submodule that ``match``es, replaced by ``make(it)``, in place."""
    for name, child in module.named_children():
        if match(child):
            setattr(module, name, make(child))
        else:
            _replace(child, match, make)


def unpack_convs(module: nn.Module) -> None:
    """Back to plain ``nn.Conv2d`` (the same parameters), in place: for torch.compile, which lays out and fuses
    convolutions itself and would otherwise break its graph at every packed one."""
    _replace(module, lambda m: isinstance(m, PackedConv2d), lambda m: _recast(m, nn.Conv2d))


def for_compiler(model: nn.Module) -> nn.Module:
    """An inference model made ready for torch.compile, in place: plain convolutions (:func:`unpack_convs`) and
    neurons that reset right after firing (the compiler fuses that into the firing loop; deferring it only adds
    graph outputs there)."""
    unpack_convs(model)
    for m in model.modules():
        if "_defer" in m.__dict__:
            m.__dict__["_defer"] = False
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every conv directly followed by a BN (in registration order, as in
    ``nn.Sequential`` and the ResNet blocks' ``conv1, bn1`` / ``conv2, bn2``) folded into one convolution.
    A model without BN comes back as it is."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model.eval()  # nothing to fold
    folded = copy.deepcopy(model).eval()
    _fold_in_place(folded)
    return folded
