"""Exit rules. A rule scores the logits accumulated so far and decides, per sample, whether to stop.

Every rule answers two questions after step t (1-based): ``score(summed_logits, t)`` -> ``[B]`` and
``exits(score, t)`` -> bool ``[B]``. ``t`` is an int, or a ``[B]`` tensor when samples in one batch have run
different numbers of steps (the streaming runner). A sample that never exits stops at the last step.
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError


class ExitRule:
    name = "rule"
    threshold: float | None = None

    def score(self, summed_logits: torch.Tensor, t: int) -> torch.Tensor:
        return confidence(summed_logits)

    def exits(self, score: torch.Tensor, t: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def reason(self, score: float, t: int, exited: bool) -> str:
        return f"step {t}"

    def describe(self) -> dict:
        return {"rule": self.name, "threshold": self.threshold}


def confidence(summed_logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(summed_logits.float(), dim=-1).amax(dim=-1)


def normalized_certainty(summed_logits: torch.Tensor) -> torch.Tensor:
    """1 - H(p) / log K for p = softmax(summed logits): 1 for a one-hot p, 0 for uniform."""
    logp = torch.log_softmax(summed_logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return 1.0 - entropy / math.log(summed_logits.shape[-1])


def _check_threshold(threshold) -> float:
    if threshold is None:
        raise ConfigError("this exit rule needs --threshold")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")
    return threshold


class Confidence(ExitRule):
    """SEENN-I: exit when the max softmax of the summed logits exceeds the threshold."""

    name = "confidence"

    def __init__(self, threshold: float):
        self.threshold = _check_threshold(threshold)

    def exits(self, score, t):
        return score > self.threshold

    def reason(self, score, t, exited):
        op = ">" if exited else "<="
        return f"confidence {score:.4f} {op} {self.threshold:g} at step {t}"


class Entropy(Confidence):
    """Entropy variant: exit when 1 - normalised entropy of the summed softmax exceeds the threshold."""

    name = "entropy"

    def score(self, summed_logits, t):
        return normalized_certainty(summed_logits)

    def reason(self, score, t, exited):
        op = ">" if exited else "<="
        return f"1 - normalised entropy {score:.4f} {op} {self.threshold:g} at step {t}"


class Fixed(ExitRule):
    """Always run exactly ``timesteps`` steps (score: the confidence, for information)."""

    name = "fixed"

    def __init__(self, timesteps: int):
        if int(timesteps) < 1:
            raise ConfigError(f"--timesteps must be >= 1, got {timesteps}")
        self.timesteps = int(timesteps)

    def exits(self, score, t):
        return (torch.as_tensor(t, device=score.device) >= self.timesteps).expand(score.shape)

    def reason(self, score, t, exited):
        return f"fixed budget of {self.timesteps} steps"

    def describe(self):
        return {"rule": self.name, "threshold": None, "timesteps": self.timesteps}


RULES = ("confidence", "entropy", "fixed", "oracle")


def make_rule(name: str, *, threshold: float | None = None, timesteps: int | None = None) -> ExitRule:
    if name == "confidence":
        return Confidence(threshold)
    if name == "entropy":
        return Entropy(threshold)
    if name == "fixed":
        if timesteps is None:
            raise ConfigError("--exit fixed needs --timesteps K")
        return Fixed(timesteps)
    if name == "oracle":
        raise ConfigError("the oracle needs the labels; it is evaluated post hoc (seenn eval --exit oracle)")
    raise ConfigError(f"unknown exit rule {name!r}; choose one of {list(RULES)}")
