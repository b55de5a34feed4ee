"""Input corruptions for robustness checks, applied to uint8 images and stored back as uint8 (as a corrupted
image file would be). Severities 1..5 follow the spirit of CIFAR-10-C / ImageNet-C."""

from __future__ import annotations

import numpy as np
import torch

from .data import Dataset
from .errors import ConfigError

CORRUPTIONS = ("gaussian-noise", "blur", "contrast")
_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # std on [0, 1] pixels
_BLUR = (0.5, 0.75, 1.0, 1.5, 2.0)  # gaussian sigma in pixels
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor toward the image mean


def parse_severities(spec: str) -> list[int]:
    """'1..5', '3' or '1,3,5'."""
    try:
        if ".." in spec:
            a, b = spec.split("..")
            out = list(range(int(a), int(b) + 1))
        else:
            out = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--severity must look like 1..5, 3 or 1,3,5; got {spec!r}") from None
    if not out or any(not 1 <= s <= 5 for s in out):
        raise ConfigError(f"severities must be in 1..5, got {spec!r}")
    return out


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def corrupt(images: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> corrupted uint8 of the same shape."""
    if kind not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {kind!r}; choose one of {list(CORRUPTIONS)}")
    x = images.float() / 255.0
    if kind == "gaussian-noise":
        g = torch.Generator().manual_seed(seed)
        x = x + torch.randn(x.shape, generator=g) * _NOISE[severity - 1]
    elif kind == "blur":
        k = _gaussian_kernel(_BLUR[severity - 1])
        c = x.shape[1]
        r = len(k) // 2
        x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
        x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    else:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * _CONTRAST[severity - 1] + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def corrupted(data: Dataset, kind: str, severity: int, seed: int = 0) -> Dataset:
    return Dataset(data.info, f"{data.split}+{kind}-{severity}",
                   corrupt(data.images, kind, severity, seed).numpy(), data.labels.numpy())


def subset(data: Dataset, mask: np.ndarray, name: str) -> Dataset:
    return Dataset(data.info, name, data.images.numpy()[mask], data.labels.numpy()[mask])
