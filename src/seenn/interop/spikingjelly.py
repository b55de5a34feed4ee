"""SpikingJelly (``activation_based``): every stateful node is a ``MemoryModule`` whose registered memories
(``v``, and others such as ``v_seq``) hold one row per sample, with a reset value per memory.

The adapter runs the network in the step mode it is in, never switching it: a single-step network gets ``[B, ...]``
each step; a multi-step one (any module in step mode ``"m"``, a ``SeqToANNContainer``) gets ``[1, B, ...]`` (a
sequence of one step: its nodes carry their memories from call to call, so T calls of one step compute what one
call of T steps does) and its ``[1, B, K]`` output (a ``v_seq`` readout too) is read as ``[B, K]``. It resets the
network with each module's own ``reset()`` (what ``functional.reset_net`` does), keeps survivors' rows of every
tensor memory, and gives newcomers rows filled with the memory's reset value."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .state import PeerState, rows_of


def _memory_modules(module):
    return [m for m in module.modules() if hasattr(m, "_memories") and hasattr(m, "_memories_rv")]


class SpikingJellyState(PeerState):
    def __init__(self, module):
        super().__init__(module)
        try:
            from spikingjelly.activation_based import functional
        except ImportError:
            raise ConfigError("this network needs SpikingJelly: pip install --no-deps spikingjelly") from None
        del functional  # imported to say what is missing; the network is run as it is
        self.nodes = _memory_modules(module)
        self.time_major = any(getattr(m, "step_mode", "s") == "m" for m in module.modules())
        self.rows = 0

    def run(self, x: torch.Tensor):
        return self.module(x.unsqueeze(0)) if self.time_major else self.module(x)

    def reset(self) -> None:
        for m in self.nodes:
            m.reset()
        self.rows = 0
        self.restore()

    def select(self, index: torch.Tensor) -> None:
        for m in self.nodes:
            for k, v in m._memories.items():
                if rows_of(v) == self.rows:
                    m._memories[k] = v[index]
        self.rows = len(index)

    def grow(self, rows: int) -> None:
        if rows > self.rows and self.rows:
            for m in self.nodes:
                for k, v in m._memories.items():
                    if rows_of(v) == self.rows:
                        rv = m._memories_rv[k]
                        pad = (rv.expand(rows - self.rows, *v.shape[1:]) if isinstance(rv, torch.Tensor) and
                               rv.dim() == v.dim() else torch.full((rows - self.rows, *v.shape[1:]), float(rv),
                                                                   dtype=v.dtype, device=v.device))
                        m._memories[k] = torch.cat([v, pad.to(v)])
        self.rows = rows
