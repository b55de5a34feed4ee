"""The spiking network contract every model follows.

A network is ``stem`` (stateless layers before the first neuron: with direct encoding the input is the same
at every step, so its output is computed once per input) followed by ``body`` (everything else; holds the
neurons and ends in the readout that produces one logit vector per step).

- ``forward(x, timesteps)``: training / full evaluation, multi-step, returns ``[T, B, K]`` step logits.
- ``encode(x)`` once, then ``step(e)`` per timestep: single-step inference; the membranes live on the neuron
  modules (:meth:`neurons`), :meth:`reset` clears them; each neuron's ``select`` keeps only some samples
  (batch compaction) and ``reset_rows`` restarts the rows whose slots new samples take (streaming).
"""

from __future__ import annotations

import torch
from torch import nn

from ..neuron import SpikingNeuron


class SpikingNetwork(nn.Module):
    stem: nn.Module
    body: nn.Module

    def neurons(self):
        return [m for m in self.modules() if isinstance(m, SpikingNeuron)]

    def _set_timesteps(self, timesteps: int | None) -> None:
        for n in self.neurons():
            n.timesteps = timesteps

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def ann_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One pass, ``[B, K]``: the network as an ANN (models built with ``neuron="qcfs"``)."""
        return self.body(self.stem(x))

    def reset(self) -> None:
        for n in self.neurons():
            n.reset()

    def step(self, encoded: torch.Tensor) -> torch.Tensor:
        """One timestep on the encoded input ``[B, ...]``; returns that step's logits ``[B, K]``.
        (Single-step is the neurons' resting mode: :meth:`forward` switches to multi-step and back.)"""
        return self.body(encoded)

    def forward(self, x: torch.Tensor, timesteps: int, multistep: bool | None = None) -> torch.Tensor:
        """All ``timesteps`` steps; returns each step's own logits ``[T, B, K]``.

        Multi-step mode runs the steps at once on ``[T*B, ...]`` (fused BPTT): the default with gradients
        (training). Without gradients the default runs them one after another on ``[B, ...]``: the same numbers,
        about 1.5x faster at large batches on CPU (smaller working set); ``multistep=True`` forces the former
        (faster for tiny batches, where per-call overhead dominates)."""
        if multistep is None:
            multistep = torch.is_grad_enabled()
        if not multistep:
            return self._forward_steps(x, timesteps)
        e = self.stem(x)
        b = e.shape[0]
        e = e.unsqueeze(0).expand(timesteps, *e.shape).reshape(timesteps * b, *e.shape[1:])
        self._set_timesteps(timesteps)
        try:
            out = self.body(e)
        finally:
            self._set_timesteps(None)
        return out.reshape(timesteps, b, *out.shape[1:])

    def _forward_steps(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        saved = [n.v for n in self.neurons()]  # leave any running state as it was
        self.reset()
        try:
            e = self.encode(x)
            return torch.stack([self.step(e) for _ in range(timesteps)])
        finally:
            for n, v in zip(self.neurons(), saved):
                n.__dict__["v"] = v
