"""The early-exit runner: steps the SNN one timestep at a time and drops each sample from the batch, and from
every neuron's membrane, the moment its exit rule fires. Saved timesteps are saved compute.

Also the post-hoc path (:func:`posthoc_exits`) that scores a full ``[N, T, K]`` step-logit matrix; it serves the
threshold sweep, the per-sample dump and the oracle, and the tests hold the runner to it sample for sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DataError
from .exits import ExitRule
from .models import SpikingNetwork


@dataclass
class ExitResult:
    prediction: torch.Tensor  # [N] int64
    exit_timestep: torch.Tensor  # [N] int64, 1-based
    score: torch.Tensor  # [N] the rule's score at the exit step
    logits: torch.Tensor  # [N, K] logits summed over the steps run

    @staticmethod
    def cat(parts: list["ExitResult"]) -> "ExitResult":
        return ExitResult(*(torch.cat([getattr(p, f) for p in parts]) for f in
                            ("prediction", "exit_timestep", "score", "logits")))


def check_input(x: torch.Tensor, model: SpikingNetwork | None = None) -> None:
    if not torch.is_floating_point(x) or x.dim() != 4:
        raise DataError(f"expected a float image batch [B, C, H, W], got {tuple(x.shape)} {x.dtype}")
    if not torch.isfinite(x).all():
        raise DataError("the input holds NaN or Inf values")


class EarlyExitRunner:
    """``EarlyExitRunner(model, rule, max_timesteps).predict(x)`` -> :class:`ExitResult`."""

    def __init__(self, model: SpikingNetwork, rule: ExitRule, max_timesteps: int, device: str | torch.device = "cpu"):
        if max_timesteps < 1:
            raise DataError(f"max_timesteps must be >= 1, got {max_timesteps}")
        self.model = model.to(device).eval()
        self.rule = rule
        self.max_timesteps = int(max_timesteps)
        self.device = torch.device(device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> ExitResult:
        check_input(x)
        model, rule = self.model, self.rule
        x = x.to(self.device)
        n = x.shape[0]
        prediction = torch.empty(n, dtype=torch.long, device=self.device)
        exit_timestep = torch.empty(n, dtype=torch.long, device=self.device)
        score_out = torch.empty(n, device=self.device)
        active = torch.arange(n, device=self.device)
        model.reset()
        try:
            encoded = model.encode(x)  # direct encoding: the stem's output is the same at every step
            summed = None
            logits_out = None
            for t in range(1, self.max_timesteps + 1):
                out = model.step(encoded).float()
                summed = out if summed is None else summed + out
                if logits_out is None:
                    logits_out = torch.empty(n, out.shape[1], device=self.device)
                score = rule.score(summed, t)
                if t == self.max_timesteps:
                    done = torch.ones_like(score, dtype=torch.bool)
                else:
                    done = rule.exits(score, t)
                if done.any():
                    idx = active[done]
                    prediction[idx] = summed[done].argmax(dim=1)
                    exit_timestep[idx] = t
                    score_out[idx] = score[done]
                    logits_out[idx] = summed[done]
                    if done.all():
                        break
                    keep = (~done).nonzero().squeeze(1)
                    active, encoded, summed = active[keep], encoded[keep], summed[keep]
                    model.select(keep)
        finally:
            model.reset()
        return ExitResult(prediction.cpu(), exit_timestep.cpu(), score_out.cpu(), logits_out.cpu())

    def predict_dataset(self, data, batch_size: int = 256) -> ExitResult:
        return ExitResult.cat([self.predict(x) for x, _ in data.batches(batch_size)])


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
