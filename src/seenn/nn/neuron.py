"""Spiking neurons: pure step functions, a fused multi-step autograd function, and thin modules.

One timestep of a neuron with decay ``d`` (0.5 for the paper's LIF, 1.0 for IF) and threshold ``theta``::

    h_t = d * v_{t-1} + x_t                  # charge
    s_t = H(h_t - theta)                     # fire (Heaviside forward, surrogate gradient backward)
    v_t = h_t * (1 - s_t)                    # hard reset to 0            (LIF, directly trained)
    v_t = h_t - theta * s_t                  # soft reset by subtraction  (IF, converted from ANNs)

The surrogate gradient reads the potential in units of the threshold, ``dH/dh ~ g((h_t - theta) / theta) / theta``
(the same as ``g(h_t - theta)`` at theta = 1, every directly trained LIF here): a layer's weights and threshold
scaled together then train alike, and the soft reset's ``1 - theta * dH/dh`` stays in [1 - g_max, 1], where the
absolute form, ``1 - theta g``, grows past -1 for the thresholds of a converted network (2 to 6 after folding) and
BPTT through its membranes explodes.

Tensor layouts: single-step ``[B, ...]``; multi-step ``[T, B, ...]``. Inside a network in multi-step mode the
neurons receive ``[T*B, ...]`` (time-major flattening) so every stateless layer runs once over all timesteps.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ConfigError
from .fold import pool2x2
from .surrogate import Surrogate, make_surrogate, spike

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
    theta = params.threshold
    s = spike(h - theta if theta == 1.0 else (h - theta) / theta, surrogate)  # (same sign: the same spikes)
    v_new = torch.sub(h, s, alpha=params.threshold) if params.soft_reset else h * (1.0 - s)
    return s, v_new


def _spikes(h: torch.Tensor, params: NeuronParams) -> torch.Tensor:
    # the comparison writes float spikes directly (one pass; a bool mask converted afterwards costs two)
    return torch.ge(h, params.threshold, out=torch.empty_like(h))


def _fire_and_reset(h: torch.Tensor, params: NeuronParams, h_is_scratch: bool, spikes_out=None, fired=False):
    """Forward-only fire and reset of charged potentials ``h`` (no autograd): returns ``(spikes, membrane)``.
    With ``h_is_scratch`` the membrane is written over ``h``; with ``fired``, ``spikes_out`` already holds the
    spikes of ``h`` (a deferred reset)."""
    # the hard reset is h - h * s in one fused pass: exactly h where s = 0 and 0 where s = 1, as h * (1 - s)
    s = torch.empty_like(h) if spikes_out is None else spikes_out
    if not fired:
        torch.ge(h, params.threshold, out=s)
    if params.soft_reset:
        v = h.sub_(s, alpha=params.threshold) if h_is_scratch else torch.sub(h, s, alpha=params.threshold)
    else:
        v = h.addcmul_(h, s, value=-1.0) if h_is_scratch else torch.addcmul(h, h, s, value=-1.0)
    return s, v


def as_fp32(x: torch.Tensor) -> torch.Tensor:
    """A current computed in reduced precision (bf16 / fp16 autocast) as fp32, for the membrane it charges."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


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


