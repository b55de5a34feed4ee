"""Plain convolutional SNNs: a compact net for 28x28 and a VGG-style net for 32x32."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..nn.fold import FastAvgPool2d
from ..nn.neuron import LIF
from ..nn.qcfs import QCFS
from .base import SpikingNetwork

NEURONS = ("lif", "qcfs")  # qcfs: the ANN to convert (``seenn train --ann``)


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]


def _activation(neuron: str, surrogate: str, quant_levels: int):
    if neuron == "lif":
        return lambda: LIF(surrogate)
    if neuron == "qcfs":
        return lambda: QCFS(quant_levels)
    raise ConfigError(f"unknown neuron {neuron!r}; choose one of {list(NEURONS)}")


class _Plain(SpikingNetwork):
    """conv-BN-LIF blocks with average pooling ('A' in the plan), then a linear readout. With ``neuron="qcfs"``
    the same layout is an ANN with QCFS activations (``ann_forward``), ready for conversion."""

    def __init__(self, plan, *, in_channels, image_size, num_classes, width, surrogate, neuron="lif",
                 quant_levels=8):
        super().__init__()
        act = _activation(neuron, surrogate, quant_levels)
        chans = [c if c == "A" else _ch(c, width) for c in plan]
        first = chans[0]
        self.stem = nn.Sequential(*_conv_bn(in_channels, first))
        layers: list[nn.Module] = [act()]
        size, cin = image_size, first
        for c in chans[1:]:
            if c == "A":
                layers.append(FastAvgPool2d(2))
                size //= 2
            else:
                layers += _conv_bn(cin, c) + [act()]
                cin = c
        layers += [nn.Flatten(), nn.Linear(cin * size * size, num_classes)]
        self.body = nn.Sequential(*layers)


class ConvNet(_Plain):
    """3 blocks of 32/64/128 channels (x width), each conv-BN-LIF-avgpool; 28x28 -> 3x3 -> linear."""

    def __init__(self, **kw):
        super().__init__([32, "A", 64, "A", 128, "A"], **kw)


class VGG(_Plain):
    """VGG-style: 64-A-128-A-256-256-A-512-512-A (x width), then a linear readout."""

    def __init__(self, **kw):
        super().__init__([64, "A", 128, "A", 256, 256, "A", 512, 512, "A"], **kw)
