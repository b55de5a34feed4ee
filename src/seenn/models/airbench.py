"""``airbench``: the seven-layer network of the CIFAR-10 speed records (Jordan 2024, "94% on CIFAR-10 in 3.29
seconds on a single GPU", arXiv 2404.00498), in the forms that convert and spike.

Layout (``width`` scales the block widths 64 / 256 / 256):

- stem, stateless and so computed once per input: a 2x2 convolution to 24 channels with a bias (the *whitening*
  layer: :func:`seenn.training.recipe.init_whitening` sets its weights from training-image patches and training leaves them
  frozen), then block 1's first 3x3 convolution and its batch norm;
- body: three blocks of ``act, avg-pool 2x2, conv, BN, act`` / ``conv, BN`` (block 1's first convolution is in the
  stem), then global average pooling and a bias-free linear readout.

Where the paper's network is ``conv, max-pool, BN, GELU``, this one is ``conv, BN, act, avg-pool``: average pooling
after the activation is what converts (a rate-coded layer has no max of rates, and a batch norm folds only into
the convolution right before it) and what the fused training pass of the LIF form pools in the neuron's own pass.
The paper's GELU after the whitening layer is dropped (the stem stays linear, computed once per input), and its
final 3x3 max pool is a global average pool. Its output multiplier (1/9) is not a layer here: the recipe's
``head_scale`` gives the readout the same training dynamics as a linear layer initialised and stepped that much
smaller (``seenn.training.recipe``), so the network stays plain Conv / BN / Linear for conversion and NIR.
"""

from __future__ import annotations

from torch import nn

from ..nn.fold import FastAvgPool2d
from .base import SpikingNetwork
from .convnets import _activation, _ch

WHITEN_KERNEL = 2
WIDTHS = (64, 256, 256)


def whiten_channels(in_channels: int) -> int:
    """Channels of the whitening layer: every eigenvector of the patch covariance, and its negation."""
    return 2 * in_channels * WHITEN_KERNEL ** 2


class AirBench(SpikingNetwork):
    def __init__(self, *, in_channels, image_size, num_classes, width, surrogate, neuron="lif", quant_levels=8):
        super().__init__()
        act = _activation(neuron, surrogate, quant_levels)
        w1, w2, w3 = (_ch(c, width) for c in WIDTHS)
        cw = whiten_channels(in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, cw, WHITEN_KERNEL, bias=True),
                                  nn.Conv2d(cw, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1))
        layers: list[nn.Module] = []
        cin = w1
        for i, c in enumerate((w1, w2, w3)):
            if i:  # block 1's first convolution is the stem's
                layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
            layers += [act(), FastAvgPool2d(2), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), act()]
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes, bias=False)]
        self.body = nn.Sequential(*layers)

    @property
    def whiten(self) -> nn.Conv2d:
        return self.stem[0]

    @property
    def readout(self) -> nn.Linear:
        return self.body[-1]
