"""Training recipes: named sets of training settings, and the pieces the fast one is made of.

``fast`` carries the ideas of the CIFAR-10 speed records (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single
GPU", arXiv 2404.00498) to seenn's two paths, the QCFS ANN that converts and the LIF network trained with TET:

- the ``airbench`` network (:mod:`seenn.models.airbench`), its first layer a frozen *whitening* convolution set from
  training-image patches (:func:`init_whitening`; its bias trains for the first ``whiten_bias_epochs`` epochs), the
  other convolutions starting as identities where their shapes allow (:func:`init_dirac`);
- batch norm with its scale frozen at 1 and its bias stepped ``bias_lr`` times faster;
- Nesterov SGD in the *decoupled* form (:func:`param_groups`): ``lr`` and ``weight_decay`` are per 1024 examples,
  the step size divided by the momentum's gain ``1 + 1 / (1 - momentum)`` and the decay a fraction of each weight
  per step that does not depend on the learning rate, so each can be changed without re-tuning the others;
- a short linear warm-up, then a linear decay (:func:`lr_factor`); batch 1024;
- every image flipped in alternate epochs (a fixed random half starts flipped) and translated by up to 2 pixels
  with reflected borders (:mod:`seenn.data`);
- lookahead weight averaging (:class:`Lookahead`);
- the learning rate 5 per 1024 examples, not the paper's 11.5: at 11.5 the QCFS ANN diverged as the warm-up
  reached its peak (epoch 3: training loss up from 1.76 to 2.16, validation at chance, the clip values collapsing);
- batch norm's statistics re-estimated on 10 training batches before every validation (``bn_reestimate``): with
  average pooling at these learning rates the running statistics lag the weights so far that a network at 50%
  on validation read 28% with them (measured on the epoch-2 weights of the ANN: 28.3% stored, 50.2% re-estimated);
- bf16 autocast where the CPU (AVX512-BF16, AMX) or GPU has bf16 arithmetic, fp32 elsewhere (``precision="auto"``,
  resolved when the run starts; docs/benchmarks.md has the speed-up, 1.6x a step on a CPU with AVX512-BF16);
- label smoothing 0.2. The paper multiplies its readout by 1/9 (``head_scale``, kept as an option); over this
  network's average-pooled features it slowed learning (2 short trials of 40 steps of 512 images: 45.6% on
  validation at 1/9 against 53.0% at 1), so the recipe leaves the readout as it is.

Every piece is a field of :class:`seenn.training.run.TrainConfig`, recorded in the run; a recipe only changes the fields
the user did not set. :func:`time_views` is the spiking form of test-time augmentation: another view of the image
at each timestep.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn.qcfs import QCFS

# airbench94's settings, for the fields of TrainConfig; ``jpeg`` because the CIFAR-10 test batch here is 90% JPEG
FAST = {
    "model": "airbench", "epochs": 10, "batch_size": 1024, "lr": 5.0, "momentum": 0.85, "weight_decay": 0.0153,
    "nesterov": True, "decoupled": True, "bias_lr": 64.0, "frozen_bn_scale": True, "bn_momentum": 0.4,
    "schedule": "linear", "warmup": 0.23, "final_lr": 0.07, "label_smoothing": 0.2, "whiten": True,
    "whiten_bias_epochs": 3, "dirac": True, "lookahead": True, "head_scale": 1.0, "translate": 2,
    "translate_padding": "reflect", "flip": "alternate", "compile": True, "jpeg": 0.5, "bn_reestimate": 10,
    "precision": "auto",
}
RECIPES = {"fast": FAST}

WARMUP_START = 0.2  # the learning-rate factor the warm-up starts from
LOOKAHEAD_EVERY = 5  # steps between two lookahead averages
WHITEN_PATCH_IMAGES = 5000  # training images whose 2x2 patches set the whitening layer
WHITEN_EPS = 5e-4


def recipe_settings(name: str | None) -> dict:
    if name is None:
        return {}
    try:
        return dict(RECIPES[name])
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}") from None


# --------------------------------------------------------------------------------------------- initialisation


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
    """Set ``conv``'s weights so that it whitens the patches of ``images`` (normalised, ``[N, C, H, W]``): the
    eigenvectors of their covariance, each divided by the square root of its eigenvalue, and their negations
    (``conv`` has twice as many output channels as a patch has values). Its bias is zeroed."""
    c, (kh, kw) = conv.in_channels, conv.kernel_size
    d = c * kh * kw
    if conv.out_channels != 2 * d:
        raise ConfigError(f"a whitening layer over {c}x{kh}x{kw} patches has {2 * d} channels, not {conv.out_channels}")
    patches = images.float().unfold(2, kh, 1).unfold(3, kw, 1)  # [N, C, H', W', kh, kw]
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, d).double()
    cov = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    order = eigenvalues.argsort(descending=True)
    scaled = (eigenvectors[:, order] / (eigenvalues[order] + eps).sqrt()).T.reshape(d, c, kh, kw)
    conv.weight.copy_(torch.cat([scaled, -scaled]).to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def init_dirac(model: nn.Module, skip: tuple[nn.Module, ...] = ()) -> None:
    """Every 3x3 convolution (but those in ``skip``) starts as the identity on its first ``min(in, out)``
    channels, the rest of its filters as initialised (a network close to its input at the start of training)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m not in skip and m.groups == 1 and m.kernel_size[0] % 2 == 1:
            n = min(m.in_channels, m.out_channels)
            nn.init.dirac_(m.weight[:n])


