"""Where a peer network keeps its state between timesteps, seen as rows of samples: the contract each framework's
module implements (``spikingjelly``, ``snntorch``, ``explicit``)."""

from __future__ import annotations

import torch
from torch import nn


class PeerState:
    """Where a peer network keeps its state between timesteps, seen as rows of samples. The runner calls
    :meth:`reset` before and after a run and :meth:`select` when samples leave; the step calls :meth:`grow` before
    each peer step (rows past the state's are newcomers that start at rest) and :meth:`run` to step the peer."""

    time_major = False  # the peer takes [1, B, ...] per step (SpikingJelly multi-step) and returns [1, B, K]

    def __init__(self, module: nn.Module):
        self.module = module
        self._modes: list | None = None  # each submodule's training flag while a run holds the module in eval

    def begin(self) -> None:
        """Before a run's first step: the module in eval mode, its own flags kept to give back."""
        if self._modes is None:
            self._modes = [(m, m.training) for m in self.module.modules()]
            self.module.eval()

    def restore(self) -> None:
        """After a run (every reset): the module's training flags as the user had them."""
        if self._modes is not None:
            for m, flag in self._modes:
                m.training = flag
            self._modes = None

    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def select(self, index: torch.Tensor) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def grow(self, rows: int) -> None:
        """Make room for ``rows`` samples: rows past the current state start at rest."""

    def run(self, x: torch.Tensor):
        return self.module(x)


def rows_of(t) -> int | None:
    return t.shape[0] if isinstance(t, torch.Tensor) and t.dim() >= 1 else None
