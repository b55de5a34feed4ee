"""snnTorch with ``init_hidden=True``: each neuron (``Leaky``, ``Synaptic``, ``Alpha``, ``RLeaky`` ...) keeps its
state in buffers (``mem``, ``syn``, ...) on the module and starts from an empty buffer, which its forward replaces
by zeros of the input's shape. The adapter empties every state buffer to reset, keeps survivors' rows, and gives
newcomers zero rows (snnTorch's rest). Networks that thread the state explicitly (``init_hidden=False``) use the
``explicit`` adapter with a ``forward(x, state) -> (output, state)``."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .state import PeerState, rows_of

STATE_NAMES = ("mem", "syn", "spk", "exc", "inh", "pre", "post")


def _neurons(module):
    try:
        from snntorch._neurons.neurons import SpikingNeuron
    except ImportError:
        raise ConfigError("this network needs snnTorch: pip install snntorch") from None
    return [m for m in module.modules() if isinstance(m, SpikingNeuron)]


class SnnTorchState(PeerState):
    @staticmethod
    def check(module) -> None:
        explicit = [type(m).__name__ for m in _neurons(module) if not m.init_hidden]
        if explicit:
            raise ConfigError(f"snnTorch neurons {sorted(set(explicit))} have init_hidden=False and the network's "
                              "forward does not take a state: name a one-step function with --step (a method, or "
                              "step(net, x, state) -> (out, state) in the file), or build the neurons with "
                              "init_hidden=True")

    def __init__(self, module):
        super().__init__(module)
        self.nodes = _neurons(module)
        self.rows = 0

    def _slots(self):
        for m in self.nodes:
            for k in STATE_NAMES:
                v = m._buffers.get(k) if k in m._buffers else m.__dict__.get(k)
                if isinstance(v, torch.Tensor):
                    yield m, k, v

    def reset(self) -> None:
        for m, k, v in list(self._slots()):
            setattr(m, k, v.new_zeros(0))  # an empty buffer: the next step starts from zeros of its input's shape
        self.rows = 0
        self.restore()

    def select(self, index: torch.Tensor) -> None:
        for m, k, v in list(self._slots()):
            if rows_of(v) == self.rows:
                setattr(m, k, v[index])
        self.rows = len(index)

    def grow(self, rows: int) -> None:
        if rows > self.rows and self.rows:
            for m, k, v in list(self._slots()):
                if rows_of(v) == self.rows:
                    setattr(m, k, torch.cat([v, v.new_zeros(rows - self.rows, *v.shape[1:])]))
        self.rows = rows
