"""ResNet-19 as in TET / SEENN: stem conv 128, stages of [3, 3, 2] basic blocks at 128/256/512 channels,
global average pooling, FC 256 + LIF, FC to the classes. ``width`` scales every channel count."""

from __future__ import annotations

from torch import nn

from ..neuron import LIF
from .base import SpikingNetwork


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, surrogate: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.lif1 = LIF(surrogate)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.lif2 = LIF(surrogate)

    def forward(self, x):
        out = self.lif1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.lif2(out + self.shortcut(x))


class ResNet19(SpikingNetwork):
    def __init__(self, *, in_channels, image_size, num_classes, width, surrogate):
        super().__init__()
        c1, c2, c3 = (max(1, int(round(c * width))) for c in (128, 256, 512))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1))
        layers: list[nn.Module] = [LIF(surrogate)]
        cin = c1
        for cout, blocks, stride in ((c1, 3, 1), (c2, 3, 2), (c3, 2, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1, surrogate))
                cin = cout
        hidden = max(1, int(round(256 * width)))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, hidden), LIF(surrogate),
                   nn.Linear(hidden, num_classes)]
        self.body = nn.Sequential(*layers)
