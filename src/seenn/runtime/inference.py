"""The inference copy of a network that the runner, evaluation, bench and the server run
(:func:`inference_model`): batch norm folded, fast pools and packed convolutions (:mod:`seenn.nn.fold`), thresholds
frozen, the spiking layers in a precision (:mod:`seenn.runtime.precision`). Above both in the layers: it imports them,
they import neither it nor each other's callers."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn.fold import FastAvgPool2d, PackedConv2d, _is_plain_2x2, _replace, fold_batchnorm
from .precision import apply_precision, check_precision


def inference_model(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """The copy of ``model`` that the runner, evaluation and bench run: BN folded (:func:`fold_batchnorm`),
    convolutions as :class:`PackedConv2d` (when oneDNN is there), 2x2 average pools as :class:`FastAvgPool2d`,
    neuron thresholds read once (``SpikingNeuron.freeze``); with ``precision`` bf16 or int8 the convolutions that
    read spikes in that precision (``seenn.runtime.precision``). Always a copy: ``model`` itself is left as it is.
    A model with ``foldable = False`` (another framework's network, ``seenn.interop``) is copied as it is."""
    check_precision(precision)
    if not getattr(model, "foldable", True):
        if precision != "fp32":
            apply_precision(model, precision)  # raises: a peer's network runs in fp32
        peer = copy.deepcopy(model).eval()
        peer.__dict__["precision"] = "fp32"
        return peer
    folded = fold_batchnorm(model)
    if folded is model:
        folded = copy.deepcopy(model).eval()
    _replace(folded, _is_plain_2x2, lambda m: FastAvgPool2d(2))
    if torch.backends.mkldnn.is_available():
        _replace(folded, lambda m: type(m) is nn.Conv2d, PackedConv2d.from_conv)
    for m in folded.modules():
        if hasattr(m, "freeze") and hasattr(m, "threshold"):  # spiking neurons
            m.freeze()
    apply_precision(folded, precision)
    folded.__dict__["precision"] = precision if precision != "fp32" else getattr(model, "precision", "fp32")
    return folded
