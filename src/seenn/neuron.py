"""Spiking neurons: pure step functions, a fused multi-step autograd function, and thin modules.

One timestep of a neuron with decay ``d`` (0.5 for the paper's LIF, 1.0 for IF) and threshold ``theta``::

    h_t = d * v_{t-1} + x_t                  # charge
    s_t = H(h_t - theta)                     # fire (Heaviside forward, surrogate gradient backward)
    v_t = h_t * (1 - s_t)                    # hard reset to 0            (LIF, directly trained)
    v_t = h_t - theta * s_t                  # soft reset by subtraction  (IF, converted from ANNs)

Tensor layouts: single-step ``[B, ...]``; multi-step ``[T, B, ...]``. Inside a network in multi-step mode the
neurons receive ``[T*B, ...]`` (time-major flattening) so every stateless layer runs once over all timesteps.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import NamedTuple

import torch
from torch import nn

from .errors import ConfigError

# --------------------------------------------------------------------------------------------- surrogates


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
        b = self.temperature
        inside = (z.abs() <= 0.5).to(z.dtype)
        return inside * (b / self._norm) * (1.0 - torch.tanh(b * z) ** 2)

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


# --------------------------------------------------------------------------------------------- pure steps


class NeuronParams(NamedTuple):
    decay: float = 0.5  # membrane decay per step (1.0: IF, no leak)
    threshold: float = 1.0
    soft_reset: bool = False  # reset by subtraction (IF) instead of to zero (LIF)
    v_init: float = 0.0  # initial membrane potential, as a fraction of the threshold


LIF_PARAMS = NeuronParams(decay=0.5, threshold=1.0, soft_reset=False, v_init=0.0)
IF_PARAMS = NeuronParams(decay=1.0, threshold=1.0, soft_reset=True, v_init=0.5)


def neuron_step(x: torch.Tensor, v: torch.Tensor, params: NeuronParams, surrogate: Surrogate):
    """One timestep. Returns ``(spikes, new_membrane)``; differentiable through the surrogate."""
    h = torch.add(x, v, alpha=params.decay)  # the same primitive in every path, so all paths agree bit for bit
    s = spike(h - params.threshold, surrogate)
    v_new = torch.sub(h, s, alpha=params.threshold) if params.soft_reset else h * (1.0 - s)
    return s, v_new


def _fire_and_reset(h: torch.Tensor, params: NeuronParams, h_is_scratch: bool, spikes_out=None):
    """Forward-only fire and reset of charged potentials ``h`` (no autograd): returns ``(spikes, membrane)``.
    With ``h_is_scratch`` the membrane is written over ``h``."""
    # the comparison writes float spikes directly (one pass; a bool mask converted afterwards costs two), and the
    # hard reset is h - h * s in one fused pass: exactly h where s = 0 and 0 where s = 1, as h * (1 - s)
    s = torch.empty_like(h) if spikes_out is None else spikes_out
    torch.ge(h, params.threshold, out=s)
    if params.soft_reset:
        v = h.sub_(s, alpha=params.threshold) if h_is_scratch else torch.sub(h, s, alpha=params.threshold)
    else:
        v = h.addcmul_(h, s, value=-1.0) if h_is_scratch else torch.addcmul(h, h, s, value=-1.0)
    return s, v


def initial_membrane(like: torch.Tensor, params: NeuronParams) -> torch.Tensor:
    return torch.full_like(like, params.v_init * params.threshold)


def neuron_multistep_reference(x_seq: torch.Tensor, params: NeuronParams, surrogate: Surrogate):
    """Multi-step run ``[T, B, ...] -> [T, B, ...]`` by looping :func:`neuron_step` (autograd through the loop)."""
    v = initial_membrane(x_seq[0], params)
    out = []
    for x in x_seq:
        s, v = neuron_step(x, v, params, surrogate)
        out.append(s)
    return torch.stack(out)


def _forward_loop(x_seq: torch.Tensor, params: NeuronParams, keep_potentials: bool):
    """The forward arithmetic of :func:`neuron_step` over all steps, without autograd. Returns the spikes and,
    when asked, the charged potentials h_t that the backward pass needs."""
    s_seq = torch.empty_like(x_seq)
    h_seq = torch.empty_like(x_seq) if keep_potentials else None
    v = initial_membrane(x_seq[0], params)
    for t in range(x_seq.shape[0]):
        h = torch.add(x_seq[t], v, alpha=params.decay, out=h_seq[t] if keep_potentials else None)
        _, v = _fire_and_reset(h, params, h_is_scratch=not keep_potentials, spikes_out=s_seq[t])
    return s_seq, h_seq


def _train_forward(x_seq: torch.Tensor, decay: float, threshold: float, soft_reset: bool, v_init: float):
    """Spikes and charged potentials over all steps (the arithmetic of :func:`neuron_step`)."""
    v = torch.full_like(x_seq[0], v_init * threshold)
    spikes, potentials = [], []
    for t in range(x_seq.shape[0]):
        h = torch.add(x_seq[t], v, alpha=decay)
        fired = h >= threshold
        s = fired.to(h.dtype)
        v = torch.sub(h, s, alpha=threshold) if soft_reset else h * (1.0 - s)
        spikes.append(s)
        potentials.append(h)
    return torch.stack(spikes), torch.stack(potentials)


def _train_backward(h_seq: torch.Tensor, grad_s: torch.Tensor, decay: float, threshold: float, soft_reset: bool,
                    surrogate: Surrogate) -> torch.Tensor:
    """BPTT through the neuron: dL/dx for every step, from dL/ds and the saved potentials."""
    grads = []
    grad_v = None  # dL/dv_t flowing back from step t+1
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h = h_seq[t]
        sg = surrogate.grad(h - threshold)
        gh = grad_s[t] * sg
        if grad_v is not None:
            if soft_reset:
                dv_dh = 1.0 - threshold * sg
            else:
                dv_dh = (1.0 - (h >= threshold).to(h.dtype)) - h * sg
            gh = gh + grad_v * dv_dh
        grads.append(gh)
        grad_v = decay * gh
    return torch.stack(grads[::-1])


# Optional torch.compile of the two loops above: the elementwise work of all T steps fuses into a few C++ loops
# (about 6x faster on CPU, after a one-off compile of some seconds per layer shape). Off by default; turned on by
# set_compile(True), `seenn train --compile`, or SEENN_COMPILE=1. A failed compile (no C++ compiler) falls back.
_compile = {"enabled": os.environ.get("SEENN_COMPILE", "0") == "1", "fwd": None, "bwd": None, "failed": False}


def set_compile(enabled: bool) -> None:
    _compile["enabled"] = bool(enabled)


def _kernel(which: str):
    eager = _train_forward if which == "fwd" else _train_backward
    if not _compile["enabled"] or _compile["failed"]:
        return eager
    if _compile[which] is None:
        _compile[which] = torch.compile(eager, dynamic=None)
    return _compile[which]


def _call(which: str, *args):
    fn = _kernel(which)
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any compiler failure: warn once, run eagerly
        if fn is _train_forward or fn is _train_backward:
            raise
        _compile["failed"] = True
        warnings.warn(f"torch.compile of the neuron failed ({type(e).__name__}); running without it")
        return (_train_forward if which == "fwd" else _train_backward)(*args)


class _FusedNeuron(torch.autograd.Function):
    """All T steps in one autograd node: forward keeps only the charged potentials h_t, backward runs BPTT
    in reverse. Same gradients as autograd through :func:`neuron_step`, without a per-step graph."""

    @staticmethod
    def forward(ctx, x_seq, params: NeuronParams, surrogate: Surrogate):
        with torch.no_grad():
            s_seq, h_seq = _call("fwd", x_seq, params.decay, params.threshold, params.soft_reset, params.v_init)
        ctx.save_for_backward(h_seq)
        ctx.params = params
        ctx.surrogate = surrogate
        return s_seq

    @staticmethod
    def backward(ctx, grad_s):
        (h_seq,) = ctx.saved_tensors
        p: NeuronParams = ctx.params
        with torch.no_grad():
            grad_x = _call("bwd", h_seq, grad_s.contiguous(), p.decay, p.threshold, p.soft_reset, ctx.surrogate)
        return grad_x, None, None


def neuron_multistep(x_seq: torch.Tensor, params: NeuronParams, surrogate: Surrogate) -> torch.Tensor:
    """Multi-step run ``[T, B, ...] -> [T, B, ...]`` with the fused autograd function."""
    if not (torch.is_grad_enabled() and x_seq.requires_grad):  # inference: keep nothing for a backward pass
        return _forward_loop(x_seq, params, keep_potentials=False)[0]
    return _FusedNeuron.apply(x_seq, params, surrogate)


# --------------------------------------------------------------------------------------------- modules


class SpikingNeuron(nn.Module):
    """A neuron layer. Its membrane lives on the module (``self.v``), one row per sample, so a runner can
    drop finished samples with :meth:`select`. ``timesteps`` is None in single-step mode; in multi-step mode
    it is T and the input is ``[T*B, ...]`` (time-major)."""

    def __init__(self, params: NeuronParams = LIF_PARAMS, surrogate: str = "tanh"):
        super().__init__()
        if not params.threshold > 0:
            raise ConfigError(f"neuron threshold must be > 0, got {params.threshold}")
        if not 0 < params.decay <= 1:
            raise ConfigError(f"neuron decay must be in (0, 1], got {params.decay}")
        self.decay = float(params.decay)
        self.soft_reset = bool(params.soft_reset)
        self.v_init = float(params.v_init)
        # the threshold is a buffer so conversion can set it per layer and checkpoints carry it
        self.register_buffer("threshold", torch.tensor(float(params.threshold)))
        self.surrogate_name = surrogate
        self.surrogate = make_surrogate(surrogate)
        self.timesteps: int | None = None
        self.v: torch.Tensor | None = None

    @property
    def params(self) -> NeuronParams:
        frozen = self.__dict__.get("_frozen")
        if frozen is not None:
            return frozen
        return NeuronParams(self.decay, float(self.threshold), self.soft_reset, self.v_init)

    def freeze(self) -> None:
        """For inference copies (whose threshold no longer changes): read the threshold once, as a Python number,
        instead of on every step (a device sync, and a graph break under torch.compile)."""
        self.__dict__["_frozen"] = None
        self.__dict__["_frozen"] = self.params

    # The membrane is a plain attribute (not a buffer: it is per batch, not part of the model), written through
    # __dict__ because nn.Module.__setattr__ is slow and this runs after every step.
    def reset(self) -> None:
        self.__dict__["v"] = None

    def select(self, index: torch.Tensor) -> None:
        if self.v is not None:
            self.__dict__["v"] = self.v[index]

    def reset_rows(self, rows: torch.Tensor) -> None:
        """Set some rows back to the initial membrane (new samples taking freed slots of a running batch)."""
        if self.v is not None:
            self.v[rows] = self.v_init * float(self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.params
        if self.timesteps is None:
            v = self.v
            if torch.is_grad_enabled() and x.requires_grad:
                v = initial_membrane(x, params) if v is None else v
                s, self.__dict__["v"] = neuron_step(x, v, params, self.surrogate)
            elif v is None and params.v_init == 0.0:  # first inference step from rest: h = x, which the caller
                # may still hold (the encoded input is reused every step), so it is not written over
                s, self.__dict__["v"] = _fire_and_reset(x, params, h_is_scratch=False)
            else:  # inference: no autograd node, fewer passes over the tensor
                v = initial_membrane(x, params) if v is None else v
                h = torch.add(x, v, alpha=params.decay)
                s, self.__dict__["v"] = _fire_and_reset(h, params, h_is_scratch=True)
            return s
        t = self.timesteps
        x_seq = x.reshape(t, x.shape[0] // t, *x.shape[1:])
        return neuron_multistep(x_seq, params, self.surrogate).reshape(x.shape)

    def extra_repr(self) -> str:
        kind = "IF" if self.decay == 1.0 else f"LIF(decay={self.decay})"
        reset = "soft" if self.soft_reset else "hard"
        return f"{kind}, threshold={float(self.threshold):.4g}, reset={reset}, surrogate={self.surrogate_name}"


def LIF(surrogate: str = "tanh", decay: float = 0.5, threshold: float = 1.0) -> SpikingNeuron:
    return SpikingNeuron(NeuronParams(decay, threshold, False, 0.0), surrogate)


def IF(threshold: float = 1.0, v_init: float = 0.5, surrogate: str = "tanh") -> SpikingNeuron:
    return SpikingNeuron(NeuronParams(1.0, threshold, True, v_init), surrogate)
