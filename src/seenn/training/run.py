"""``seenn train``: a run folder trained by :func:`seenn.fit` (the one training loop) with the dataset, model,
recipe, augmentation, validation, best-epoch checkpoint and resumable state a run needs around it.

Direct training of a spiking network with BPTT and the TET loss; with ``ann`` the same loop trains a QCFS ANN (cross-entropy on its one pass) for ``seenn convert``.

TET (Deng et al. 2022): ``(1 - lam) * mean_t CE(O_t, y) + lam * MSE(O, phi)``, every step's own output is
pushed toward the label, which is exactly what early exit needs: early steps that are already right.
The checkpoint kept is the epoch with the best validation accuracy at full T (validation is held out from the
training data; the test split is never looked at).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .._version import __version__
from ..analysis.metrics import accuracy_per_timestep
from ..data import Dataset, load_dataset
from ..data.sources import prepare, record_pipeline
from ..errors import CheckpointError, ConfigError
from ..models import SpikingNetwork, build_model
from ..nn.neuron import SpikingNeuron, set_compile
from ..nn.qcfs import QCFS
from ..runs.store import load_run, save_run, weights_digest
from ..runtime.distributed import init_from_env, plain_batchnorm, sync_batchnorm
from ..runtime.engine import step_logits
from ..runtime.precision import native_bf16
from . import recipe
from .config import LAYERED, TrainConfig
from .distill import Teacher, distill_loss
from .fit import fit
from .losses import exit_aware_loss, mean_ce_loss, tet_loss
from .state import TRAIN_STATE, _check_new_length, _save_state, read_train_state


def model_config(cfg: TrainConfig, data: Dataset) -> dict:
    info = data.info
    spec = {"name": cfg.model, "in_channels": info.channels, "image_size": info.image_size,
            "num_classes": info.num_classes, "width": cfg.width, "surrogate": cfg.surrogate}
    if cfg.ann:
        spec.update(neuron="qcfs", quant_levels=cfg.quant_levels)
    return spec


@torch.no_grad()
def reestimate_batchnorm(model: SpikingNetwork, data: Dataset, timesteps: int, batch_size: int, *,
                         batches: int = 20, seed: int = 0) -> None:
    """Replace every BN's running statistics by their average over ``batches`` training batches run as the network
    runs in training (multi-step): for weights that come from elsewhere (an ANN), whose statistics do not fit."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    gen = torch.Generator().manual_seed(seed + 1)
    try:
        for i, (x, _) in enumerate(data.batches(batch_size, shuffle=True, generator=gen)):
            if i == batches:
                break
            model(x, timesteps, multistep=True)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom


def _source_digests(cfg: TrainConfig) -> dict:
    """``{"init_sha256": ..., "distill_sha256": ...}``: the weights digest of each run given (one without weights is
    left to ``load_run`` to refuse)."""
    digests = {key: weights_digest(run) for key, run in (("init", cfg.init), ("distill", cfg.distill)) if run}
    return {f"{key}_sha256": d for key, d in digests.items() if d}


