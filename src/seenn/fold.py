"""Inference-time batch-norm folding: ``conv -> BN`` becomes one convolution with a bias.

In eval mode BN is an affine map per channel, so ``BN(conv(x)) = conv'(x)`` with
``w' = w * g / sqrt(var + eps)`` and ``b' = (b - mean) * g / sqrt(var + eps) + beta``. The result is a new model;
the original keeps its BN layers (training and checkpoints are untouched).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused = fused.to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def _fold_in_place(module: nn.Module) -> None:
    children = list(module.named_children())
    for (name, child), (next_name, nxt) in zip(children, children[1:]):
        if isinstance(child, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and nxt.track_running_stats:
            setattr(module, name, fold_conv_bn(child, nxt))
            setattr(module, next_name, nn.Identity())
    if isinstance(module, nn.Sequential):  # drop the Identity left behind: one module call less per step
        for name in [n for n, c in module.named_children() if isinstance(c, nn.Identity)]:
            del module._modules[name]
    for _, child in module.named_children():
        _fold_in_place(child)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every conv directly followed by a BN (in registration order, as in
    ``nn.Sequential`` and the ResNet blocks' ``conv1, bn1`` / ``conv2, bn2``) folded into one convolution.
    A model without BN comes back as it is."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model.eval()  # nothing to fold
    folded = copy.deepcopy(model).eval()
    _fold_in_place(folded)
    return folded
