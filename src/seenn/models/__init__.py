"""Model registry: build a spiking network by name from a JSON-serialisable spec."""

from __future__ import annotations

import torch

from ..errors import CheckpointError, ConfigError
from ..io.schema import LIMITS, memory_check
from .airbench import AirBench
from .base import SpikingNetwork
from .convnets import VGG, ConvNet
from .graph import GraphSNN
from .resnet import ResNet19, ResNet20
from .sequential import SequentialSNN

MODELS = {
    "convnet": ConvNet,  # compact 3-block conv SNN for 28x28 grey images
    "vgg": VGG,  # VGG-style SNN for 32x32 RGB
    "resnet19": ResNet19,  # the paper's ResNet-19 (blocks [3, 3, 2], 128/256/512 channels x width)
    "resnet20": ResNet20,  # the CIFAR ResNet-20 of He et al. / the QCFS paper (3 x 3 blocks, 16/32/64 channels)
    "airbench": AirBench,  # the seven-layer network of the CIFAR-10 speed records (whitening, 64/256/256 channels)
    "sequential": SequentialSNN,  # a chain of layers given as a list of specs (NIR import, converted chains)
    "graph": GraphSNN,  # layers wired as a graph (converted residual networks)
}


def build_model(name: str, *, in_channels: int, image_size: int, num_classes: int, width: float = 1.0,
                surrogate: str = "tanh", **options) -> SpikingNetwork:
    try:
        cls = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    if not width > 0:
        raise ConfigError(f"width must be > 0, got {width}", param="width")
    allowed = {"sequential": {"layers"}, "graph": {"layers"}, "convnet": {"neuron", "quant_levels"}, "vgg": {"neuron", "quant_levels"},
               "resnet19": {"neuron", "quant_levels"}, "resnet20": {"neuron", "quant_levels"},
               "airbench": {"neuron", "quant_levels"}}
    unknown = set(options) - allowed.get(name, set())
    if unknown:
        raise ConfigError(f"model {name!r} takes no options {sorted(unknown)}")
    return cls(in_channels=in_channels, image_size=image_size, num_classes=num_classes, width=width,
               surrogate=surrogate, **options)


__all__ = ["MODELS", "SpikingNetwork", "build_model", "check_model_size", "list_models"]


def list_models() -> list[str]:
    """The registry's model names (``build_model``'s first argument)."""
    return sorted(MODELS)


def check_model_size(name: str, **kw) -> int:
    """Build the model on the meta device (no memory) and refuse it beyond ``LIMITS["parameters"]`` or the memory
    this machine has. Returns the parameter count."""

    with torch.device("meta"):
        try:
            count = sum(p.numel() for p in build_model(name, **kw).parameters())
        except (RuntimeError, ValueError) as e:  # impossible layer shapes
            raise CheckpointError(f"the model {name!r} cannot be built: {str(e).splitlines()[0]}") from None
    if count > LIMITS["parameters"]:
        raise CheckpointError(f"the model {name!r} would have {count:,} parameters, more than seenn's bound of "
                              f"{LIMITS['parameters']:,}")
    memory_check(count * 4 * 2, f"the model {name!r} ({count:,} parameters)")
    return count