def train(cfg: TrainConfig, out_dir: str | Path, *, data_dir=None, progress: bool = True,
          device: str = "cpu", log=print, resume: bool = False, resume_epochs: int | None = None,
          resume_bn_reestimate: int | None = None) -> dict:
    """Train and write a run directory. ``resume``: continue the interrupted run in ``out_dir`` exactly where
    its last completed epoch left it (``cfg`` is then taken from the saved state); ``resume_epochs``: a new length
    for its schedule (from the next step on, the learning rate is the cosine schedule's of a run of that length;
    the change is recorded in the run's ``training.extra.schedule_changes``)."""
    out_dir = Path(out_dir)
    state = None
    if resume:
        cfg, tensors, meta = read_train_state(out_dir)
        state = (tensors, meta)
        done = int(meta["epoch"])
        _check_new_length(out_dir, done, resume_epochs)
        if resume_epochs is not None and resume_epochs != cfg.epochs:
            changes = list(cfg.extra.get("schedule_changes", [])) + [
                {"after_epoch": done, "epochs_before": cfg.epochs, "epochs": resume_epochs}]
            cfg = replace(cfg, epochs=resume_epochs, extra={**cfg.extra, "schedule_changes": changes})
        if resume_bn_reestimate is not None and resume_bn_reestimate != cfg.bn_reestimate:
            # evaluation only: batch norm trains on batch statistics, so the weights' path is unchanged
            changes = list(cfg.extra.get("evaluation_changes", [])) + [
                {"after_epoch": done, "bn_reestimate": resume_bn_reestimate}]
            cfg = replace(cfg, bn_reestimate=resume_bn_reestimate, extra={**cfg.extra, "evaluation_changes": changes})
    cfg.validate()
    if cfg.precision == "auto":  # the run records the precision it trained in
        cfg = replace(cfg, precision="bf16" if native_bf16(device) else "fp32",
                      extra={**cfg.extra, "precision_requested": "auto"})
    if state is None:  # which weights the runs it starts from and learns from held (the paths may be local)
        cfg = replace(cfg, extra={**cfg.extra, **_source_digests(cfg)})
    rank, size = init_from_env(device)
    if size > 1 and cfg.batch_size % size:
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of the {size} processes", param="batch_size")

    # this run's choice (or SEENN_COMPILE=1), not whatever an earlier run in the same process chose
    set_compile(cfg.compile or os.environ.get("SEENN_COMPILE", "0") == "1")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    # an imagefolder: pipeline measured once, an events: one cut into as many frames as the run has timesteps;
    # both recorded in the run
    info = prepare(cfg.dataset, image_size=cfg.image_size, frames=cfg.timesteps, split_by=cfg.frames_by)
    train_set = load_dataset(cfg.dataset, "train", data_dir=data_dir, limit=cfg.limit, val_size=cfg.val_size,
                             info=info)
    val_set = load_dataset(cfg.dataset, "val", data_dir=data_dir, val_size=cfg.val_size, info=info) \
        if cfg.val_size else None
    src = src_cfg = None
    # the --init run gives the weights of a new run, and a layered network's layers also when it is resumed
    if cfg.init and (state is None or cfg.model in LAYERED):
        src, src_cfg = load_run(cfg.init)
    layered = src_cfg is not None and src_cfg["model"]["name"] in LAYERED
    if layered:  # a converted (or imported) network is fine-tuned as it is: its layers, neurons and corrections
        if cfg.ann:
            raise ConfigError(f"--init {cfg.init} is a spiking network given as layers; --ann trains a QCFS ANN of a "
                              "registry layout")
        if src_cfg["dataset"] != cfg.dataset:
            raise ConfigError(f"--init {cfg.init} was made for {src_cfg['dataset']}; give --dataset "
                              f"{src_cfg['dataset']}")
        cfg = replace(cfg, model=src_cfg["model"]["name"], width=1.0)
        spec = {**src_cfg["model"], "surrogate": cfg.surrogate}
    else:
        spec = model_config(cfg, train_set)
    model = build_model(**spec).to(device)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QCFS):
                m.threshold.fill_(cfg.clip_init)
    if layered and state is None:
        model.load_state_dict(src.state_dict())
        model.train()
    elif cfg.init and state is None:  # fine-tuning starts from another run's weights
        from_ann = src_cfg.get("kind") == "ann" and not cfg.ann
        ignored = ("neuron", "quant_levels", "surrogate") if from_ann else ("quant_levels", "surrogate")
        shape = (lambda m: {k: v for k, v in m.items() if k not in ignored})  # what the weights' shapes depend on
        if shape(src_cfg["model"]) != shape(model_config(cfg, train_set)):
            raise ConfigError(f"--init {cfg.init} is a {src_cfg['model']['name']} of another shape; give the same "
                              "--model, --width and dataset")
        weights = src.state_dict()
        if from_ann:  # an ANN's weights start a spiking run (hybrid training); the QCFS clip values are dropped,
            # the LIF neurons keep their thresholds, and BN, re-estimated in training, absorbs the change of scale
            neuron_keys = {f"{n}.threshold" for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}
            weights = {k: v for k, v in weights.items() if k not in neuron_keys}
        missing = model.load_state_dict(weights, strict=not from_ann).missing_keys
        if from_ann and set(missing) - neuron_keys:
            raise ConfigError(f"init {cfg.init} lacks {sorted(set(missing) - neuron_keys)[:3]}", param="init")
        if from_ann:
            reestimate_batchnorm(model, train_set, cfg.timesteps, cfg.batch_size, seed=cfg.seed)
        model.train()
    if state is None and not cfg.init:  # a fresh network: the recipe's initialisation
        recipe.init_fresh(model, cfg, train_set.normalize(train_set.images[:recipe.WHITEN_PATCH_IMAGES]))
    recipe.configure(model, cfg)
    net = model
    if cfg.ann and cfg.compile and size == 1:  # a QCFS ANN: its whole pass compiled, channels-last
        net = _CompiledANN(model)
    if size > 1:  # DDP: gradients averaged across ranks, BN statistics over the global batch
        net = torch.nn.parallel.DistributedDataParallel(sync_batchnorm(model))
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.decoupled:
        opt = recipe.make_optimizer(model, cfg)
    else:  # no weight decay on BN and biases
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum,
                              nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.schedule == "cosine" and not cfg.warmup and not cfg.final_lr:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    else:  # (reads cfg at each step: a resumed run with a new length follows the new schedule from there on)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: recipe.lr_factor(cfg, step, cfg.epochs *
                                                                                    steps_per_epoch))
    lookahead = recipe.Lookahead(model) if cfg.lookahead else None
    # a converted network keeps its own horizon: fine-tuning teaches its first steps, it still rate-codes beyond them
    horizon = max(cfg.timesteps, src_cfg["max_timesteps"]) if layered else cfg.timesteps
    config = {"seenn_version": __version__, "dataset": cfg.dataset, "max_timesteps": horizon,
              "model": spec, "training": asdict(cfg)}
    if layered:  # still the converted (imported) network: where it came from stays recorded, beside training.init
        config.update({key: src_cfg[key] for key in ("converted_from", "imported_from") if key in src_cfg})
    if cfg.ann:
        config.update(kind="ann", max_timesteps=None)
    record_pipeline(config, train_set.info)
    history = []
    best = (-1.0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    start_epoch = 1
    earlier = 0.0  # seconds the run trained before this invocation (a resumed run's total counts them)
    if state is not None:
        tensors, meta = state
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            best = (float(meta["best_score"]), {k[5:]: v for k, v in tensors.items() if k.startswith("best.")})
            params = dict(model.named_parameters())
            for k, v in tensors.items():
                if k.startswith("optim."):
                    opt.state[params[k[6:]]]["momentum_buffer"] = v.to(device)
            lrs = json.loads(meta["lrs"])
            if len(lrs) != len(opt.param_groups):
                raise ValueError(f"{len(lrs)} learning rates saved for {len(opt.param_groups)} parameter groups")
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr
            sched.load_state_dict(json.loads(meta["scheduler"]))
            if lookahead is not None:
                lookahead = recipe.Lookahead(model, {k[10:]: v for k, v in tensors.items()
                                                     if k.startswith("lookahead.")})
            if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and \
                    sched.T_max != cfg.epochs * steps_per_epoch:  # a new length: the schedule a run of that length has
                sched.T_max = cfg.epochs * steps_per_epoch  # at this step (closed form), continued from there
                at = math.cos(math.pi * sched.last_epoch / sched.T_max)
                for g, base in zip(opt.param_groups, sched.base_lrs):
                    g["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + at) / 2
                sched._last_lr = [g["lr"] for g in opt.param_groups]
            gen.set_state(tensors["rng.generator"])
            torch.set_rng_state(tensors["rng.torch"])
            history = json.loads(meta["history"])
            start_epoch = int(meta["epoch"]) + 1
            # a state written before the total was kept counts its epochs' own seconds (no validations)
            earlier = float(meta.get("train_seconds", sum(h["seconds"] for h in history)))
            if not (math.isfinite(earlier) and earlier >= 0):
                raise ValueError(f"train_seconds {earlier}")
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{out_dir / TRAIN_STATE} does not match its config ({e})") from None
        log(f"resuming {out_dir} after epoch {start_epoch - 1} of {cfg.epochs}")
    steps = 1 if cfg.ann else cfg.timesteps  # a QCFS ANN is stateless: its one pass is one step
    teacher = Teacher(cfg.distill, cfg.dataset, spec["num_classes"], device, cfg.distill_flip) if cfg.distill else None
    taught = [None]  # the teacher's logits for the batch being trained on
    total = cfg.epochs * steps_per_epoch

    def batches(epoch):  # the epoch's own augmentation (flip parity, shifts, JPEG) from the run's generator
        return _Sized(train_set.batches(cfg.batch_size, shuffle=True, generator=gen, augment=cfg.augment,
                                        jpeg=cfg.jpeg, translate=cfg.translate, padding=cfg.translate_padding,
                                        flip=cfg.flip, flip_seed=cfg.seed, epoch=epoch), steps_per_epoch)

    def loss_fn(out, y):
        if cfg.ann:
            value = F.cross_entropy(out[0], y, label_smoothing=cfg.label_smoothing)
        elif cfg.loss == "tet":
            value = tet_loss(out, y, cfg.tet_lambda, cfg.tet_phi, cfg.label_smoothing)
        else:
            value = mean_ce_loss(out, y, cfg.label_smoothing)
        if cfg.exit_aware:
            value = (1.0 - cfg.exit_aware) * value + cfg.exit_aware * exit_aware_loss(out, y)
        if teacher is not None:
            value = (1.0 - cfg.distill_weight) * value + cfg.distill_weight * distill_loss(
                out, taught[0], cfg.distill_temperature)
        return value

    def forward(x):
        if teacher is not None:
            taught[0] = teacher(x)
        return net(x, steps)

    def on_step(step):
        if lookahead is not None and (step % recipe.LOOKAHEAD_EVERY == 0 or step >= total):
            lookahead.update(model, 1.0 if step >= total else lookahead.decay(step, total))

    def on_epoch_start(epoch):
        _epoch_starts(model, net, cfg, epoch)

    def on_epoch_end(rec):
        nonlocal best
        epoch = rec["epoch"]
        if rank != 0:  # only rank 0 validates and writes
            history.append(rec)
            return
        if val_set is not None:
            if cfg.bn_reestimate:  # the statistics of these weights, not the lagging running ones
                reestimate_batchnorm(model, train_set, steps, cfg.batch_size, batches=cfg.bn_reestimate,
                                     seed=cfg.seed + epoch)
            acc = accuracy_per_timestep(step_logits(model, val_set, steps, device=device), val_set.labels)
            rec["val_accuracy"] = acc[-1]
            if cfg.ann:
                rec["clip_thresholds"] = [m.threshold.item() for m in model.modules() if isinstance(m, QCFS)]
            else:
                rec["val_accuracy_per_timestep"] = acc
        history.append(rec)
        score = rec.get("val_accuracy", epoch)  # without validation: keep the last epoch
        if score >= best[0]:
            best = (score, {k: v.detach().clone() for k, v in model.state_dict().items()})
            rec["kept"] = True
        _save_state(out_dir / TRAIN_STATE, model, best, opt, sched, gen, epoch, history, cfg, lookahead,
                    train_seconds=earlier + time.time() - t_start)
        log(f"epoch {epoch}: loss {rec['train_loss']:.4f} train acc {rec['train_accuracy']:.4f}"
            + (f" val acc {rec['val_accuracy']:.4f}" if val_set and cfg.ann else "")
            + (f" val acc/step {' '.join(f'{a:.4f}' for a in rec['val_accuracy_per_timestep'])}"
               if val_set and not cfg.ann else "")
            + f" ({rec['seconds']:.0f}s)")

    t_start = time.time()
    try:
        fit(model, batches, timesteps=steps, epochs=cfg.epochs, optimizer=opt, scheduler=sched, loss_fn=loss_fn,
            forward=forward, precision=cfg.precision, device=device, start_epoch=start_epoch,
            on_epoch_start=on_epoch_start, on_step=on_step, on_epoch_end=on_epoch_end,
            progress=progress and rank == 0)
    except KeyboardInterrupt:
        if history and rank == 0:  # leave a usable run behind: the best epoch so far, and the state to resume from
            model.load_state_dict(best[1])
            save_run(out_dir, model, config, {"epochs": history, "best_val_accuracy": best[0], "interrupted": True})
        log(f"interrupted after epoch {len(history)}; continue with: seenn train --resume {out_dir}")
        raise
    metrics = {"epochs": history, "best_val_accuracy": best[0] if val_set is not None else None,
               "train_seconds": earlier + time.time() - t_start, "processes": size}
    if rank == 0:
        model.load_state_dict(best[1])
        save_run(out_dir, plain_batchnorm(model), config, metrics)
    return metrics


class _CompiledANN(torch.nn.Module):
    """A QCFS ANN's training pass as one ``torch.compile``d graph on channels-last tensors (BN, QCFS and the
    residual additions fused between the convolutions; its speed against eager: docs/benchmarks.md). Same
    ``net(x, 1) -> [1, B, K]`` interface as the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)
        self._forward = torch.compile(model.ann_forward)

    def forward(self, x, timesteps: int):
        return self._forward(x.contiguous(memory_format=torch.channels_last)).unsqueeze(0)


def _epoch_starts(model, net, cfg: TrainConfig, epoch: int) -> None:
    """What changes as an epoch starts: the recipe's frozen parts (the whitening bias trains for its first epochs
    only) and training mode."""
    recipe.freeze_parts(model, cfg, epoch)
    net.train()


class _Sized:
    """An epoch's batches with their count (for the progress bar)."""

    def __init__(self, it, n: int):
        self.it, self.n = it, n

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(self.it)
