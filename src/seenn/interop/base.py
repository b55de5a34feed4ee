"""The adapter contract: a peer's module plus a :class:`PeerState` that knows where the peer keeps its state."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..models.base import SpikingNetwork

FRAMEWORKS = ("spikingjelly", "snntorch", "norse", "explicit")


class PeerState:
    """Where a peer network keeps its state between timesteps, seen as rows of samples. The runner calls
    :meth:`reset` before and after a run and :meth:`select` when samples leave; the step calls :meth:`grow` before
    each peer step (rows past the state's are newcomers that start at rest) and :meth:`run` to step the peer."""

    def __init__(self, module: nn.Module):
        self.module = module

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


class _PeerStep(nn.Module):
    def __init__(self, module: nn.Module, output: int):
        super().__init__()
        self.peer = module
        self.output = output
        self.state: PeerState | None = None  # set by PeerNetwork (shared with it, not a submodule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state.grow(x.shape[0])
        out = self.state.run(x)
        if isinstance(out, (tuple, list)):
            if not -len(out) <= self.output < len(out):
                raise ConfigError(f"the network's step returns {len(out)} outputs; --peer-output {self.output} "
                                  "does not exist")
            out = out[self.output]
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != x.shape[0]:
            raise DataError(f"the network's step must return [B, K] class scores, got "
                            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        return out.reshape(out.shape[0], -1)


class PeerNetwork(SpikingNetwork):
    """A peer's network stepped by seenn. ``encode`` is the identity (the peer takes the image at every step);
    ``step`` runs the peer one timestep; the state object is the network's one "neuron" for the runner."""

    foldable = False  # the inference copy is a plain copy: the peer's own layers, as its framework runs them

    def __init__(self, module: nn.Module, state_cls, output: int = 0, framework: str = ""):
        super().__init__()
        self.stem = nn.Identity()
        self.body = _PeerStep(module, output)
        self.framework = framework
        self._state_cls = state_cls
        self.body.state = state_cls(module)

    @property
    def state(self) -> PeerState:
        return self.body.state

    def neurons(self):
        return [self.body.state]

    def reset(self) -> None:
        self.body.state.reset()

    def __deepcopy__(self, memo):  # the state object follows its module into the copy
        import copy

        new = PeerNetwork.__new__(PeerNetwork)
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        new.body.state = new._state_cls(new.body.peer)
        return new

    def forward(self, x: torch.Tensor, timesteps: int, multistep: bool | None = None) -> torch.Tensor:
        """All ``timesteps`` steps from rest, ``[T, B, K]`` (inference only: train in the peer's own framework)."""
        self.reset()
        try:
            return torch.stack([self.step(x) for _ in range(timesteps)])
        finally:
            self.reset()


def detect_framework(module: nn.Module) -> str:
    """The framework whose neurons ``module`` holds (by the modules' packages)."""
    found = set()
    for m in module.modules():
        root = type(m).__module__.split(".")[0]
        if root in ("spikingjelly", "snntorch", "norse"):
            found.add(root)
    if len(found) == 1:
        return found.pop()
    if not found:
        raise ConfigError("no SpikingJelly, snnTorch or Norse neuron found in the network; give the framework "
                          "(--framework explicit for a module whose forward(x, state) returns (output, state))")
    raise ConfigError(f"the network mixes neurons of {sorted(found)}; give --framework")


def adapt(module: nn.Module, framework: str | None = None, *, output: int = 0) -> PeerNetwork:
    """``module`` (in eval mode) as a seenn network. ``framework``: spikingjelly, snntorch, norse or explicit
    (``forward(x, state) -> (output, state)``, state ``None`` at rest); detected from the modules when omitted.
    ``output``: which element of a tuple the step returns holds the class scores (snnTorch's ``(spk, mem)``)."""
    framework = framework or detect_framework(module)
    if framework == "spikingjelly":
        from .spikingjelly import SpikingJellyState as cls
    elif framework == "snntorch":
        from .snntorch import SnnTorchState as cls
        cls.check(module)
    elif framework in ("norse", "explicit"):
        from .explicit import ExplicitState as cls
    else:
        raise ConfigError(f"unknown framework {framework!r}; choose one of {list(FRAMEWORKS)}")
    return PeerNetwork(module.eval(), cls, output, framework).eval()
