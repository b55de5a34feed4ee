"""Input corruptions for robustness checks, applied to uint8 images and stored back as uint8 (as a corrupted
image file would be). Severities 1..5 follow the spirit of CIFAR-10-C / ImageNet-C (``jpeg-compression``: its
qualities)."""

from __future__ import annotations

import numpy as np
import torch

from ..data import Dataset, cifar_lossless_mask
from ..data.augment import jpeg_recode
from ..errors import ConfigError
from ..exits import describe_text
from .evaluate import Evaluation

CORRUPTIONS = ("gaussian-noise", "blur", "contrast", "jpeg-compression")
_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # std on [0, 1] pixels
_BLUR = (0.5, 0.75, 1.0, 1.5, 2.0)  # gaussian sigma in pixels
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor toward the image mean
_JPEG = (80, 65, 58, 50, 40)  # JPEG quality (CIFAR-10-C's); the CIFAR-10 test batch here was decoded from quality 75


def parse_severities(spec: str) -> list[int]:
    """'1..5', '3' or '1,3,5'."""
    try:
        if ".." in spec:
            a, b = spec.split("..")
            out = list(range(int(a), int(b) + 1))
        else:
            out = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ConfigError(f"severity must look like 1..5, 3 or 1,3,5; got {spec!r}", param="severity") from None
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
    if kind == "jpeg-compression":  # the same images recompressed: paired with the clean ones, unlike ``jpeg``
        return jpeg_recode(images, _JPEG[severity - 1])
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


def robustness_report(model, data: Dataset, rule, max_timesteps: int, corruption: str, severity: str = "1..5", *,
                      seed: int = 0, batch_size: int = 256, device: str = "cpu", calibration: dict | None = None,
                      data_dir=None) -> dict:
    """The rule run by the step-by-step runner on clean data and on each severity of ``corruption`` (for ``jpeg``:
    the exact and JPEG-decoded parts of the CIFAR-10 test batch). Each row holds the accuracy per timestep, the
    exit's summary and its drop against full T; with ``calibration`` (the rule's stored certificate) also whether
    the certified maximum drop still holds under the shift."""

    if corruption == "jpeg":
        if data.info.name != "cifar10" or data.split != "test":
            raise ConfigError("corruption jpeg compares the exact and JPEG parts of the CIFAR-10 test batch",
                              param="corruption")
        mask = cifar_lossless_mask(data_dir)[: len(data)]
        variants = [("exact", subset(data, mask, "test-exact")), ("jpeg", subset(data, ~mask, "test-jpeg"))]
    else:
        variants = [("clean", data)] + [(s, corrupted(data, corruption, s, seed))
                                         for s in parse_severities(severity)]
    rows = []
    for label, d in variants:
        if len(d) == 0:
            continue
        ev = Evaluation(model, d, max_timesteps, batch_size=batch_size, device=device)
        head = ev.header()
        e = ev.summarize(rule.describe(), ev.run(rule))
        drop = head["accuracy_per_timestep"][-1] - e["accuracy"]
        row = {"severity" if corruption != "jpeg" else "part": label, "samples": head["samples"],
               "accuracy_per_timestep": head["accuracy_per_timestep"], "exit": e, "accuracy_drop": drop}
        if calibration:
            row["promise_kept"] = drop <= calibration["max_accuracy_drop"]
        rows.append(row)
    return {"dataset": data.info.name, "split": data.split, "corruption": corruption,
            "max_timesteps": max_timesteps, "rule": rule.describe(),
            "promise": None if not calibration else {"max_accuracy_drop": calibration["max_accuracy_drop"],
                                                     "confidence_level": calibration["confidence_level"]},
            "results": rows}


def robustness_lines(report: dict) -> list[str]:
    """The report as a table: one row per severity (or part), the certified promise kept or BROKEN."""

    lines = [f"{report['dataset']} / {report['split']}, corruption {report['corruption']}, "
             f"rule {describe_text(report['rule'])}",
             f"{'level':<8}{'full T':>9}{'exit acc':>10}{'drop':>8}{'avg steps':>11}{'false exits':>13}{'promise':>9}"]
    for r in report["results"]:
        label = r.get("severity", r.get("part"))
        kept = "" if "promise_kept" not in r else ("kept" if r["promise_kept"] else "BROKEN")
        lines.append(f"{label!s:<8}{r['accuracy_per_timestep'][-1]:>9.2%}{r['exit']['accuracy']:>10.2%}"
                     f"{r['accuracy_drop'] * 100:>+7.2f}p{r['exit']['avg_timesteps']:>11.3f}"
                     f"{r['exit']['false_exits']:>13}{kept:>9}")
    return lines
