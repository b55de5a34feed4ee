"""Direct training of a spiking network with BPTT and the TET loss.

TET (Deng et al. 2022): ``(1 - lam) * mean_t CE(O_t, y) + lam * MSE(O, phi)``, every step's own output is
pushed toward the label, which is exactly what early exit needs: early steps that are already right.
The checkpoint kept is the epoch with the best validation accuracy at full T (validation is held out from the
training data; the test split is never looked at).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import save_run
from .data import DEFAULT_VAL_SIZE, Dataset, load_dataset
from .errors import ConfigError
from .metrics import accuracy_per_timestep
from .models import MODELS, SpikingNetwork, build_model

LOSSES = ("tet", "mean-ce")


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"
    model: str = "convnet"
    width: float = 1.0
    timesteps: int = 4
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: str = "tet"
    tet_lambda: float = 1e-3
    tet_phi: float = 1.0
    surrogate: str = "tanh"
    seed: int = 0
    limit: int | None = None
    val_size: int = DEFAULT_VAL_SIZE
    augment: bool = True  # random crop + flip for 32x32 RGB; no effect on 28x28
    compile: bool = False  # torch.compile the neurons' BPTT loops (faster on CPU after a one-off compile)
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        if self.timesteps < 1:
            raise ConfigError(f"--timesteps must be >= 1, got {self.timesteps}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if not 0.0 <= self.tet_lambda <= 1.0:
            raise ConfigError(f"--tet-lambda must be in [0, 1], got {self.tet_lambda}")


def tet_loss(step_logits: torch.Tensor, labels: torch.Tensor, lam: float = 1e-3, phi: float = 1.0) -> torch.Tensor:
    """``step_logits`` ``[T, B, K]``: (1 - lam) * mean over t of CE(O_t, y) + lam * mean (O - phi)^2."""
    t, b, k = step_logits.shape
    ce = F.cross_entropy(step_logits.reshape(t * b, k), labels.repeat(t))  # mean over t and b
    if lam == 0.0:
        return ce
    mse = F.mse_loss(step_logits, torch.full_like(step_logits, phi))
    return (1.0 - lam) * ce + lam * mse


def mean_ce_loss(step_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(step_logits.mean(0), labels)


def model_config(cfg: TrainConfig, data: Dataset) -> dict:
    info = data.info
    return {"name": cfg.model, "in_channels": info.channels, "image_size": info.image_size,
            "num_classes": info.num_classes, "width": cfg.width, "surrogate": cfg.surrogate}


@torch.no_grad()
def step_logits(model: SpikingNetwork, data: Dataset, timesteps: int, batch_size: int = 500,
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


def train(cfg: TrainConfig, out_dir: str | Path, *, data_dir=None, progress: bool = True,
          device: str = "cpu", log=print) -> dict:
    cfg.validate()
    if cfg.compile:
        from .neuron import set_compile

        set_compile(True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_set = load_dataset(cfg.dataset, "train", data_dir=data_dir, limit=cfg.limit, val_size=cfg.val_size)
    val_set = load_dataset(cfg.dataset, "val", data_dir=data_dir, val_size=cfg.val_size) if cfg.val_size else None
    model = build_model(cfg.model, in_channels=train_set.info.channels, image_size=train_set.info.image_size,
                        num_classes=train_set.info.num_classes, width=cfg.width, surrogate=cfg.surrogate).to(device)
    # no weight decay on BN and biases
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    config = {"seenn_version": __version__, "dataset": cfg.dataset, "max_timesteps": cfg.timesteps,
              "model": model_config(cfg, train_set), "training": asdict(cfg)}
    history = []
    best = (-1.0, None)
    t_start = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.time()
        loss_sum, correct, seen = 0.0, 0, 0
        it = train_set.batches(cfg.batch_size, shuffle=True, generator=gen, augment=cfg.augment)
        if progress:
            it = tqdm(it, total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False)
        for x, y in it:
            x, y = x.to(device), y.to(device)
            out = model(x, cfg.timesteps)
            if cfg.loss == "tet":
                loss = tet_loss(out, y, cfg.tet_lambda, cfg.tet_phi)
            else:
                loss = mean_ce_loss(out, y)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (out.sum(0).argmax(1) == y).sum().item()
            seen += len(y)
            if progress:
                it.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        rec = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0}
        if val_set is not None:
            acc = accuracy_per_timestep(step_logits(model, val_set, cfg.timesteps, device=device), val_set.labels)
            rec["val_accuracy_per_timestep"] = acc
            rec["val_accuracy"] = acc[-1]
        history.append(rec)
        score = rec.get("val_accuracy", epoch)  # without validation: keep the last epoch
        if score >= best[0]:
            best = (score, {k: v.detach().clone() for k, v in model.state_dict().items()})
            rec["kept"] = True
        log(f"epoch {epoch}: loss {rec['train_loss']:.4f} train acc {rec['train_accuracy']:.4f}"
            + (f" val acc/step {' '.join(f'{a:.4f}' for a in rec['val_accuracy_per_timestep'])}" if val_set else "")
            + f" ({rec['seconds']:.0f}s)")
    model.load_state_dict(best[1])
    metrics = {"epochs": history, "best_val_accuracy": best[0] if val_set is not None else None,
               "train_seconds": time.time() - t_start}
    save_run(Path(out_dir), model, config, metrics)
    return metrics
