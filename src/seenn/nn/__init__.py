"""Neuron math: the spiking neurons (:mod:`~seenn.nn.neuron`: ``LIF``, ``IF``, the fused multi-step BPTT
functions), their surrogate gradients (:mod:`~seenn.nn.surrogate`), the QCFS activation of ANNs meant for
conversion (:mod:`~seenn.nn.qcfs`) and the layer rewrites the models are built with (:mod:`~seenn.nn.fold`: fast
2x2 pools, BN folding, packed convolutions)."""

from __future__ import annotations

from .neuron import IF, LIF, SpikingNeuron
from .qcfs import QCFS
from .surrogate import make_surrogate

__all__ = ["IF", "LIF", "QCFS", "SpikingNeuron", "make_surrogate"]
