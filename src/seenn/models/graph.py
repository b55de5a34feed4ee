"""A network of layers wired as a graph, described by a JSON-serialisable list: the form of converted residual
networks (``seenn.conversion`` on a ResNet).

The specs are those of ``sequential`` models plus ``{"type": "add"}`` (the sum of its inputs, a residual
connection) and ``{"type": "scale", "factor"}`` (a constant gain: the spike amplitude a skip connection carries).
Each spec may name its inputs (``"inputs": [i, j]``: indices of earlier layers, ``-1`` the network's input);
without it, a layer reads the one before it. The layers before the first neuron that form a plain chain from the
input, and are read by nothing after it, are the stem (computed once per input, as in every seenn network).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..nn.neuron import SpikingNeuron
from .base import SpikingNetwork
from .sequential import build_layer


class Add(nn.Module):
    """The sum of its inputs (a residual connection)."""

    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


def build_graph_layer(spec: dict, surrogate: str) -> nn.Module:
    kind = spec.get("type")
    if kind == "add":
        return Add()
    return build_layer(spec, surrogate)


def layer_inputs(specs: list[dict]) -> list[list[int]]:
    """Each layer's inputs (indices of earlier layers, -1 the network input), checked to point backwards."""
    out = []
    for i, spec in enumerate(specs):
        ins = spec.get("inputs", [i - 1])
        if not ins or any(not isinstance(j, int) or isinstance(j, bool) or not -1 <= j < i for j in ins):
            raise ConfigError(f"layer {i} reads {ins}: inputs must be earlier layers (or -1, the input)")
        if spec.get("type") != "add" and len(ins) != 1:
            raise ConfigError(f"layer {i} ({spec.get('type')}) takes one input, got {ins}")
        out.append(list(ins))
    return out


class GraphBody(nn.Module):
    """Layers run in order; each reads the outputs named by its inputs (``-1``: the body's input). An output is
    dropped as soon as its last reader has run, so a deep residual net keeps only what is still needed."""

    def __init__(self, layers: list[nn.Module], inputs: list[list[int]]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.inputs = [list(i) for i in inputs]
        last = {}
        for i, ins in enumerate(self.inputs):
            for j in ins:
                last[j] = i
        self._free_after = [[j for j, k in last.items() if k == i and j != len(layers) - 1] for i in
                            range(len(layers))]

    def forward(self, x):
        outs: dict[int, torch.Tensor] = {-1: x}
        for i, layer in enumerate(self.layers):
            outs[i] = layer(*(outs[j] for j in self.inputs[i]))
            for j in self._free_after[i]:
                del outs[j]
        return outs[len(self.layers) - 1]


class GraphSNN(SpikingNetwork):
    def __init__(self, *, layers, in_channels, image_size, num_classes, width=1.0, surrogate="tanh"):
        super().__init__()
        if not layers:
            raise ConfigError("a graph model needs layers")
        inputs = layer_inputs(layers)
        mods = [build_graph_layer(spec, surrogate) for spec in layers]
        first = next((i for i, m in enumerate(mods) if isinstance(m, SpikingNeuron)), None)
        if first is None:
            raise ConfigError("a spiking network needs at least one spiking neuron layer")
        # the stem: a plain chain from the input up to the first neuron, read by nothing later but the neuron
        stem = 0
        while stem < first and inputs[stem] == [stem - 1] and not isinstance(mods[stem], Add):
            stem += 1
        if any(j < stem - 1 for ins in inputs[stem:] for j in ins):
            stem = 0  # something later reads inside the stem (or the raw input): everything runs every step
        self.stem = nn.Sequential(*mods[:stem])
        body_inputs = [[j - stem if j >= stem else -1 for j in ins] for ins in inputs[stem:]]
        self.body = GraphBody(mods[stem:], body_inputs)
        self.num_classes = num_classes
