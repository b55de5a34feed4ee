"""Stateful layers other than spiking neurons, for imported NIR graphs: a leaky integrator readout (``nir.LI``) and
a current-based LIF neuron (``nir.CubaLIF``). They follow the neurons' contract: state in ``v`` (one row per
sample, ``None`` at rest), ``reset()``, ``select(index)`` (batch compaction), rows past the state are newcomers at
rest (continuous batching), and multi-step input ``[T*B, ...]`` when ``timesteps`` is set."""

from __future__ import annotations

import torch
from torch import nn


def _rows(state: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The state for the rows of ``x``: zeros (rest) at the start and for newcomers past the state's rows."""
    if state is None:
        return torch.zeros_like(x)
    if state.shape[0] < x.shape[0]:
        return torch.cat([state, state.new_zeros(x.shape[0] - state.shape[0], *state.shape[1:])])
    return state


class _Stateful(nn.Module):
    timesteps: int | None = None

    def reset(self) -> None:
        self.__dict__["v"] = None

    def select(self, index: torch.Tensor) -> None:
        v = self.__dict__.get("v")
        if v is not None:
            self.__dict__["v"] = tuple(s[index] for s in v) if isinstance(v, tuple) else v[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.timesteps is None:
            return self.step(x)
        t = self.timesteps
        xs = x.reshape(t, x.shape[0] // t, *x.shape[1:])
        saved = self.__dict__.get("v")
        self.reset()
        try:
            return torch.cat([self.step(xs[i]) for i in range(t)])
        finally:
            self.__dict__["v"] = saved


class LeakyIntegrator(_Stateful):
    """``v <- decay * v + x``; the output is ``v`` (a non-spiking readout, NIR's LI; the input gain is folded into
    the synaptic layer before it)."""

    def __init__(self, decay: float):
        super().__init__()
        self.decay = float(decay)
        self.reset()

    def step(self, x):
        v = torch.add(x, _rows(self.__dict__.get("v"), x), alpha=self.decay)
        self.__dict__["v"] = v
        return v

    def extra_repr(self) -> str:
        return f"decay={self.decay:g}"


class CubaLIF(_Stateful):
    """A current-based LIF (NIR's CubaLIF): ``i <- syn_decay * i + x``; ``v <- decay * v + gain * i``; a spike
    where ``v >= threshold``, then ``v`` resets to zero (the input gain into ``i`` is folded into the layer before)."""

    def __init__(self, syn_decay: float, decay: float, gain: float, threshold: float):
        super().__init__()
        self.syn_decay, self.decay, self.gain, self.threshold = float(syn_decay), float(decay), float(gain), \
            float(threshold)
        self.reset()

    def step(self, x):
        state = self.__dict__.get("v")
        i, v = (None, None) if state is None else state
        i = torch.add(x, _rows(i, x), alpha=self.syn_decay)
        v = torch.add(self.gain * i, _rows(v, x), alpha=self.decay)
        s = (v >= self.threshold).to(x.dtype)
        self.__dict__["v"] = (i, v - v * s)
        return s

    def extra_repr(self) -> str:
        return f"syn_decay={self.syn_decay:g}, decay={self.decay:g}, gain={self.gain:g}, threshold={self.threshold:g}"
