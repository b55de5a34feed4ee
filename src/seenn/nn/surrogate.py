"""Surrogate gradients: the Heaviside step of a spiking neuron forward, a smooth pseudo-derivative backward
(:func:`spike`), by name (:data:`SURROGATES`, :func:`make_surrogate`)."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


class Surrogate:
    """A surrogate gradient: ``grad(z)`` is used in place of dH/dz; ``primitive(z)`` is its antiderivative
    (a smooth stand-in for the Heaviside step, 0 far below threshold and 1 far above)."""

    name = "base"

    def grad(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def primitive(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TanhSurrogate(Surrogate):
    """Dspike-style tanh surrogate (Li et al. 2021) centred on the threshold, width 1, ``temperature`` b.

    primitive(z) = (tanh(b z) + tanh(b/2)) / (2 tanh(b/2)) on |z| <= 1/2, clipped to 0 / 1 outside."""

    name = "tanh"

    def __init__(self, temperature: float = 3.0):
        if not temperature > 0:
            raise ConfigError(f"surrogate temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self._norm = 2.0 * math.tanh(self.temperature / 2.0)

    def grad(self, z):
        # b (1 - tanh(b z)^2) / norm, with 1 - tanh(u)^2 = 4 e / (1 + e)^2 for e = exp(-2 |u|): one exp instead of
        # a tanh (faster compiled, and the bulk of the BPTT backward) and no cancellation; equal within rounding
        b = self.temperature
        a = z.abs()
        e = torch.exp(a * (-2.0 * b))
        return torch.where(a <= 0.5, (4.0 * b / self._norm) * e / (1.0 + e) ** 2, 0.0)

    def primitive(self, z):
        b = self.temperature
        zc = z.clamp(-0.5, 0.5)
        return (torch.tanh(b * zc) + math.tanh(b / 2.0)) / self._norm


class TriangleSurrogate(Surrogate):
    """Triangle: grad(z) = max(0, 1 - |z| / w) / w (area 1)."""

    name = "triangle"

    def __init__(self, width: float = 1.0):
        if not width > 0:
            raise ConfigError(f"surrogate width must be > 0, got {width}")
        self.width = float(width)

    def grad(self, z):
        w = self.width
        return (1.0 - z.abs() / w).clamp(min=0.0) / w

    def primitive(self, z):
        w = self.width
        zc = (z / w).clamp(-1.0, 1.0)
        return torch.where(zc < 0, 0.5 * (1 + zc) ** 2, 1.0 - 0.5 * (1 - zc) ** 2)


class RectangleSurrogate(Surrogate):
    """Rectangle (straight-through inside a window): grad(z) = 1/w for |z| < w/2."""

    name = "rectangle"

    def __init__(self, width: float = 1.0):
        if not width > 0:
            raise ConfigError(f"surrogate width must be > 0, got {width}")
        self.width = float(width)

    def grad(self, z):
        return (z.abs() < self.width / 2).to(z.dtype) / self.width

    def primitive(self, z):
        return (z / self.width + 0.5).clamp(0.0, 1.0)


SURROGATES = {"tanh": TanhSurrogate, "triangle": TriangleSurrogate, "rectangle": RectangleSurrogate}


def make_surrogate(name: str) -> Surrogate:
    try:
        return SURROGATES[name]()
    except KeyError:
        raise ConfigError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}") from None


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, surrogate):
        ctx.save_for_backward(z)
        ctx.surrogate = surrogate
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (z,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(z), None


def spike(z: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """Heaviside ``z >= 0`` with the surrogate's gradient."""
    if not (torch.is_grad_enabled() and z.requires_grad):  # inference: skip the autograd node
        return (z >= 0).to(z.dtype)
    return _Spike.apply(z, surrogate)
