"""A chain of layers described by a JSON-serialisable list: the form of networks imported from NIR graphs.

Layer specs: ``{"type": "conv2d", "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
"groups", "bias"}``, ``{"type": "linear", "in_features", "out_features", "bias"}``, ``{"type": "neuron", "decay",
"threshold", "soft_reset", "v_init"}`` (and ``"v_init_channels"``: one initial potential per channel, in the weights), ``{"type": "avgpool2d" | "sumpool2d", "kernel_size", "stride", "padding"}``,
``{"type": "flatten"}``, ``{"type": "scale", "factor"}``, ``{"type": "li", "decay"}`` (a leaky integrator readout),
``{"type": "cubalif", "syn_decay", "decay", "gain", "threshold"}`` (a current-based LIF). Everything before the first neuron is the stem.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..nn.neuron import NeuronParams, SpikingNeuron
from .base import SpikingNetwork
from .stateful import CubaLIF, LeakyIntegrator, _Stateful


class SumPool2d(nn.AvgPool2d):
    """Sum pooling (NIR's SumPool2d): average pooling times the window size."""

    def forward(self, x):
        k = self.kernel_size if isinstance(self.kernel_size, tuple) else (self.kernel_size, self.kernel_size)
        return super().forward(x) * (k[0] * k[1])


class Scale(nn.Module):
    """A constant gain (an input gain of a neuron that reads another neuron, a skip connection's spike amplitude)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def build_layer(spec: dict, surrogate: str) -> nn.Module:
    try:
        kind = spec["type"]
        if kind == "scale":
            return Scale(spec["factor"])
        if kind == "conv2d":
            return nn.Conv2d(spec["in_channels"], spec["out_channels"], tuple(spec["kernel_size"]),
                             tuple(spec["stride"]), tuple(spec["padding"]), tuple(spec["dilation"]),
                             spec["groups"], bias=spec["bias"])
        if kind == "linear":
            return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
        if kind == "neuron":
            return SpikingNeuron(NeuronParams(spec["decay"], spec["threshold"], spec["soft_reset"], spec["v_init"]),
                                 surrogate, channels=spec.get("v_init_channels"))
        if kind in ("avgpool2d", "sumpool2d"):
            cls = nn.AvgPool2d if kind == "avgpool2d" else SumPool2d
            return cls(tuple(spec["kernel_size"]), tuple(spec["stride"]), tuple(spec["padding"]))
        if kind == "flatten":
            return nn.Flatten()
        if kind == "li":
            return LeakyIntegrator(spec["decay"])
        if kind == "cubalif":
            return CubaLIF(spec["syn_decay"], spec["decay"], spec["gain"], spec["threshold"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"layer spec {spec} lacks {e}") from None
    raise ConfigError(f"unknown layer type {spec.get('type')!r} in a sequential model")


class SequentialSNN(SpikingNetwork):
    def __init__(self, *, layers, in_channels, image_size, num_classes, width=1.0, surrogate="tanh"):
        super().__init__()
        if not layers:
            raise ConfigError("a sequential model needs layers")
        mods = [build_layer(spec, surrogate) for spec in layers]

        first = next((i for i, m in enumerate(mods) if isinstance(m, (SpikingNeuron, _Stateful))), None)
        if first is None:
            raise ConfigError("a spiking network needs at least one spiking neuron layer")
        self.stem = nn.Sequential(*mods[:first])
        self.body = nn.Sequential(*mods[first:])
