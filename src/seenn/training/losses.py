"""The training losses over a network's time-major logits ``[T, B, K]`` (what ``model(x, T)`` returns): TET (every
step's own cross-entropy), the exit-aware loss (the accumulated logits after each step, weighted toward early
steps) and the mean-logit cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tet_loss(step_logits: torch.Tensor, labels: torch.Tensor, lam: float = 1e-3, phi: float = 1.0,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """``step_logits`` ``[T, B, K]``: (1 - lam) * mean over t of CE(O_t, y) + lam * mean (O - phi)^2."""
    t, b, k = step_logits.shape
    ce = F.cross_entropy(step_logits.reshape(t * b, k), labels.repeat(t),  # mean over t and b
                         label_smoothing=label_smoothing)
    if lam == 0.0:
        return ce
    mse = F.mse_loss(step_logits, torch.full_like(step_logits, phi))
    return (1.0 - lam) * ce + lam * mse


def exit_aware_loss(step_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the *accumulated* logits after each step (what SEENN-I's confidence reads), weighted
    2^-(t-1) toward early steps: makes early steps confident where they are right, and unconfident where wrong."""
    t = step_logits.shape[0]
    summed = step_logits.cumsum(0)
    w = 2.0 ** -torch.arange(t, dtype=step_logits.dtype, device=step_logits.device)
    ce = torch.stack([F.cross_entropy(summed[i], labels) for i in range(t)])
    return (w * ce).sum() / w.sum()


def mean_ce_loss(step_logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(step_logits.mean(0), labels, label_smoothing=label_smoothing)