def init_fresh(model: nn.Module, cfg, train_images: torch.Tensor) -> None:
    """The recipe's initialisation of a freshly built network: identity convolutions, the whitening layer set from
    ``train_images`` (normalised), the readout's weights scaled by ``head_scale``."""
    whiten = getattr(model, "whiten", None)
    if cfg.dirac:
        init_dirac(model, skip=(whiten,) if whiten is not None else ())
    if cfg.whiten:
        init_whitening(whiten, train_images[:WHITEN_PATCH_IMAGES], eps=cfg.whiten_eps)
    readout = getattr(model, "readout", None)
    if cfg.head_scale != 1.0 and readout is not None:
        with torch.no_grad():
            readout.weight.mul_(cfg.head_scale)


def configure(model: nn.Module, cfg) -> None:
    """What holds for the whole training, fresh, fine-tuned or resumed: batch norm's momentum, frozen parts."""
    if cfg.whiten and getattr(model, "whiten", None) is None:
        raise ConfigError(f"whiten: the {cfg.model} network has no whitening layer (the airbench network has)")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = cfg.bn_momentum
    freeze_parts(model, cfg, epoch=1)


def freeze_parts(model: nn.Module, cfg, epoch: int) -> None:
    """What the recipe trains in ``epoch`` (1-based): the whitening weights never, its bias for the first
    ``whiten_bias_epochs`` epochs; batch norm's scale never when it is frozen."""
    whiten = getattr(model, "whiten", None)
    if cfg.whiten and whiten is not None:
        whiten.weight.requires_grad_(False)
        if whiten.bias is not None:
            whiten.bias.requires_grad_(epoch <= cfg.whiten_bias_epochs)
    if cfg.frozen_bn_scale:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.requires_grad_(False)


