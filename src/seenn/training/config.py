"""``TrainConfig``: every setting of a ``seenn train`` run, recorded in the run and checked in one place
(:meth:`TrainConfig.validate`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..data import DEFAULT_VAL_SIZE
from ..errors import ConfigError
from ..io.schema import LIMITS, bounded
from ..models import MODELS
from .recipe import RECIPES

LOSSES = ("tet", "mean-ce")
TRAIN_PRECISIONS = ("fp32", "bf16", "auto")
MAX_DISTILL_TEMPERATURE = 100.0  # bound on --distill-temperature
MAX_WHITEN_EPS = 100.0  # bound on --whiten-eps (normalised pixels: the eigenvalues of a 2x2 RGB patch sum to about 12)


ANN_MODELS = ("convnet", "vgg", "resnet19", "resnet20", "airbench")  # layouts with a QCFS form
LAYERED = ("sequential", "graph")  # networks given as layer lists (converted, imported): fine-tuned as they are


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
    jpeg: float = 0.0  # probability of re-encoding a training image as JPEG (data.augment.jpeg_roundtrip)
    # bf16: convolutions and linear layers under bf16 autocast (membranes, BN, loss fp32); auto: bf16 where the
    # device has bf16 arithmetic, else fp32, resolved when the run starts and recorded as the one chosen
    precision: str = "fp32"
    compile: bool = False  # torch.compile the neurons' BPTT loops (faster on CPU after a one-off compile)
    init: str | None = None  # start from this run's weights (fine-tuning)
    exit_aware: float = 0.0  # weight of the exit-aware term (0: plain loss)
    distill: str | None = None  # a teacher run whose softened outputs the network also matches (training.distill)
    distill_weight: float = 0.5  # the distillation term's weight (the own loss gets 1 - it)
    distill_temperature: float = 4.0  # softmax temperature of the distillation term
    distill_flip: bool = False  # the teacher's logits averaged over the batch and its mirror image
    ann: bool = False  # train the network as an ANN with QCFS activations, for ``seenn convert``
    quant_levels: int = 8  # QCFS quantization levels L (with ``ann``)
    clip_init: float = 2.0  # QCFS initial clip value lam (with ``ann``; see qcfs.py on why not the paper's 8)
    image_size: int | None = None  # imagefolder:PATH datasets: the square size images are resized to (default 32)
    frames_by: str = "time"  # events:PATH datasets: recordings cut into T frames by equal "time" or event "count"
    # the pieces of a training recipe (seenn.training.recipe); ``recipe`` names the set the other fields started from
    recipe: str | None = None
    nesterov: bool = False
    decoupled: bool = False  # lr and weight_decay per 1024 examples, decoupled (seenn.training.recipe.param_groups)
    bias_lr: float = 1.0  # BN biases' learning rate, times lr (decoupled form)
    head_scale: float = 1.0  # the readout trained as if multiplied by this (decoupled form)
    frozen_bn_scale: bool = False  # batch norm's scale stays 1
    bn_momentum: float = 0.1  # PyTorch's convention: the new batch's weight in the running statistics
    schedule: str = "cosine"  # or "linear": warm-up from 0.2 over ``warmup`` of the steps, then linear decay
    warmup: float = 0.0
    final_lr: float = 0.0  # the schedule's last factor
    label_smoothing: float = 0.0
    whiten: bool = False  # first layer set from training-image patches and frozen (the airbench network)
    whiten_bias_epochs: int = 3  # epochs the whitening layer's bias trains
    whiten_eps: float = 5e-4  # added to each eigenvalue before whitening: damps the low-variance (fine) patterns
    dirac: bool = False  # 3x3 convolutions start as identities
    lookahead: bool = False  # lookahead weight averaging
    bn_reestimate: int = 0  # batches: BN statistics re-estimated on this many training batches before validation
    translate: int = 4  # augmentation: shift of up to this many pixels
    translate_padding: str = "zeros"  # or "reflect"
    flip: str = "random"  # or "alternate": every image mirrored in alternate epochs
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:

        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        bounded("timesteps", self.timesteps, "--timesteps")
        bounded("epochs", self.epochs, "--epochs")
        bounded("batch_size", self.batch_size, "--batch-size")
        bounded("seed", self.seed, "--seed", lo=0)
        bounded("samples", self.val_size, "--val-size", lo=0)
        if self.limit is not None:
            bounded("samples", self.limit, "--limit")
        if not (self.width > 0 and self.width <= LIMITS["width"]):
            raise ConfigError(f"width must be in (0, {LIMITS['width']:g}], got {self.width}", param="width")
        if not (0.0 <= self.weight_decay <= 1.0):
            raise ConfigError(f"weight_decay must be in [0, 1], got {self.weight_decay}", param="weight_decay")
        if not (0.0 <= self.momentum < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not math.isfinite(self.tet_phi):
            raise ConfigError(f"tet_phi must be a finite number, got {self.tet_phi}", param="tet_phi")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}", param="lr")
        if not 0.0 <= self.exit_aware <= 1.0:
            raise ConfigError(f"exit_aware must be in [0, 1], got {self.exit_aware}", param="exit_aware")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}", param="loss")
        if self.ann and self.model not in ANN_MODELS:
            raise ConfigError(f"--ann trains {', '.join(ANN_MODELS)} (layouts that convert); {self.model!r} is "
                              "not one of them")
        if self.model in LAYERED and not self.init:
            raise ConfigError(f"--model {self.model} is a network given as layers: it comes from a converted or "
                              "imported run, fine-tuned with --init RUN")
        if self.ann and self.exit_aware:
            raise ConfigError("exit_aware is for spiking runs; an --ann run has no timesteps", param="exit_aware")
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"precision for training must be one of {', '.join(TRAIN_PRECISIONS)}, got "
                              f"{self.precision!r}", param="precision")
        if not 0.0 <= self.jpeg <= 1.0:
            raise ConfigError(f"jpeg must be in [0, 1], got {self.jpeg}", param="jpeg")
        if not 0.0 < self.whiten_eps <= MAX_WHITEN_EPS:
            raise ConfigError(f"whiten_eps must be in (0, {MAX_WHITEN_EPS}], got {self.whiten_eps}", param="whiten_eps")
        if not (self.clip_init > 0 and math.isfinite(self.clip_init)):
            raise ConfigError(f"clip_init must be a positive number, got {self.clip_init}", param="clip_init")
        bounded("quant_levels", self.quant_levels, "--quant-levels")
        if self.frames_by not in ("time", "count"):
            raise ConfigError(f"frames_by must be time or count, got {self.frames_by!r}", param="frames_by")
        if self.dataset.startswith("events:") and (self.ann or self.jpeg or self.init or self.distill):
            raise ConfigError("an events: dataset trains spiking runs directly (no --ann, --jpeg, --init or "
                              "--distill: recordings are not images)")
        if self.distill_flip and not self.distill:
            raise ConfigError("distill_flip needs a teacher (--distill RUN)", param="distill_flip")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill_weight must be in [0, 1], got {self.distill_weight}", param="distill_weight")
        if not 0.0 < self.distill_temperature <= MAX_DISTILL_TEMPERATURE:
            raise ConfigError(f"distill_temperature must be in (0, {MAX_DISTILL_TEMPERATURE:g}], got "
                              f"{self.distill_temperature}", param="distill_temperature")
        if not 0.0 <= self.tet_lambda <= 1.0:
            raise ConfigError(f"tet_lambda must be in [0, 1], got {self.tet_lambda}", param="tet_lambda")
        self._validate_recipe()

    def _validate_recipe(self) -> None:
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ConfigError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}", param="recipe")
        for name, lo, hi in (("bias_lr", 0.0, 1e6), ("head_scale", 0.0, 1e3), ("bn_momentum", 0.0, 1.0)):
            v = getattr(self, name)
            if not (lo < v <= hi):
                raise ConfigError(f"--{name.replace('_', '-')} must be in ({lo:g}, {hi:g}], got {v}")
        for name in ("warmup", "final_lr", "label_smoothing"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
        if not self.decoupled and (self.bias_lr != 1.0 or self.head_scale != 1.0):
            raise ConfigError("bias_lr and --head-scale are settings of the decoupled optimiser (--decoupled)",
                              param="bias_lr")
        if self.schedule not in ("cosine", "linear"):
            raise ConfigError(f"schedule must be cosine or linear, got {self.schedule!r}", param="schedule")
        if self.translate_padding not in ("zeros", "reflect"):
            raise ConfigError(f"translate_padding must be zeros or reflect, got {self.translate_padding!r}",
                              param="translate_padding")
        if self.flip not in ("random", "alternate"):
            raise ConfigError(f"flip must be random or alternate, got {self.flip!r}", param="flip")
        if not 0 <= self.translate <= 8:
            raise ConfigError(f"translate must be in [0, 8] pixels, got {self.translate}", param="translate")
        bounded("epochs", self.whiten_bias_epochs, "--whiten-bias-epochs", lo=0)
        bounded("repeats", self.bn_reestimate, "--bn-reestimate", lo=0)
        if self.whiten and self.model not in ("airbench",) and self.model not in LAYERED:
            raise ConfigError(f"whiten needs a network with a whitening layer (airbench), not {self.model!r}",
                              param="whiten")
