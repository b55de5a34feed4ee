"""``fit``: a seenn network trained on any iterable of ``(x, y)`` batches."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from ..models.base import SpikingNetwork
from ..schema import bounded
from .losses import mean_ce_loss, tet_loss

LOSSES = ("tet", "mean")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class FitResult:
    """What :func:`fit` did: one entry per epoch (``train_loss``, ``train_accuracy`` at full T, ``seconds`` and,
    with validation data, ``val_accuracy``), and the best validation accuracy seen (None without validation)."""

    history: list = field(default_factory=list)
    best_val_accuracy: float | None = None


def _accuracy(model: SpikingNetwork, data, timesteps: int) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in data:
            y = torch.as_tensor(y)
            correct += int((model(x, timesteps).sum(0).argmax(1) == y).sum())
            total += len(y)
    return correct / max(total, 1)


def fit(model: SpikingNetwork, train_data, *, timesteps: int = 4, epochs: int = 1, lr: float = 0.05,
        momentum: float = 0.9, weight_decay: float = 5e-4, loss: str = "tet", tet_lambda: float = 1e-3,
        label_smoothing: float = 0.0, schedule: str = "cosine", val_data=None, optimizer=None,
        log=None) -> FitResult:
    """Train ``model`` in place for ``epochs`` passes over ``train_data`` (re-iterable: a DataLoader, a list of
    batches; ``x`` ``[B, C, H, W]``, or frames ``[B, T, C, H, W]``; ``y`` class indices). Each batch runs all
    ``timesteps`` steps (multi-step, BPTT through the surrogate gradient). ``loss``: ``tet`` (every step's own
    cross-entropy, plus ``tet_lambda`` times the MSE to 1) or ``mean`` (cross-entropy of the mean logits).
    ``optimizer``: one of yours, else SGD (``lr``, ``momentum``, ``weight_decay``) stepped by ``schedule`` per
    batch. ``val_data`` (same form): full-T accuracy after each epoch. ``log``: a function taking one line per
    epoch. The model is left in eval mode."""

    if not isinstance(model, SpikingNetwork):
        raise ConfigError(f"fit trains a seenn SpikingNetwork, got {type(model).__name__} (seenn.adapt runs another "
                          "framework's network; train it there)")
    bounded("timesteps", timesteps, "timesteps")
    bounded("epochs", epochs, "epochs")
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr}")
    try:
        per_epoch = len(train_data)
    except TypeError:
        per_epoch = None  # an iterable without a length: the schedule is per epoch instead of per batch
    opt = optimizer or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                       momentum=momentum, weight_decay=weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    total = epochs * per_epoch if per_epoch else epochs

    def factor(i: int) -> float:
        f = min(i / max(total, 1), 1.0)
        return {"cosine": 0.5 * (1 + math.cos(math.pi * f)), "linear": 1 - f, "constant": 1.0}[schedule]

    result = FitResult()
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        seen = correct = 0
        loss_sum = 0.0
        for x, y in train_data:
            y = torch.as_tensor(y)
            if optimizer is None:
                for g, b in zip(opt.param_groups, base):
                    g["lr"] = b * factor(step if per_epoch else epoch - 1)
            out = model(x, timesteps)  # [T, B, K]
            value = tet_loss(out, y, tet_lambda, label_smoothing=label_smoothing) if loss == "tet" else \
                mean_ce_loss(out, y, label_smoothing)
            if not torch.isfinite(value):
                raise ConfigError(f"fit: the loss became {value.item()} at epoch {epoch} (lower lr)")
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            step += 1
            loss_sum += float(value) * len(y)
            seen += len(y)
            correct += int((out.detach().sum(0).argmax(1) == y).sum())
        if not seen:
            raise ConfigError("fit: the training data held no batches")
        entry = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                 "seconds": time.perf_counter() - t0}
        if val_data is not None:
            entry["val_accuracy"] = _accuracy(model, val_data, timesteps)
            if result.best_val_accuracy is None or entry["val_accuracy"] > result.best_val_accuracy:
                result.best_val_accuracy = entry["val_accuracy"]
        result.history.append(entry)
        if log is not None:
            log(f"epoch {epoch}: loss {entry['train_loss']:.4f}, train {entry['train_accuracy']:.2%}"
                + (f", val {entry['val_accuracy']:.2%}" if "val_accuracy" in entry else ""))
    model.eval()
    return result