# --------------------------------------------------------------------------------------------- optimisation


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """SGD parameter groups. Plain form: ``lr`` as given, ``weight_decay`` on weights (not on BN or biases).
    Decoupled form (``cfg.decoupled``): ``lr`` and ``weight_decay`` per 1024 examples, the step divided by the
    momentum's gain, the decay ``weight_decay * batch / 1024 / gain`` of each weight per step (scaled only by the
    schedule), BN biases stepped ``bias_lr`` times faster (a BN scale, where it trains, at the plain rate without
    decay; a QCFS clip value likewise: decaying it would shrink the range the converted neurons fire over), the
    readout ``head_scale ** 2`` times slower (a readout multiplied by ``head_scale``, reparametrised). Frozen
    parameters are in no group; a group's ``name`` is kept so a resumed run finds its momenta."""
    readout = getattr(model, "readout", None)
    head = {id(p) for p in readout.parameters()} if readout is not None and cfg.head_scale != 1.0 else set()

    clips = {id(m.threshold) for m in model.modules() if isinstance(m, QCFS)}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    bn_bias = {id(m.bias) for m in bns if m.bias is not None}
    bn_scale = {id(m.weight) for m in bns if m.weight is not None}
    groups: dict[str, list] = {"weights": [], "bn": [], "bn_scale": [], "biases": [], "head": [], "clip": []}
    for _, p in model.named_parameters():
        if not p.requires_grad:  # frozen for the whole run (configure): in no group
            continue
        key = "head" if id(p) in head else "bn" if id(p) in bn_bias else "bn_scale" if id(p) in bn_scale else \
            "clip" if id(p) in clips else "biases" if p.ndim <= 1 else "weights"
        groups[key].append(p)
    if not cfg.decoupled:
        lr = cfg.lr
        spec = {"weights": (lr, cfg.weight_decay), "bn": (lr * cfg.bias_lr, 0.0), "bn_scale": (lr, 0.0),
                "biases": (lr, 0.0), "head": (lr * cfg.head_scale ** 2, cfg.weight_decay), "clip": (lr, 0.0)}
    else:
        gain = 1.0 + 1.0 / (1.0 - cfg.momentum)
        lr = cfg.lr * cfg.batch_size / (1024 * gain)  # for the batch-mean loss
        decay = cfg.weight_decay * cfg.batch_size / (1024 * gain)  # per step, at schedule factor 1
        # torch's SGD adds weight_decay * p to the gradient and steps lr times that: decay / lr per group; a
        # trainable BN scale (not frozen) learns at the plain rate and is not decayed
        spec = {"weights": (lr, decay / lr), "bn": (lr * cfg.bias_lr, decay / (lr * cfg.bias_lr)),
                "bn_scale": (lr, 0.0), "clip": (lr, 0.0), "biases": (lr, decay / lr),
                "head": (lr * cfg.head_scale ** 2, decay / (lr * cfg.head_scale ** 2))}
    return [{"params": ps, "lr": spec[k][0], "weight_decay": spec[k][1], "name": k}
            for k, ps in groups.items() if ps]


def make_optimizer(model: nn.Module, cfg) -> torch.optim.SGD:
    """SGD over every parameter (a frozen one's gradient stays None, so it is not stepped), Nesterov if asked."""
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(cfg, step: int, total: int) -> float:
    """The schedule's factor on every group's learning rate at ``step`` of ``total``: ``cosine`` from 1 to
    ``final_lr``; ``linear`` from ``WARMUP_START`` up to 1 over the first ``warmup`` of the steps, then down to
    ``final_lr``."""
    total = max(total, 1)
    if cfg.schedule == "cosine":
        return cfg.final_lr + (1 - cfg.final_lr) * (1 + math.cos(math.pi * min(step, total) / total)) / 2
    warm = int(total * cfg.warmup)
    if step < warm:
        f = step / warm
        return WARMUP_START * (1 - f) + f
    f = min((step - warm) / max(total - warm, 1), 1.0)
    return (1 - f) + cfg.final_lr * f


class Lookahead:
    """Lookahead weight averaging: every ``LOOKAHEAD_EVERY`` steps the averaged weights move toward the trained
    ones by ``1 - decay`` and the network continues from the average; ``decay`` grows as ``0.95^5 (step/total)^3``,
    from plain training at the start to strong averaging at the end; at the end the network takes the average.
    Floating-point state only (weights, BN statistics)."""

    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor] | None = None):
        own = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        self.average = {k: (state[k] if state is not None else v).detach().clone() for k, v in own.items()}

    def decay(self, step: int, total: int) -> float:
        return 0.95 ** 5 * (min(step, total) / max(total, 1)) ** 3

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        sd = model.state_dict()
        for k, avg in self.average.items():
            avg.lerp_(sd[k].detach(), 1.0 - decay)
            sd[k].copy_(avg)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"lookahead.{k}": v.contiguous() for k, v in self.average.items()}


# --------------------------------------------------------------------------------------------- spiking TTA


def time_views(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Spiking test-time augmentation: ``x`` ``[B, C, H, W]`` becomes frames ``[B, T, C, H, W]`` showing another
    view at each step (the image, its mirror, shifted one pixel up-left, its mirror shifted down-right, repeating),
    so that accumulating the steps averages the views at no extra cost per step. Borders are reflected."""
    pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    views = [x, x.flip(-1), pad[..., :h, :w], pad[..., 2:2 + h, 2:2 + w].flip(-1)]
    return torch.stack([views[t % len(views)] for t in range(timesteps)], 1)


__all__ = ["FAST", "RECIPES", "Lookahead", "freeze_parts", "init_dirac", "init_whitening", "lr_factor",
           "make_optimizer", "param_groups", "init_fresh", "configure", "recipe_settings", "time_views"]
