"""The training losses over a network's time-major logits ``[T, B, K]`` (what ``model(x, T)`` returns): TET (every
step's own cross-entropy), the exit-aware loss (the accumulated logits after each step, weighted toward early
steps) and the mean-logit cross-entropy. Their first argument is named ``time_logits``: ``step_logits`` is the
name of the sample-major ``[N, T, K]`` pass (:func:`seenn.runtime.engine.step_logits`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tet_loss(time_logits: torch.Tensor, labels: torch.Tensor, lam: float = 1e-3, phi: float = 1.0,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """``time_logits`` (time-major, ``[T, B, K]``): (1 - lam) * mean over t of CE(O_t, y) + lam * mean (O - phi)^2."""
    t, b, k = time_logits.shape
    ce = F.cross_entropy(time_logits.reshape(t * b, k), labels.repeat(t),  # mean over t and b
                         label_smoothing=label_smoothing)
    if lam == 0.0:
        return ce
    mse = F.mse_loss(time_logits, torch.full_like(time_logits, phi))
    return (1.0 - lam) * ce + lam * mse


def exit_aware_loss(time_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the *accumulated* logits after each step (what SEENN-I's confidence reads), weighted
    2^-(t-1) toward early steps: makes early steps confident where they are right, and unconfident where wrong."""
    t = time_logits.shape[0]
    summed = time_logits.cumsum(0)
    w = 2.0 ** -torch.arange(t, dtype=time_logits.dtype, device=time_logits.device)
    ce = torch.stack([F.cross_entropy(summed[i], labels) for i in range(t)])
    return (w * ce).sum() / w.sum()


def mean_ce_loss(time_logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the logits averaged over the steps (``time_logits`` ``[T, B, K]``)."""
    return F.cross_entropy(time_logits.mean(0), labels, label_smoothing=label_smoothing)
