"""The adapter contract: a peer's module plus a :class:`PeerState` that knows where the peer keeps its state."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..models.base import SpikingNetwork
from .explicit import ExplicitState
from .snntorch import SnnTorchState
from .spikingjelly import SpikingJellyState
from .state import PeerState

FRAMEWORKS = ("spikingjelly", "snntorch", "norse", "explicit")
READOUTS = ("sum", "max", "last", "mean")
INPUT_SCALES = ("normalized", "unit", "custom")


def _shape(t) -> str:
    return str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


class _PeerStep(nn.Module):
    def __init__(self, module: nn.Module, output: int | None):
        super().__init__()
        self.peer = module
        self.output = output
        self.state: PeerState | None = None  # set by PeerNetwork (shared with it, not a submodule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state.begin()
        self.state.grow(x.shape[0])
        out = self.state.run(x)
        if isinstance(out, (tuple, list)):
            if self.output is None:  # (spikes, membrane) and the like: which one holds the scores is the user's
                # call, never a guess
                raise ConfigError(f"the network's step returns {len(out)} outputs ("
                                  f"{', '.join(f'{i}: {_shape(o)}' for i, o in enumerate(out))}); say which holds "
                                  "the class scores with --output N (snnTorch's (spk, mem): 0 counts spikes, 1 reads "
                                  "the membrane)")
            if not -len(out) <= self.output < len(out):
                raise ConfigError(f"the network's step returns {len(out)} outputs; --output {self.output} "
                                  "does not exist")
            out = out[self.output]
        if isinstance(out, torch.Tensor) and self.state.time_major and out.dim() >= 2 and out.shape[0] == 1:
            out = out[0]  # a multi-step network's [1, B, K] (a v_seq readout, a SeqToANNContainer head)
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != x.shape[0]:
            raise DataError(f"the network's step must return [B, K] class scores, got {_shape(out)}")
        return out.reshape(out.shape[0], -1)


class Readout:
    """How a peer's per-step outputs become its class scores, as *increments*: the runner sums what a step returns
    (SEENN-I thresholds the softmax of the summed scores), so for a readout other than ``sum`` a step returns the
    change of the readout, and the running sum after t steps is the readout of steps 1..t exactly (to rounding):
    ``max`` the running maximum (Norse's usual decoder), ``last`` the latest output (a membrane read at the end),
    ``mean`` the running mean (the sum divided by t: the same ranking, a flatter softmax). Per sample, so samples
    that join later or leave early keep their own count; compacted with the batch like a neuron's state."""

    def __init__(self, kind: str = "sum"):
        if kind not in READOUTS:
            raise ConfigError(f"readout must be one of {', '.join(READOUTS)}, got {kind!r}", param="readout")
        self.kind = kind
        self.value: torch.Tensor | None = None  # [rows, K]: the readout so far
        self.count: torch.Tensor | None = None  # [rows]: steps seen

    def reset(self) -> None:
        self.value = self.count = None

    def select(self, index: torch.Tensor) -> None:
        if self.value is not None:
            self.value, self.count = self.value[index], self.count[index]

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "sum":
            return out
        rows = out.shape[0]
        if self.value is None:
            self.value, self.count = out.new_zeros(0, out.shape[1]), torch.zeros(0, dtype=torch.long)
        if rows > len(self.value):  # newcomers: nothing read yet
            extra = rows - len(self.value)
            self.value = torch.cat([self.value, out.new_zeros(extra, out.shape[1])])
            self.count = torch.cat([self.count, torch.zeros(extra, dtype=torch.long)])
        fresh = (self.count == 0).unsqueeze(1)
        if self.kind == "max":
            new = torch.where(fresh, out, torch.maximum(self.value, out))
        elif self.kind == "last":
            new = out
        else:  # mean
            c = self.count.unsqueeze(1).to(out.dtype)
            new = (self.value * c + out) / (c + 1)
        step, self.value, self.count = new - self.value, new, self.count + 1
        return step


def input_affine(record: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel ``(gain, shift)`` taking seenn's normalised input ``(x / 255 - data_mean) / data_std`` to the
    ``(x / 255 - mean) / std`` of ``record`` (an input record, :func:`seenn.interop.load.input_record`)."""
    m, s = (torch.tensor(record[k], dtype=torch.float32) for k in ("data_mean", "data_std"))
    pm, ps = (torch.tensor(record[k], dtype=torch.float32) for k in ("mean", "std"))
    if not (pm.shape == ps.shape == m.shape == s.shape) or not (ps > 0).all():
        raise ConfigError(f"mean and std need {len(m)} value(s) each (one per channel), std > 0", param="mean")
    return s / ps, (m - pm) / ps


class InputMap(nn.Module):
    """The peer's own input scaling (an input record: ``normalized`` passes seenn's input as it is, ``unit`` gives
    ``x / 255`` in [0, 1] as SpikingJelly's and snnTorch's tutorials do, ``custom`` its own mean and std), per
    channel, from the run's config (not stored as weights)."""

    def __init__(self, record: dict):
        super().__init__()
        if record["scale"] not in INPUT_SCALES:
            raise ConfigError(f"input_scale must be one of {', '.join(INPUT_SCALES[:2])}, got {record['scale']!r}",
                              param="input_scale")
        gain, shift = input_affine(record)
        self.scale = record["scale"]
        self.identity = self.scale == "normalized"
        self.register_buffer("gain", gain.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        if x.dim() == 5:  # frames [B, T, C, H, W]
            return x * self.gain.unsqueeze(1) + self.shift.unsqueeze(1)
        return x * self.gain + self.shift


class PeerNetwork(SpikingNetwork):
    """A peer's network stepped by seenn. ``encode`` is the identity (the peer takes the image at every step);
    ``step`` runs the peer one timestep; the state object is the network's one "neuron" for the runner."""

    foldable = False  # the inference copy is a plain copy: the peer's own layers, as its framework runs them

    def __init__(self, module: nn.Module, state_cls, output: int | None = None, framework: str = "",
                 readout: str = "sum", input_map: InputMap | None = None):
        super().__init__()
        self.stem = input_map if input_map is not None else nn.Identity()
        self.body = _PeerStep(module, output)
        self.framework = framework
        self._state_cls = state_cls
        self.body.state = state_cls(module)
        self.readout = Readout(readout)

    @property
    def state(self) -> PeerState:
        return self.body.state

    @property
    def input_scale(self) -> str:
        return getattr(self.stem, "scale", "normalized")

    def neurons(self):
        return [self.body.state, self.readout]

    def reset(self) -> None:
        self.body.state.reset()
        self.readout.reset()

    def step(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.readout(self.body(encoded))

    def train(self, mode: bool = True):
        """seenn's own flag only: the peer's module is put in eval mode for each run and given back as it was
        (:meth:`PeerState.begin` / :meth:`PeerState.reset`), never left changed."""
        self.training = mode
        return self

    def __deepcopy__(self, memo):  # the state object follows its module into the copy

        new = PeerNetwork.__new__(PeerNetwork)
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        new.body.state = new._state_cls(new.body.peer)
        new.readout = Readout(self.readout.kind)
        return new

    def forward(self, x: torch.Tensor, timesteps: int, multistep: bool | None = None) -> torch.Tensor:
        """All ``timesteps`` steps from rest, ``[T, B, K]`` (inference only: train in the peer's own framework)."""
        self.reset()
        try:
            e = self.encode(x)
            return torch.stack([self.step(e) for _ in range(timesteps)])
        finally:
            self.reset()


def _threads_state(module: nn.Module) -> bool:
    """``module.forward`` takes a second argument (``forward(x, state)``)."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def detect_framework(module: nn.Module) -> str:
    """The framework whose neurons ``module`` holds (by the modules' packages)."""
    found = set()
    for m in module.modules():
        root = type(m).__module__.split(".")[0]
        if root in ("spikingjelly", "snntorch", "norse"):
            found.add(root)
    if found == {"snntorch"} and _threads_state(module) and any(
            getattr(m, "init_hidden", True) is False for m in module.modules()
            if type(m).__module__.startswith("snntorch")):
        return "explicit"  # snnTorch neurons with init_hidden=False in a forward(x, state): it threads its state
    if len(found) == 1:
        return found.pop()
    if not found:
        raise ConfigError("no SpikingJelly, snnTorch or Norse neuron found in the network; give the framework "
                          "(--framework explicit for a module whose forward(x, state) returns (output, state))")
    raise ConfigError(f"the network mixes neurons of {sorted(found)}; give --framework")


def adapt(module: nn.Module, framework: str | None = None, *, output: int | None = None, readout: str = "sum",
          input_map: InputMap | None = None, step=None, frames: bool = False) -> PeerNetwork:
    """``module`` as a seenn network, stepped in eval mode (the module's own mode, step mode and state are given
    back after each run: the user's live module is never left changed). ``framework``: spikingjelly, snntorch,
    norse or explicit (``forward(x, state) -> (output, state)``, state ``None`` at rest); detected from the
    modules when omitted. ``output``: which element of a tuple the step returns holds the class scores (snnTorch's
    ``(spk, mem)``); a tuple without it is refused, never guessed. ``readout``: how steps combine into scores
    (:class:`Readout`). ``input_map``: the peer's input scaling (:class:`InputMap`; default seenn's normalised).
    ``step``: for a network whose forward is not one step, the method name or ``fn(module, x, state)`` that is
    (``-> (out, state)``, state ``None`` at rest): the explicit adapter. ``frames``: the network reads a
    time-varying input, given to the runner as frames ``[B, T, C, H, W]`` (batch first); without it a 5-D input is
    refused (a time-major ``[T, B, C, H, W]`` tensor would otherwise be read as frames, silently)."""
    if step is not None:
        if framework not in (None, "explicit", "norse"):
            raise ConfigError(f"a step function threads its state explicitly: --framework {framework} does not "
                              "take one")
        framework = "explicit"
    framework = framework or detect_framework(module)
    if framework == "spikingjelly":
        cls = SpikingJellyState
    elif framework == "snntorch":
        cls = SnnTorchState
        cls.check(module)
    elif framework in ("norse", "explicit"):
        from functools import partial

        cls = partial(ExplicitState, call=step) if step is not None else ExplicitState
    else:
        raise ConfigError(f"unknown framework {framework!r}; choose one of {list(FRAMEWORKS)}")
    net = PeerNetwork(module, cls, output, framework, readout, input_map)
    net.takes_frames = bool(frames)
    return net
