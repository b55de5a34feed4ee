"""The early-exit runner: steps the SNN one timestep at a time and drops each sample from the batch, and from
every neuron's membrane, the moment its exit rule fires. Saved timesteps are saved compute.

Also the post-hoc path (:func:`posthoc_exits`) that scores a full ``[N, T, K]`` step-logit matrix; it serves the
threshold sweep, the per-sample dump and the oracle, and the tests hold the runner to it sample for sample.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..exits import ExitRule
from ..io.schema import bounded
from ..models import SpikingNetwork
from ..nn.fold import for_compiler
from .inference import inference_model


@dataclass
class ExitResult:
    prediction: torch.Tensor  # [N] int64
    exit_timestep: torch.Tensor  # [N] int64, 1-based
    score: torch.Tensor  # [N] the rule's score at the exit step
    logits: torch.Tensor  # [N, K] logits summed over the steps run


def check_input(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x) or x.dim() not in (4, 5):
        raise DataError(f"expected a float image batch [B, C, H, W] (or frames [B, T, C, H, W]), got "
                        f"{tuple(x.shape)} {x.dtype}")
    if x.shape[0] == 0:
        raise DataError("the input batch is empty")
    # one sum decides for finite inputs (a NaN or Inf anywhere makes it non-finite); the exact test only runs if it
    # does not (it costs several times the sum at batch 1)
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise DataError("the input holds NaN or Inf values")


class EarlyExitRunner:
    """``EarlyExitRunner(model, rule, max_timesteps).predict(x)`` -> :class:`ExitResult`.

    - :meth:`predict`: one batch; exited samples leave the batch after every step.
    - :meth:`stream`: continuous batching: a fixed number of slots, and when a sample exits the next input
      takes its slot, so the batch stays full.
    - :meth:`predict_dataset`: a dataset, batch after batch.

    ``precision``: ``"fp32"``, ``"bf16"`` or ``"int8"`` for the convolutions that read spikes (``seenn.runtime.precision``;
    membranes, the stem and the summed logits stay fp32).
    """

    def __init__(self, model: SpikingNetwork, rule: ExitRule, max_timesteps: int, device: str | torch.device = "cpu",
                 fold_bn: bool = True, compile: bool = False, precision: str = "fp32"):

        bounded("timesteps", max_timesteps, "max_timesteps")
        thresholds = getattr(rule, "thresholds", None)
        if thresholds is not None and len(thresholds) != max_timesteps:
            raise ConfigError(f"the rule has {len(thresholds)} per-step thresholds for {max_timesteps} timesteps")
        model = model.to(device).eval()
        # BN folded into the convs, fast pools; the spiking layers in ``precision`` (an inference copy passed in keeps
        # the precision it was made with: "fp32" adds nothing)
        self.model = inference_model(model, precision) if fold_bn else model
        self.precision = getattr(self.model, "precision", "fp32")
        self.neurons = self.model.neurons()  # walked once here, not on every call (the model is not rewired later)
        self.rule = rule
        self.max_timesteps = int(max_timesteps)
        self.device = torch.device(device)
        # compile: the single-sample path's step through torch.compile (one graph for the first step from rest, one
        # for the others; the membranes stay on the neurons). It removes part of the per-operation overhead (most of
        # the rest is convolution); batches keep the eager step (their sizes change as samples leave).
        self._single_step = CompiledStep(self.model) if compile else None

    def predict(self, x: torch.Tensor) -> ExitResult:
        """One batch: images ``[B, C, H, W]`` (the same input every step) or frames ``[B, T, C, H, W]`` (a
        time-varying input: step t reads frame t, so a sample that leaves early never reads the rest)."""
        if x.dim() in (4, 5) and x.shape[0] == 1 and getattr(self.rule, "budget", None) is None:
            return self._run_one(x)  # latency path: no batch bookkeeping
        return self._run(iter([x]), slots=x.shape[0], total=x.shape[0])

    @torch.inference_mode()
    def _run_one(self, x: torch.Tensor) -> ExitResult:
        """One sample: the same steps and decisions as :meth:`_run`, without compaction, slots or index
        bookkeeping (at batch 1 that bookkeeping costs about as much as a small network's step)."""
        check_input(x)
        model, rule, t_max = self.model, self.rule, self.max_timesteps
        frames = _check_frames(x, t_max, model)
        for nrn in self.neurons:
            nrn.reset()
        step = self._single_step
        try:
            x = x.to(self.device)
            encoded = None if frames else _encode(model, x)
            summed = None
            for t in range(1, t_max + 1):
                if frames:
                    encoded = _encode(model, x[:, t - 1])
                out = _step(model, encoded) if step is None else step(encoded)
                summed = out if summed is None else summed.add_(out)
                score = rule.score(summed, t)
                if t == t_max or bool(rule.exits(score, t)):
                    break
        finally:
            for nrn in self.neurons:
                nrn.reset()
        return ExitResult(summed.argmax(dim=1).cpu(), torch.tensor([t]), score.cpu(), summed.cpu())

    def predict_dataset(self, data, batch_size: int = 256) -> ExitResult:
        """A whole dataset, batch after batch, each shrinking as its samples leave. On CPU this is the fastest way
        through it: a fresh batch's first step (the step most samples leave after) takes shortcuts that the
        mixed-age slots of continuous batching (:meth:`stream`) cannot: no charge from a resting membrane, and no
        reset for samples that leave (docs/benchmarks.md, the runner's section)."""
        parts = [self._run(iter([x]), slots=len(x), total=len(x)) for x, _ in data.batches(batch_size)]
        if not parts:
            raise DataError("the input is empty")
        if len(parts) == 1:
            return parts[0]
        return ExitResult(*(torch.cat([getattr(p, f) for p in parts]) for f in ExitResult.__dataclass_fields__))

    def stream(self, inputs, slots: int = 256, total: int | None = None) -> ExitResult:
        """Continuous batching over an iterable of input batches (any sizes); results in input order."""
        if slots < 1:
            raise DataError(f"slots must be >= 1, got {slots}")
        return self._run(iter(inputs), slots=slots, total=total)

    @torch.inference_mode()
    def _run(self, chunks, slots: int, total: int | None) -> ExitResult:
        model, rule, t_max, dev = self.model, self.rule, self.max_timesteps, self.device
        neurons = self.neurons
        feed = _Feed(chunks, dev)
        done_parts = []  # (index, prediction, timestep, score, logits) of samples that have exited
        for nrn in neurons:
            nrn.reset()
        try:
            x, index = feed.take(slots)
            frames = index is not None and _check_frames(x, t_max, model)
            # direct encoding: computed once per input; frames (a time-varying input) are kept and each step
            # encodes the frame each sample is at
            encoded = (x if frames else _encode(model, x)) if index is not None else None
            # a rule that decides up front (SEENN-II) gives every sample its budget of steps before step 1
            planner = getattr(rule, "budget", None)
            budget = None if (planner is None or index is None) else planner(x).clamp(1, t_max)
            summed = None
            steps = None if index is None else torch.zeros(len(index), dtype=torch.long, device=dev)
            while index is not None:
                if frames:
                    out = _step(model, _encode(model, encoded[torch.arange(len(index), device=dev), steps]))
                else:
                    out = _step(model, encoded)
                summed = out if summed is None else summed + out
                steps += 1
                score = rule.score(summed, steps)
                done = rule.exits(score, steps) | (steps >= (t_max if budget is None else budget))
                if not done.any():
                    continue
                rows = done.nonzero().squeeze(1)
                done_parts.append((index[rows], summed[rows].argmax(dim=1), steps[rows], score[rows], summed[rows]))
                x, new_index = feed.take(len(rows))
                k = 0 if new_index is None else len(new_index)
                if k == 0 and len(rows) == len(index):
                    break
                # the samples still running, in order; all left: the next inputs start a fresh batch (the first
                # step's shortcuts apply)
                index, encoded, summed, steps, budget = retain(neurons, ~done, index, encoded, summed, steps, budget)
                if k:  # continuous batching: new inputs join at the end, their membranes at rest (each neuron
                    # holds state for the rows before them only; see SpikingNeuron.forward)
                    if frames != _check_frames(x, t_max, model):
                        raise DataError("a stream mixes images [B, C, H, W] and frames [B, T, C, H, W]")
                    fresh = x if frames else _encode(model, x)
                    plan = None if planner is None else planner(x).clamp(1, t_max)
                    if encoded is None:
                        index, encoded, budget = new_index, fresh, plan
                        steps = torch.zeros(k, dtype=torch.long, device=dev)
                    else:
                        index, encoded = torch.cat([index, new_index]), torch.cat([encoded, fresh])
                        summed = torch.cat([summed, summed.new_zeros(k, summed.shape[1])])
                        steps = torch.cat([steps, steps.new_zeros(k)])
                        if budget is not None:
                            budget = torch.cat([budget, plan])
        finally:
            for nrn in neurons:
                nrn.reset()
        n = feed.count if total is None else total
        if not done_parts:
            raise DataError("the input is empty")
        if len(done_parts) == 1:  # one batch that left together (batch 1 always does): already in order
            return ExitResult(*(t.cpu() for t in done_parts[0][1:]))
        idx = torch.cat([p[0] for p in done_parts])
        order = torch.empty_like(idx)
        order[idx] = torch.arange(len(idx), device=dev)
        cols = [torch.cat([p[i] for p in done_parts])[order].cpu() for i in range(1, 5)]
        assert len(idx) == n
        return ExitResult(*cols)


def retain(neurons, running: torch.Tensor, *rows):
    """Batch compaction: only the samples where ``running`` (bool per row) is true stay, in order, in each
    per-sample tensor of ``rows`` (None stays None) and in every neuron's state. With none left every neuron is
    reset and each tensor becomes None. Used by the runner and the serving loop alike."""
    keep = running.nonzero().flatten()
    if len(keep):
        for nrn in neurons:
            nrn.select(keep)
        return tuple(None if t is None else t[keep] for t in rows)
    for nrn in neurons:
        nrn.reset()
    return (None,) * len(rows)


class CompiledStep:
    """``model.step`` through torch.compile for fixed shapes (``model`` an inference copy: thresholds frozen).
    Compiles on the first call of each shape. If compiling fails (no C++ compiler, say) it warns once and steps
    eagerly from then on, as ``seenn train --compile`` does."""

    def __init__(self, model: SpikingNetwork):
        for_compiler(model)  # plain convolutions and resets: the compiler lays out and fuses them itself
        self.model = model
        self.fn = torch.compile(model.step, dynamic=False)
        self.failed = False

    def __call__(self, encoded: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.fn(encoded).float()
            except Exception as e:  # noqa: BLE001 - a compiler failure happens before the step runs
                self.failed = True
                warnings.warn(f"torch.compile of the step failed ({type(e).__name__}); running without it")
        return _step(self.model, encoded)


def _check_frames(x: torch.Tensor, t_max: int, model=None) -> bool:
    """Whether ``x`` is frames ``[B, T, C, H, W]`` (then with at least ``t_max`` of them). A network that says it
    takes images (``takes_frames = False``: another framework's image network) refuses a 5-D input rather than read
    a time-major ``[T, B, ...]`` tensor as ``[B, T, ...]``."""
    if x.dim() != 5:
        return False
    if getattr(model, "takes_frames", True) is False:
        raise DataError(f"this network takes images [B, C, H, W]; a 5-D input {list(x.shape)} would be read as frames "
                        "[B, T, C, H, W] (batch first). Give the image itself (every step sees it), or adapt the "
                        "network with frames=True for a time-varying input in that layout")
    if x.shape[1] < t_max:
        raise DataError(f"{t_max} timesteps need as many frames; the input has {x.shape[1]}")
    return True


def _step(model: SpikingNetwork, encoded: torch.Tensor) -> torch.Tensor:
    try:
        return model.step(encoded).float()
    except RuntimeError as e:  # e.g. an image size the readout was not built for
        raise DataError(f"the input does not fit the model ({str(e).splitlines()[0]})") from None


def _encode(model: SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    try:
        return model.encode(x)
    except RuntimeError as e:  # a shape the first layer cannot take
        raise DataError(f"an input batch of shape {tuple(x.shape)} does not fit the model "
                        f"({str(e).splitlines()[0]})") from None


class _Feed:
    """Inputs for the runner: pulls batches from an iterator and hands out up to m samples at a time."""

    def __init__(self, chunks, device):
        self.chunks, self.device = chunks, device
        self.pending = None
        self.count = 0  # samples handed out so far (their input-order index)

    def take(self, m: int):
        xs = []
        got = 0
        while got < m:
            if self.pending is None or len(self.pending) == 0:
                nxt = next(self.chunks, None)
                if nxt is None:
                    break
                if len(nxt) == 0:
                    continue
                check_input(nxt)
                self.pending = nxt.to(self.device)
            part, self.pending = self.pending[: m - got], self.pending[m - got:]
            xs.append(part)
            got += len(part)
        if not got:
            return None, None
        first = self.count
        self.count += got
        return (xs[0] if len(xs) == 1 else torch.cat(xs)), torch.arange(first, first + got, device=self.device)


def score_matrix(step_logits: torch.Tensor, rule: ExitRule) -> torch.Tensor:
    """The rule's score after each step, ``[N, T]``, from each step's own logits ``[N, T, K]``."""
    summed = step_logits.cumsum(dim=1)
    return torch.stack([rule.score(summed[:, t], t + 1) for t in range(step_logits.shape[1])], dim=1)


def posthoc_exits(step_logits: torch.Tensor, rule: ExitRule, scores: torch.Tensor | None = None) -> ExitResult:
    """What the runner would do, computed from the full step-logit matrix (all T steps already run)."""
    n, t_max, _ = step_logits.shape
    if scores is None:
        scores = score_matrix(step_logits, rule)
    fire = torch.stack([rule.exits(scores[:, t], t + 1) for t in range(t_max)], dim=1)
    fire[:, -1] = True
    exit_t = fire.float().argmax(dim=1)  # first step that fires (0-based)
    rows = torch.arange(n)
    summed = step_logits.cumsum(dim=1)[rows, exit_t]
    return ExitResult(summed.argmax(dim=1), exit_t + 1, scores[rows, exit_t], summed)


@torch.no_grad()
def step_logits(model: SpikingNetwork, data, timesteps: int, batch_size: int = 500,
                device: str = "cpu", progress: bool = False) -> torch.Tensor:
    """Each step's own logits for every sample, ``[N, T, K]``, all steps run (multi-step mode)."""
    model.eval()
    outs = []
    it = data.batches(batch_size)
    if progress:
        it = tqdm(it, total=math.ceil(len(data) / batch_size), desc="full-T pass", leave=False)
    for x, _ in it:
        outs.append(model(x.to(device), timesteps).transpose(0, 1).float().cpu())
    return torch.cat(outs)
