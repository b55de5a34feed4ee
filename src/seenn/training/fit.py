"""``fit``: a seenn network trained on any iterable of ``(x, y)`` batches; ``seenn train`` runs the same loop."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io.schema import bounded
from ..models.base import SpikingNetwork
from ..runtime.distributed import all_sum, world
from .losses import mean_ce_loss, tet_loss

LOSSES = ("tet", "mean")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass
class FitResult:
    """What :func:`fit` did: one entry per epoch (``train_loss``, ``train_accuracy`` at full T, ``seconds``,
    ``data_seconds`` (waiting for batches), ``lr`` and, with validation data, ``val_accuracy``), and the best
    validation accuracy seen (None without validation)."""

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
        label_smoothing: float = 0.0, schedule: str = "cosine", val_data=None, optimizer=None, scheduler=None,
        loss_fn=None, forward=None, precision: str = "fp32", device=None, start_epoch: int = 1,
        on_epoch_start=None, on_step=None, on_epoch_end=None, progress: bool = False, log=None) -> FitResult:
    """Train ``model`` in place for ``epochs`` passes over ``train_data`` (re-iterable: a DataLoader, a list of
    batches; or a function of the epoch number giving that epoch's batches; ``x`` ``[B, C, H, W]``, or frames
    ``[B, T, C, H, W]``; ``y`` class indices). Each batch runs all ``timesteps`` steps (multi-step, BPTT through the
    surrogate gradient). Under torchrun every process draws the same global batch and trains on its share, the
    loss weighted so that the averaged gradient is the global batch's.

    - ``loss``: ``tet`` (every step's own cross-entropy, plus ``tet_lambda`` times the MSE to 1) or ``mean``
      (cross-entropy of the mean logits); ``loss_fn(out [T, B, K], y)``: your own instead.
    - ``optimizer``: one of yours (then ``scheduler``, if given, is stepped after every batch), else SGD (``lr``,
      ``momentum``, ``weight_decay``) stepped by ``schedule`` per batch.
    - ``forward(x) -> [T, B, K]``: how a batch is run (a compiled or wrapped network), default ``model(x,
      timesteps)``; ``precision="bf16"``: under bf16 autocast, the loss in fp32.
    - ``val_data`` (same form as ``train_data``): full-T accuracy after each epoch.
    - ``start_epoch``: the first epoch to run (continuing a run whose optimizer and scheduler you restored).
    - ``on_epoch_start(epoch)``, ``on_step(step)`` (after each optimizer step; ``step`` counts the scheduler's
      steps when there is one), ``on_epoch_end(entry)`` (the epoch's entry, which it may add to): your hooks.
    - ``progress``: a progress bar per epoch; ``log``: a function taking one line per epoch.

    The model is left in eval mode."""

    if not isinstance(model, SpikingNetwork):
        raise ConfigError(f"fit trains a seenn SpikingNetwork, got {type(model).__name__} (seenn.adapt runs another "
                          "framework's network; train it there)")
    bounded("timesteps", timesteps, "timesteps")
    bounded("epochs", epochs, "epochs")
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}", param="loss")
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}", param="schedule")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", param="precision")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr}", param="lr")
    per_epoch_data = callable(train_data) and not hasattr(train_data, "__iter__")
    try:
        per_epoch = None if per_epoch_data else len(train_data)
    except TypeError:
        per_epoch = None  # an iterable without a length: the schedule is per epoch instead of per batch
    opt = optimizer or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                       momentum=momentum, weight_decay=weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    total = epochs * per_epoch if per_epoch else epochs

    def factor(i: int) -> float:
        f = min(i / max(total, 1), 1.0)
        return {"cosine": 0.5 * (1 + math.cos(math.pi * f)), "linear": 1 - f, "constant": 1.0}[schedule]

    if loss_fn is None:
        def loss_fn(out, y):
            return tet_loss(out, y, tet_lambda, label_smoothing=label_smoothing) if loss == "tet" else \
                mean_ce_loss(out, y, label_smoothing)
    run = forward or (lambda x: model(x, timesteps))
    kind = torch.device(device).type if device is not None else "cpu"
    rank, size = world()
    result = FitResult()
    step = (start_epoch - 1) * per_epoch if per_epoch else 0
    for epoch in range(start_epoch, epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        t0 = time.time()
        seen = correct = 0
        loss_sum = data_seconds = 0.0
        batches = train_data(epoch) if per_epoch_data else train_data
        if progress:
            batches = tqdm(batches, desc=f"epoch {epoch}/{epochs}", leave=False)
        t_data = time.time()
        for x, y in batches:
            data_seconds += time.time() - t_data
            y = torch.as_tensor(y)
            n_global = len(y)
            if size > 1:  # this process's share of the global batch
                x, y = x[rank::size], y[rank::size]
            if device is not None:
                x, y = x.to(device), y.to(device)
            if optimizer is None:
                for g, b in zip(opt.param_groups, base):
                    g["lr"] = b * factor(step if per_epoch else epoch - 1)
            with torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = run(x)  # [T, B, K]
            out = out.float()  # the loss in fp32
            value = loss_fn(out, y)
            if not torch.isfinite(value):
                raise ConfigError(f"training diverged at epoch {epoch} (loss {value.item()}); lower the learning "
                                  "rate", param="lr")
            opt.zero_grad(set_to_none=True)
            (value * (len(y) * size / n_global) if size > 1 else value).backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
                step = scheduler.last_epoch
            else:
                step += 1
            if on_step is not None:
                on_step(step)
            loss_sum += value.item() * len(y)
            seen += len(y)
            correct += int((out.detach().sum(0).argmax(1) == y).sum())
            if progress:
                batches.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
            t_data = time.time()
        loss_sum, correct, seen = all_sum([loss_sum, correct, seen])
        if not seen:
            raise ConfigError("fit: the training data held no batches")
        entry = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                 "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0, "data_seconds": data_seconds}
        if val_data is not None:
            entry["val_accuracy"] = _accuracy(model, val_data, timesteps)
            if result.best_val_accuracy is None or entry["val_accuracy"] > result.best_val_accuracy:
                result.best_val_accuracy = entry["val_accuracy"]
        if on_epoch_end is not None:
            on_epoch_end(entry)
        result.history.append(entry)
        if log is not None:
            log(f"epoch {epoch}: loss {entry['train_loss']:.4f}, train {entry['train_accuracy']:.2%}"
                + (f", val {entry['val_accuracy']:.2%}" if "val_accuracy" in entry else ""))
    model.eval()
    return result
