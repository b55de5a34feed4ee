"""The state of an interrupted training, for ``seenn train --resume``: written atomically at the end of every
epoch (weights, best weights, momenta, schedule, random states), read back checked before anything is written."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_tensors

from ..errors import CheckpointError, ConfigError
from ..io.files import atomic_write_bytes
from .config import TrainConfig

TRAIN_STATE = "train_state.safetensors"


def _save_state(path: Path, model, best, opt, sched, gen, epoch: int, history: list, cfg: TrainConfig,
                lookahead=None, train_seconds: float = 0.0) -> None:
    """Everything needed to continue exactly: weights, best weights, momentum, schedule, random states, and the
    seconds trained so far (validations included). One file, written atomically, so a kill at any moment leaves the
    previous epoch's state intact."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.cpu().contiguous() for k, v in best[1].items()})
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"optim.{names[id(p)]}"] = buf.detach().cpu().contiguous()
    if lookahead is not None:
        tensors.update(lookahead.tensors())
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"epoch": str(epoch), "best_score": repr(best[0]), "history": json.dumps(history),
            "scheduler": json.dumps(sched.state_dict()), "lrs": json.dumps([g["lr"] for g in opt.param_groups]),
            "config": json.dumps(asdict(cfg)), "train_seconds": repr(train_seconds)}
    atomic_write_bytes(path, save_tensors(tensors, metadata=meta))


def read_train_state(run_dir: str | Path):
    """(config, tensors, metadata) of an interrupted run, for ``--resume``, checked before anything is written:
    a valid config, an epoch counter in [1, epochs], finite weights, momenta and scores."""
    path = Path(run_dir) / TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: nothing to resume (runs write it at the end of every epoch)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        raw = json.loads(meta["config"])
        if not isinstance(raw, dict):
            raise TypeError("config is not an object")
        cfg = TrainConfig(**raw)
        epoch = json.loads(meta["epoch"])
        best = float(meta["best_score"])
        history = json.loads(meta["history"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a valid training state ({e})") from None
    try:
        cfg.validate()
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an impossible setting: {e}") from None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= cfg.epochs:
        raise CheckpointError(f"{path}: its epoch counter {meta['epoch']!r} is not in [1, {cfg.epochs}] (corrupt)")
    if not isinstance(history, list) or len(history) != epoch or not (math.isfinite(best) or best == -1.0):
        raise CheckpointError(f"{path}: its history does not match its epoch counter (corrupt)")
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: {k} holds NaN or Inf; this state cannot be resumed")
    if not any(k.startswith("best.") for k in tensors) or "rng.generator" not in tensors:
        raise CheckpointError(f"{path} lacks its best weights or random state (corrupt)")
    return cfg, tensors, meta


def resume_finished(run_dir: str | Path, epochs: int | None = None) -> bool:
    """Whether a run's training state says every epoch ran (of ``epochs``, a new length, if given) and its weights
    were written (nothing to resume)."""
    cfg, _, meta = read_train_state(run_dir)
    done = int(meta["epoch"])
    _check_new_length(run_dir, done, epochs)
    return done == (epochs or cfg.epochs) and (Path(run_dir) / "model.safetensors").is_file()


def _check_new_length(run_dir, done: int, epochs: int | None) -> None:
    if epochs is not None and epochs < done:
        raise ConfigError(f"--epochs {epochs} is below the {done} epochs {run_dir} has already run")