def unpool2x2(g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The backward of :func:`~seenn.nn.fold.pool2x2` onto an input of ``size`` (H, W): a quarter of each output
    gradient on each input of its window, 0 on a row / column the pool left out (as an expand, which torch.compile
    folds into the consumer's loop: no full-size copy)."""
    b, c, h2, w2 = g.shape
    up = (g * 0.25)[:, :, :, None, :, None].expand(b, c, h2, 2, w2, 2).reshape(b, c, 2 * h2, 2 * w2)
    if size != (2 * h2, 2 * w2):
        up = torch.nn.functional.pad(up, (0, size[1] - 2 * w2, 0, size[0] - 2 * h2))
    return up


def _train_forward(x_seq: torch.Tensor, decay: float, threshold: float, soft_reset: bool, v_init: float,
                   timesteps: int | None = None, pool: bool = False):
    """Spikes and charged potentials over all steps (the arithmetic of :func:`neuron_step`). ``x_seq``: ``[T, B,
    ...]``, or with ``timesteps`` one input ``[B, ...]`` for every step (direct encoding: never copied T times).
    ``pool``: the spikes come back 2x2 average-pooled (the layer after the neuron, done while they are at hand)."""
    static = timesteps is not None
    steps = timesteps if static else x_seq.shape[0]
    v = torch.full_like(x_seq if static else x_seq[0], v_init * threshold)
    spikes, potentials = [], []
    for t in range(steps):
        h = torch.add(x_seq if static else x_seq[t], v, alpha=decay)
        fired = h >= threshold
        s = fired.to(h.dtype)
        v = torch.sub(h, s, alpha=threshold) if soft_reset else h * (1.0 - s)
        spikes.append(pool2x2(s) if pool else s)
        potentials.append(h)
    return torch.stack(spikes), torch.stack(potentials)


def _train_backward(h_seq: torch.Tensor, grad_s: torch.Tensor, decay: float, threshold: float, soft_reset: bool,
                    surrogate: Surrogate, static: bool = False, pool: bool = False) -> torch.Tensor:
    """BPTT through the neuron: dL/dx for every step (``static``: summed over the steps, for the one shared
    input), from dL/ds (``pool``: dL/d(pooled s)) and the saved potentials."""
    grads = []
    total = None
    grad_v = None  # dL/dv_t flowing back from step t+1
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h = h_seq[t]
        sg = (surrogate.grad(h - threshold) if threshold == 1.0
              else surrogate.grad((h - threshold) / threshold) / threshold)
        gh = (unpool2x2(grad_s[t], tuple(h.shape[-2:])) if pool else grad_s[t]) * sg
        if grad_v is not None:
            if soft_reset:
                dv_dh = 1.0 - threshold * sg
            else:
                dv_dh = (1.0 - (h >= threshold).to(h.dtype)) - h * sg
            gh = gh + grad_v * dv_dh
        if static:
            total = gh if total is None else total + gh
        else:
            grads.append(gh)
        grad_v = decay * gh
    return total if static else torch.stack(grads[::-1])


def _bn_input(y, weight, bias, mean, invstd, steps: int, static: bool):
    alpha = invstd * weight
    z = y * alpha[None, :, None, None] + (bias - mean * alpha)[None, :, None, None]
    return z if static else z.reshape(steps, -1, *z.shape[1:])


def _bn_train_forward(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, decay: float,
                      threshold: float, soft_reset: bool, v_init: float, steps: int, static: bool, pool: bool):
    """Training-mode batch norm of ``y`` with the neuron (and pool) after it, in one pass: neither the normalised
    input nor the potentials are stored (the backward recomputes them from ``y``, which batch norm keeps anyway:
    a quarter less training-step memory on the Fashion-MNIST net in about the same time). ``y``: ``[T*B, C, H, W]``
    (time-major), or with ``static`` the one input ``[B, C, H, W]`` of all ``steps``. Returns the neuron's output
    and the batch mean, biased variance and 1/std. The statistics are those of ``nn.BatchNorm2d`` over the same
    tensor."""
    dims = (0, 2, 3)
    mean = y.mean(dims)
    var = (y - mean[None, :, None, None]).square().mean(dims)
    invstd = torch.rsqrt(var + eps)
    x = _bn_input(y, weight, bias, mean, invstd, steps, static)
    s, _ = _train_forward(x, decay, threshold, soft_reset, v_init, steps if static else None, pool)
    return s, mean, var, invstd


def _bn_train_backward(grad_s: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                       weight: torch.Tensor, bias: torch.Tensor, decay: float, threshold: float, soft_reset: bool,
                       v_init: float, surrogate: Surrogate, steps: int, static: bool, pool: bool):
    """The backward of :func:`_bn_train_forward`: dL/dy, dL/dweight, dL/dbias."""
    x = _bn_input(y, weight, bias, mean, invstd, steps, static)
    _, h_seq = _train_forward(x, decay, threshold, soft_reset, v_init, steps if static else None, False)
    gz = _train_backward(h_seq, grad_s, decay, threshold, soft_reset, surrogate, static, pool).reshape(y.shape)
    dims = (0, 2, 3)
    xhat = (y - mean[None, :, None, None]) * invstd[None, :, None, None]
    sum_g = gz.sum(dims)
    sum_gx = (gz * xhat).sum(dims)
    n = y.numel() // y.shape[1]
    dy = (gz - (sum_g / n)[None, :, None, None] - xhat * (sum_gx / n)[None, :, None, None]) \
        * (weight * invstd)[None, :, None, None]
    return dy, sum_gx, sum_g


# Optional torch.compile of the two loops above: the elementwise work of all T steps fuses into a few C++ loops
# (several times faster on CPU, after a one-off compile of some seconds per layer shape). Off by default; turned on by
# set_compile(True), `seenn train --compile`, or SEENN_COMPILE=1. A failed compile (no C++ compiler) falls back.
_compile = {"enabled": os.environ.get("SEENN_COMPILE", "0") == "1", "fwd": None, "bwd": None, "failed": False}


def set_compile(enabled: bool) -> None:
    _compile["enabled"] = bool(enabled)


_EAGER = {"fwd": _train_forward, "bwd": _train_backward, "bn_fwd": _bn_train_forward, "bn_bwd": _bn_train_backward}


def compiled() -> bool:
    """Whether the neurons' training loops run through torch.compile now."""
    return _compile["enabled"] and not _compile["failed"]


def _kernel(which: str):
    eager = _EAGER[which]
    if not _compile["enabled"] or _compile["failed"]:
        return eager
    if _compile.get(which) is None:
        # one kernel per layer shape (static shapes: vectorised loops with no size checks, faster for the whole
        # training step than shape-generic kernels), so a net has a few per function: allow them
        import torch._dynamo.config as dynamo_config

        for name in ("recompile_limit", "cache_size_limit"):
            if getattr(dynamo_config, name, 64) < 64:
                setattr(dynamo_config, name, 64)
        _compile[which] = torch.compile(eager, dynamic=False)
    return _compile[which]


def _call(which: str, *args):
    fn = _kernel(which)
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any compiler failure: warn once, run eagerly
        if fn is _EAGER[which]:
            raise
        _compile["failed"] = True
        warnings.warn(f"torch.compile of the neuron failed ({type(e).__name__}); running without it")
        return _EAGER[which](*args)


class _FusedNeuron(torch.autograd.Function):
    """All T steps in one autograd node: forward keeps only the charged potentials h_t, backward runs BPTT
    in reverse. Same gradients as autograd through :func:`neuron_step`, without a per-step graph. Optionally
    with a static input (``timesteps``) and the 2x2 pool after the neuron fused in (``pool``)."""

    @staticmethod
    def forward(ctx, x, params: NeuronParams, surrogate: Surrogate, timesteps: int | None, pool: bool):
        with torch.no_grad():
            s_out, h_seq = _call("fwd", x, params.decay, params.threshold, params.soft_reset, params.v_init,
                                 timesteps, pool)
        ctx.save_for_backward(h_seq)
        ctx.params, ctx.surrogate, ctx.static, ctx.pool = params, surrogate, timesteps is not None, pool
        return s_out

    @staticmethod
    def backward(ctx, grad_s):
        (h_seq,) = ctx.saved_tensors
        p: NeuronParams = ctx.params
        with torch.no_grad():
            grad_x = _call("bwd", h_seq, grad_s.contiguous(), p.decay, p.threshold, p.soft_reset, ctx.surrogate,
                           ctx.static, ctx.pool)
        return grad_x, None, None, None, None


def neuron_multistep(x_seq: torch.Tensor, params: NeuronParams, surrogate: Surrogate) -> torch.Tensor:
    """Multi-step run ``[T, B, ...] -> [T, B, ...]`` with the fused autograd function."""
    if not (torch.is_grad_enabled() and x_seq.requires_grad):  # inference: keep nothing for a backward pass
        return _forward_loop(x_seq, params, keep_potentials=False)[0]
    return _FusedNeuron.apply(x_seq, params, surrogate, None, False)


def neuron_multistep_fused(x: torch.Tensor, params: NeuronParams, surrogate: Surrogate, timesteps: int | None,
                           pool: bool) -> torch.Tensor:
    """Training's multi-step run with its neighbours fused in: ``x`` is ``[T, B, C, H, W]``, or with ``timesteps``
    the one input ``[B, C, H, W]`` of every step (the stem's output under direct encoding: not copied T times, its
    gradient summed inside the backward); ``pool`` returns the 2x2 average-pooled spikes (``[T, B, C, H//2, W//2]``)
    without the full-size spikes ever being stored. The same numbers as the neuron followed by the pool."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        with torch.no_grad():
            return _call("fwd", x, params.decay, params.threshold, params.soft_reset, params.v_init, timesteps,
                         pool)[0]
    return _FusedNeuron.apply(x, params, surrogate, timesteps, pool)


class _FusedBNNeuron(torch.autograd.Function):
    """Batch norm (training mode), the neuron over all steps and optionally the pool, as one autograd node."""

    @staticmethod
    def forward(ctx, y, weight, bias, eps, params: NeuronParams, surrogate: Surrogate, steps: int, static: bool,
                pool: bool):
        with torch.no_grad():
            s_out, mean, var, invstd = _call("bn_fwd", y, weight, bias, eps, params.decay, params.threshold,
                                             params.soft_reset, params.v_init, steps, static, pool)
        ctx.save_for_backward(y, mean, invstd, weight, bias)
        ctx.params, ctx.surrogate, ctx.steps, ctx.static, ctx.pool = params, surrogate, steps, static, pool
        ctx.mark_non_differentiable(mean, var)
        return s_out, mean, var

    @staticmethod
    def backward(ctx, grad_s, _grad_mean, _grad_var):
        y, mean, invstd, weight, bias = ctx.saved_tensors
        p: NeuronParams = ctx.params
        with torch.no_grad():
            dy, dw, db = _call("bn_bwd", grad_s.contiguous(), y, mean, invstd, weight, bias, p.decay, p.threshold,
                               p.soft_reset, p.v_init, ctx.surrogate, ctx.steps, ctx.static, ctx.pool)
        return dy, dw, db, None, None, None, None, None, None


def bn_neuron_multistep(y: torch.Tensor, bn: nn.BatchNorm2d, params: NeuronParams, surrogate: Surrogate,
                        steps: int, static: bool, pool: bool) -> torch.Tensor:
    """``bn`` (in training mode) then :func:`neuron_multistep_fused`, in one pass; ``y`` is ``[T*B, C, H, W]`` or,
    with ``static``, the ``[B, C, H, W]`` of every step. Updates ``bn``'s running statistics as ``nn.BatchNorm2d``
    does (from the statistics of the tensor it normalises). Returns ``[T, B, ...]`` spikes (pooled with ``pool``)."""
    c = y.shape[1]
    weight = bn.weight if bn.affine else torch.ones(c, dtype=y.dtype, device=y.device)
    bias = bn.bias if bn.affine else torch.zeros(c, dtype=y.dtype, device=y.device)
    if torch.is_grad_enabled() and (y.requires_grad or weight.requires_grad or bias.requires_grad):
        s, mean, var = _FusedBNNeuron.apply(y, weight, bias, bn.eps, params, surrogate, steps, static, pool)
    else:
        with torch.no_grad():
            s, mean, var, _ = _call("bn_fwd", y, weight, bias, bn.eps, params.decay, params.threshold,
                                    params.soft_reset, params.v_init, steps, static, pool)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            factor = bn.momentum
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if bn.momentum is None:  # cumulative average
                    factor = 1.0 / float(bn.num_batches_tracked)
            n = y.numel() // c
            bn.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
            bn.running_var.mul_(1.0 - factor).add_(var * (n / max(n - 1, 1)), alpha=factor)
    return s


# --------------------------------------------------------------------------------------------- modules


class SpikingNeuron(nn.Module):
    """A neuron layer. Its membrane lives on the module (``self.v``), one row per sample, so a runner can
    drop finished samples with :meth:`select`. ``timesteps`` is None in single-step mode; in multi-step mode
    it is T and the input is ``[T*B, ...]`` (time-major)."""

    def __init__(self, params: NeuronParams = LIF_PARAMS, surrogate: str = "tanh", channels: int | None = None):
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
        # ``channels``: one initial potential per channel (a fraction of the threshold, as ``v_init``), set by a
        # converted network's potential correction (seenn.conversion.bias) and carried by checkpoints
        self.register_buffer("v_init_map", None if channels is None else torch.full((int(channels),),
                                                                                     float(params.v_init)))
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
        instead of on every step (a device sync, and a graph break under torch.compile); and defer the reset after
        firing to the next step (a sample that leaves after this step never pays for it: with most samples leaving
        after step 1 that is about one pass in six over every spiking layer's tensors)."""
        self.__dict__["_frozen"] = None
        self.__dict__["_frozen"] = self.params
        self.__dict__["_defer"] = True  # (a compiled step turns it off: there the reset fuses into the firing)

    # The membrane is a plain attribute (not a buffer: it is per batch, not part of the model), written through
    # __dict__ because nn.Module.__setattr__ is slow and this runs after every step. In inference an input may have
    # more rows than the membrane: the rows past it belong to samples that joined the batch at rest. A frozen neuron may instead
    # hold ``_pending = (h, s, owned)``: the charged potential and the spikes of its last step, the reset not done
    # yet (``owned``: h may be written over); :meth:`membrane` settles it.
    def reset(self) -> None:
        self.__dict__["v"] = None
        self.__dict__["_pending"] = None

    @property
    def starts_at_zero(self) -> bool:
        """Every membrane starts at 0 (no initial potential to charge first)."""
        return self.v_init == 0.0 and self.v_init_map is None

    def initial(self, like: torch.Tensor) -> torch.Tensor:
        """The membrane at rest for inputs like ``like`` (per channel where the neuron has a ``v_init_map``)."""
        if self.v_init_map is None:
            return initial_membrane(like, self.params)
        shape = (1, -1) + (1,) * (like.dim() - 2)
        start = self.v_init_map.to(like.dtype).view(shape) * self.params.threshold
        return torch.empty_like(like).copy_(start.expand_as(like))

    def membrane(self) -> torch.Tensor | None:
        """The membrane after the last step (settling a deferred reset), or None at rest."""
        pending = self.__dict__.get("_pending")
        if pending is not None:
            h, s, owned = pending
            self.__dict__["_pending"] = None
            self.__dict__["v"] = _fire_and_reset(h, self.params, owned, spikes_out=s, fired=True)[1]
        return self.__dict__.get("v")

    def select(self, index: torch.Tensor) -> None:
        pending = self.__dict__.get("_pending")
        if pending is not None:  # the survivors' rows only; the reset stays deferred
            self.__dict__["_pending"] = (pending[0][index], pending[1][index], True)
        elif self.v is not None:
            self.__dict__["v"] = self.v[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.params
        x = as_fp32(x)
        if self.timesteps is None:
            if torch.is_grad_enabled() and x.requires_grad:
                v = self.membrane()
                v = self.initial(x) if v is None else v
                s, self.__dict__["v"] = neuron_step(x, v, params, self.surrogate)
                return s
            lazy = self.__dict__.get("_defer", False)
            v = self.membrane()
            if v is None and self.starts_at_zero:  # first inference step from rest: h = x, which the caller
                # may still hold (the encoded input is reused every step), so it is not written over
                h, owned = x, False
            elif v is not None and len(v) < len(x):  # rows past the membrane's: samples that joined at rest
                # (continuous batching); only the others are charged
                k = len(v)
                h = torch.empty_like(x)
                torch.add(x[:k], v, alpha=params.decay, out=h[:k])
                if self.starts_at_zero:
                    h[k:] = x[k:]
                else:
                    torch.add(x[k:], self.initial(x[k:]), alpha=params.decay, out=h[k:])
                owned = True
            else:  # inference: no autograd node, fewer passes over the tensor
                v = self.initial(x) if v is None else v
                h, owned = torch.add(x, v, alpha=params.decay), True
            if lazy:
                s = _spikes(h, params)
                self.__dict__["v"], self.__dict__["_pending"] = None, (h, s, owned)
            else:
                s, self.__dict__["v"] = _fire_and_reset(h, params, h_is_scratch=owned)
            return s
        t = self.timesteps
        if self.v_init_map is not None:
            raise ConfigError("a neuron with per-channel initial potentials (a converted network's potential "
                              "correction) runs step by step, not in multi-step (training) mode")
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
