"""Metrics on step logits ``[N, T, K]`` (each step's own output) and labels ``[N]``.

The prediction at step t is the argmax of the logits summed over steps 1..t (softmax is monotone, so the same
as the argmax of the summed softmax input). Timesteps are 1-based everywhere.
"""

from __future__ import annotations

import torch


def cumulative_logits(step_logits: torch.Tensor) -> torch.Tensor:
    return step_logits.cumsum(dim=1)


def correct_per_timestep(step_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool ``[N, T]``: is the prediction from steps 1..t right."""
    return cumulative_logits(step_logits).argmax(dim=2) == labels[:, None]


def accuracy_per_timestep(step_logits, labels) -> list[float]:
    return correct_per_timestep(step_logits, labels).double().mean(dim=0).tolist()


def oracle_timesteps(correct: torch.Tensor) -> torch.Tensor:
    """Each sample's first correct step; T if it is never correct."""
    t_max = correct.shape[1]
    first = correct.float().argmax(dim=1) + 1
    return torch.where(correct.any(dim=1), first, torch.full_like(first, t_max))


def ideal_timesteps(correct: torch.Tensor) -> torch.Tensor:
    """The ideal exit that keeps exactly the full-T correct samples: each of those leaves at its first step
    from which it stays correct up to T; every other sample leaves at step 1."""
    t_max = correct.shape[1]
    # stays[:, t] = correct at every step t..T  (reverse cumulative AND)
    stays = correct.flip(1).cumprod(dim=1).flip(1).bool()
    first = stays.float().argmax(dim=1) + 1
    return torch.where(correct[:, -1], first, torch.ones_like(first)).clamp(max=t_max)


def exit_histogram(exit_timestep: torch.Tensor, max_timesteps: int) -> list[int]:
    return torch.bincount(exit_timestep.long() - 1, minlength=max_timesteps)[:max_timesteps].tolist()


def exit_summary(prediction, exit_timestep, labels, max_timesteps: int, full_prediction=None) -> dict:
    """Accuracy, average timesteps and histogram of an exit policy's per-sample results."""
    out = {
        "accuracy": (prediction == labels).double().mean().item(),
        "avg_timesteps": exit_timestep.double().mean().item(),
        "exit_histogram": exit_histogram(exit_timestep, max_timesteps),
    }
    if full_prediction is not None:
        right_full = full_prediction == labels
        right_exit = prediction == labels
        out["false_exits"] = int((right_full & ~right_exit).sum())
        out["rescued"] = int((~right_full & right_exit).sum())
    return out


def threshold_exits(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """1-based exit step of each sample for a rule that exits once its score ``[N, T]`` exceeds ``threshold``
    (the last step always exits)."""
    fire = scores > threshold
    fire[:, -1] = True
    return fire.to(torch.uint8).argmax(dim=1) + 1


def operating_point(step_logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                    threshold: float) -> tuple[float, float]:
    """(accuracy, average timesteps) of exiting at ``threshold`` on the score matrix ``scores``."""
    t = threshold_exits(scores, threshold)
    pred = cumulative_logits(step_logits).argmax(dim=2).gather(1, (t - 1)[:, None]).squeeze(1)
    return (pred == labels).double().mean().item(), t.double().mean().item()


def fewest_steps_threshold(step_logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                           tolerance: float = 0.001, candidates: int = 1000) -> float:
    """The threshold with the fewest average timesteps whose accuracy stays within ``tolerance`` of full T.

    Candidates are quantiles of the scores before the last step, so the search is as fine where scores crowd (near 1
    for confident rules) as where they are sparse. With no candidate within tolerance: above every score (full T)."""
    full = (step_logits.sum(dim=1).argmax(dim=1) == labels).double().mean().item()
    pool = scores[:, :-1].flatten().double()
    if pool.numel() == 0:
        return 0.0
    pool = pool[:: max(1, len(pool) // 100_000)]
    grid = torch.unique(torch.quantile(pool, torch.linspace(0, 1, candidates, dtype=torch.float64)))
    best = (float(pool.max()), float(step_logits.shape[1]))
    for th in grid.tolist():
        acc, steps = operating_point(step_logits, labels, scores, th)
        if acc >= full - tolerance - 1e-12 and steps < best[1]:
            best = (th, steps)
    return best[0]
