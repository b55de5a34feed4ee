"""Residual SNNs (and their QCFS ANNs, ``neuron="qcfs"``, for conversion).

- ``resnet19`` as in TET / SEENN: stem conv 128, stages of [3, 3, 2] basic blocks at 128/256/512 channels,
  global average pooling, FC 256 + neuron, FC to the classes.
- ``resnet20``, the CIFAR ResNet of He et al. (2016) used by the QCFS paper: stem conv 16, three stages of three
  basic blocks at 16/32/64 channels (stride 2 at the start of stages 2 and 3, 1x1 conv + BN projection
  shortcuts where the shape changes), global average pooling, FC to the classes.

``width`` scales every channel count. The residual sum feeds the block's second neuron, so a converted block is
an IF neuron charged by the sum of both branches' currents.
"""

from __future__ import annotations

from torch import nn

from .base import SpikingNetwork
from .convnets import _activation, _ch


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, act):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.lif1 = act()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.lif2 = act()

    def forward(self, x):
        out = self.lif1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.lif2(out + self.shortcut(x))


class _ResNet(SpikingNetwork):
    def __init__(self, stem_channels, stages, hidden, *, in_channels, num_classes, width, surrogate,
                 neuron="lif", quant_levels=8):
        super().__init__()
        act = _activation(neuron, surrogate, quant_levels)
        c1 = _ch(stem_channels, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1))
        layers: list[nn.Module] = [act()]
        cin = c1
        for channels, blocks, stride in stages:
            cout = _ch(channels, width)
            for i in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1, act))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden:
            h = _ch(hidden, width)
            layers += [nn.Linear(cin, h), act()]
            cin = h
        layers.append(nn.Linear(cin, num_classes))
        self.body = nn.Sequential(*layers)


class ResNet19(_ResNet):
    def __init__(self, *, image_size, **kw):
        super().__init__(128, ((128, 3, 1), (256, 3, 2), (512, 2, 2)), 256, **kw)


class ResNet20(_ResNet):
    def __init__(self, *, image_size, **kw):
        super().__init__(16, ((16, 3, 1), (32, 3, 2), (64, 3, 2)), None, **kw)
