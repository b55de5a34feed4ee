"""SpikingJelly (``activation_based``): every stateful node is a ``MemoryModule`` whose registered memories
(``v``, and others such as ``v_seq``) hold one row per sample, with a reset value per memory.

The adapter puts the network in single-step mode (``functional.set_step_mode(net, "s")``: multi-step nodes and
layers compute the same thing one step at a time), resets it with each module's own ``reset()`` (what
``functional.reset_net`` does), keeps survivors' rows of every tensor memory, and gives newcomers rows filled with
the memory's reset value."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import PeerState, rows_of


def _memory_modules(module):
    return [m for m in module.modules() if hasattr(m, "_memories") and hasattr(m, "_memories_rv")]


class SpikingJellyState(PeerState):
    def __init__(self, module):
        super().__init__(module)
        try:
            from spikingjelly.activation_based import functional
        except ImportError:
            raise ConfigError("this network needs SpikingJelly: pip install --no-deps spikingjelly") from None
        functional.set_step_mode(module, "s")
        self.nodes = _memory_modules(module)
        self.rows = 0

    def reset(self) -> None:
        for m in self.nodes:
            m.reset()
        self.rows = 0

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
