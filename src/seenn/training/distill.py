"""Knowledge distillation from a teacher run (``seenn train --distill RUN``): the network in training matches, at
every step, the teacher's softened class probabilities on the same augmented batch, beside its own loss.

The usual teacher is the QCFS ANN a hybrid LIF run starts from (``--init`` and ``--distill`` the same run): the
spiking network keeps being pulled toward the ANN it came from while it learns to use time. The loss, for
student logits ``O_t`` (each step's own, as TET reads them) and teacher logits ``Z`` at temperature ``tau``:
``tau^2 * mean_t KL(softmax(Z / tau) || softmax(O_t / tau))`` (Hinton et al. 2015, per step). A spiking teacher
gives its logits averaged over its own horizon (``max_timesteps`` steps: T times an ANN's cost a batch). With
``flip`` (``--distill-flip``) the teacher's logits are the average over each image and its mirror: on the CIFAR-10
test batch this lifts the shipped width-1.25 QCFS ANN from 90.20% to 91.00% (docs/benchmarks.md), for one more
teacher pass a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..runs.store import load_run, read_config, resolve_run


def check_teacher(run, dataset: str, config: dict | None = None) -> dict:
    """The teacher run's config (read unless given), refused (one line) when the run is missing or was trained on
    other data."""
    config = config if config is not None else read_config(resolve_run(run))
    if config["dataset"] != dataset:
        raise ConfigError(f"--distill {run} was trained on {config['dataset']}, this run trains on {dataset}: "
                          "a teacher must read the same data pipeline", param="distill")
    return config


class Teacher:
    """A frozen run giving ``[B, K]`` logits for a batch of the student's inputs (``x`` ``[B, C, H, W]``)."""

    def __init__(self, run, dataset: str, num_classes: int, device: str = "cpu", flip: bool = False):
        self.model, config = load_run(run, device)
        self.flip = flip  # average the logits of each image and its mirror (``--distill-flip``)
        check_teacher(run, dataset, config)
        if config["model"]["num_classes"] != num_classes:
            raise ConfigError(f"--distill {run} has {config['model']['num_classes']} classes, this run "
                              f"{num_classes}", param="distill")
        self.ann = config.get("kind") == "ann"
        self.timesteps = config["max_timesteps"]
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            return (self._logits(x) + self._logits(x.flip(-1))) / 2
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.ann:
            return self.model.ann_forward(x).float()
        return self.model(x, self.timesteps).float().mean(0)


def distill_loss(time_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``tau^2 * mean over t and b of KL(softmax(teacher / tau) || softmax(O_t / tau))``; ``time_logits``
    ``[T, B, K]``, ``teacher_logits`` ``[B, K]``."""
    tau = float(temperature)
    target = F.softmax(teacher_logits.float() / tau, -1)
    log_p = F.log_softmax(time_logits / tau, -1)
    kl = F.kl_div(log_p, target.expand_as(log_p), reduction="none").sum(-1)  # [T, B]
    return kl.mean() * tau * tau
