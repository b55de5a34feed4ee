"""The spiking network contract every model follows.

A network is ``stem`` (stateless layers before the first neuron: with direct encoding the input is the same
at every step, so its output is computed once per input) followed by ``body`` (everything else; holds the
neurons and ends in the readout that produces one logit vector per step).

- ``forward(x, timesteps)``: training / full evaluation, multi-step, returns ``[T, B, K]`` step logits.
- ``encode(x)`` once, then ``step(e)`` per timestep: single-step inference; the membranes live on the neuron
  modules (:meth:`neurons`), :meth:`reset` clears them; each neuron's ``select`` keeps only some samples
  (batch compaction), and rows of an input past a neuron's membrane are samples that joined at rest (streaming).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..nn.fold import FastAvgPool2d, _is_plain_2x2
from ..nn.neuron import SpikingNeuron, as_fp32, bn_neuron_multistep, compiled, neuron_multistep_fused
from .stateful import _Stateful


class SpikingNetwork(nn.Module):
    stem: nn.Module
    body: nn.Module

    def neurons(self):
        """Every module holding per-sample state: spiking neurons, and the stateful layers of imported graphs."""
        return [m for m in self.modules() if isinstance(m, (SpikingNeuron, _Stateful))]

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
        faster at large batches on CPU (smaller working set); ``multistep=True`` forces the former
        (faster for tiny batches, where per-call overhead dominates).

        A time-varying input (frames of an event stream) is ``[B, T', C, H, W]`` with ``T' >= timesteps``: step t
        runs the stem on frame t (no encode-once shortcut)."""
        frames = x.dim() == 5
        if frames and x.shape[1] < timesteps:
            raise DataError(f"{timesteps} timesteps need as many frames; the input has {x.shape[1]}")
        # neurons with per-channel initial potentials (a converted network's potential correction) run step by
        # step, with or without gradients: the fused multi-step kernels take one initial potential per layer
        per_channel = any(getattr(n, "v_init_map", None) is not None for n in self.neurons())
        if multistep is None:
            multistep = torch.is_grad_enabled() and not per_channel
        if multistep and per_channel:
            raise ConfigError("this network's neurons start from per-channel potentials: they run step by step "
                              "(multistep=False)")
        if not multistep:
            return self._forward_steps(x, timesteps)
        fuse = self.fuse and torch.is_grad_enabled() and isinstance(self.body, nn.Sequential) and len(self.body)
        if frames:  # time-major [T*B, C, H, W]: the stem runs on every frame, the body's first neuron gets a
            # different input every step
            b = x.shape[0]
            e = self.stem(x[:, :timesteps].transpose(0, 1).reshape(timesteps * b, *x.shape[2:]))
            self._set_timesteps(timesteps)
            try:
                out = self._fused_body(e, timesteps, static=False) if fuse else self.body(e)
            finally:
                self._set_timesteps(None)
            return out.reshape(timesteps, b, *out.shape[1:])
        stem_bn = None
        if fuse and isinstance(self.stem, nn.Sequential) and len(self.stem) and _fusable_bn(self.stem[-1]) \
                and isinstance(self.body[0], SpikingNeuron):
            stem_bn = self.stem[-1]  # the stem's batch norm goes into the first neuron's pass
            e = self.stem[:-1](x)
        else:
            e = self.stem(x)
        b = e.shape[0]
        self._set_timesteps(timesteps)
        try:
            if fuse:
                out = self._fused_body(e, timesteps, stem_bn)
            else:
                out = self.body(_every_step(e, timesteps))
        finally:
            self._set_timesteps(None)
        return out.reshape(timesteps, b, *out.shape[1:])

    fuse = True  # training's multi-step pass fuses BN -> neuron -> pool (``_fused_body``); False: module by module

    def _fused_body(self, e: torch.Tensor, timesteps: int, pending_bn: nn.Module | None = None,
                    static: bool = True) -> torch.Tensor:
        """Training's multi-step pass through a sequential body with each top-level neuron fused with its
        neighbours: a training-mode batch norm right before it and a 2x2 average pool right after it run in the
        neuron's own pass (:func:`~seenn.nn.neuron.bn_neuron_multistep`), and the first neuron takes the stem's output
        once for all steps instead of a T-fold copy. The same computation as module by module (the normalised
        input and the full-size spikes are just never stored); other layers run as they are on ``[T*B, ...]``.
        ``static=False``: ``e`` is already time-major ``[T*B, ...]`` (a time-varying input)."""
        mods = list(self.body)
        b = e.shape[0] if static else e.shape[0] // timesteps
        h, i = e, 0
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if pending_bn is None and _fusable_bn(m) and isinstance(nxt, SpikingNeuron) and not static:
                pending_bn, i = m, i + 1  # (a BatchNorm2d's input is an image batch: the fused pass takes it)
                continue
            if isinstance(m, SpikingNeuron):
                h = as_fp32(h)  # under bf16 autocast the membranes (and a fused BN) stay fp32
                pool = _is_2x2_pool(nxt) and h.dim() == 4 and h.shape[2] >= 2 and h.shape[3] >= 2
                if pending_bn is not None:
                    s = bn_neuron_multistep(h, pending_bn, m.params, m.surrogate, timesteps, static, pool)
                else:
                    x = h if static else h.reshape(timesteps, b, *h.shape[1:])
                    s = neuron_multistep_fused(x, m.params, m.surrogate, timesteps if static else None, pool)
                pending_bn = None
                h, static = s.reshape(timesteps * b, *s.shape[2:]), False
                i += 2 if pool else 1
                continue
            if static:
                h, static = _every_step(h, timesteps), False
            h = m(h)
            i += 1
        return _every_step(h, timesteps) if static else h

    def _forward_steps(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        saved = [(n.__dict__.get("v"), n.__dict__.get("_pending")) for n in self.neurons()]  # any running state
        self.reset()
        try:
            if x.dim() == 5:  # frames: each step encodes its own
                return torch.stack([self.step(self.encode(x[:, t])) for t in range(timesteps)])
            e = self.encode(x)
            return torch.stack([self.step(e) for _ in range(timesteps)])
        finally:
            for n, (v, pending) in zip(self.neurons(), saved):  # left as it was
                n.__dict__["v"], n.__dict__["_pending"] = v, pending


def _every_step(e: torch.Tensor, timesteps: int) -> torch.Tensor:
    """The same input for every step, time-major: ``[B, ...] -> [T*B, ...]``."""
    return e.unsqueeze(0).expand(timesteps, *e.shape).reshape(timesteps * e.shape[0], *e.shape[1:])


def _fusable_bn(m) -> bool:
    # eagerly, PyTorch's own batch norm is faster than the fused pass's separate operations
    return type(m) is nn.BatchNorm2d and m.training and compiled()


def _is_2x2_pool(m) -> bool:
    return m is not None and (isinstance(m, FastAvgPool2d) or _is_plain_2x2(m))
