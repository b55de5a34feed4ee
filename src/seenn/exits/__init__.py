"""Exit rules. A rule scores the logits accumulated so far and decides, per sample, whether to stop.

Every rule answers two questions after step t (1-based): ``score(summed_logits, t)`` -> ``[B]`` and
``exits(score, t)`` -> bool ``[B]``. ``t`` is an int, or a ``[B]`` tensor when samples in one batch have run
different numbers of steps (the streaming runner). A sample that never exits stops at the last step.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


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
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}", param="threshold")
    return threshold


class Confidence(ExitRule):
    """SEENN-I: exit when the max softmax of the summed logits exceeds the threshold.

    ``threshold`` is one number, or one per timestep (a list; the last step always exits). ``temperature``
    divides the summed logits before the softmax (temperature scaling, fitted by ``seenn calibrate``)."""

    name = "confidence"

    def __init__(self, threshold, temperature: float = 1.0):
        if isinstance(threshold, (list, tuple)):
            if not threshold:
                raise ConfigError("per-step thresholds must not be empty")
            self.thresholds = [_check_threshold(t) for t in threshold]
            self.threshold = None
            self._per_step = torch.tensor(self.thresholds, dtype=torch.float64)
        else:
            self.threshold = _check_threshold(threshold)
            self.thresholds = None
        temperature = float(temperature)
        if not temperature > 0 or math.isinf(temperature):
            raise ConfigError(f"temperature must be a positive number, got {temperature}")
        self.temperature = temperature

    def score(self, summed_logits, t):
        return confidence(summed_logits / self.temperature if self.temperature != 1.0 else summed_logits)

    def _threshold_at(self, score, t):
        if self.thresholds is None:
            return self.threshold
        idx = (torch.as_tensor(t) - 1).clamp(max=len(self.thresholds) - 1)
        return self._per_step.to(score.device)[idx].to(score.dtype)

    def exits(self, score, t):
        return score > self._threshold_at(score, t)

    def reason(self, score, t, exited):
        op = ">" if exited else "<="
        th = float(self._threshold_at(torch.tensor(score), t))
        return f"{self.score_name} {score:.4f} {op} {th:g} at step {t}"

    score_name = "confidence"

    def describe(self):
        d = {"rule": self.name, "threshold": self.threshold}
        if self.thresholds is not None:
            d["thresholds"] = self.thresholds
        if self.temperature != 1.0:
            d["temperature"] = self.temperature
        return d


class Entropy(Confidence):
    """Entropy variant: exit when 1 - normalised entropy of the summed softmax exceeds the threshold."""

    name = "entropy"
    score_name = "1 - normalised entropy"

    def score(self, summed_logits, t):
        return normalized_certainty(summed_logits / self.temperature if self.temperature != 1.0 else summed_logits)


class Fixed(ExitRule):
    """Always run exactly ``timesteps`` steps (score: the confidence, for information)."""

    name = "fixed"

    def __init__(self, timesteps: int):
        if int(timesteps) < 1:
            raise ConfigError(f"timesteps must be >= 1, got {timesteps}", param="timesteps")
        self.timesteps = int(timesteps)

    def exits(self, score, t):
        return (torch.as_tensor(t, device=score.device) >= self.timesteps).expand(score.shape)

    def reason(self, score, t, exited):
        return f"fixed budget of {self.timesteps} steps"

    def describe(self):
        return {"rule": self.name, "threshold": None, "timesteps": self.timesteps}


RULES = ("confidence", "entropy", "fixed", "oracle")


def make_rule(name: str, *, threshold=None, timesteps: int | None = None, temperature: float = 1.0) -> ExitRule:
    if name == "confidence":
        return Confidence(threshold, temperature)
    if name == "entropy":
        return Entropy(threshold, temperature)
    if name == "fixed":
        if timesteps is None:
            raise ConfigError("timesteps: the fixed rule needs a number of steps", param="timesteps")
        return Fixed(timesteps)
    if name == "oracle":
        raise ConfigError("the oracle needs the labels; it is evaluated post hoc (seenn eval --exit oracle)")
    raise ConfigError(f"unknown exit rule {name!r}; choose one of {list(RULES)}")


def describe_text(desc: dict) -> str:
    """A rule description (``ExitRule.describe()``) in words, e.g. 'confidence > 0.99 (temperature 1.3)'."""
    name = desc["rule"]
    if desc.get("thresholds"):
        text = f"{name} > per-step {[round(t, 4) for t in desc['thresholds'][:-1]]}"
    elif desc.get("threshold") is not None:
        text = f"{name} > {desc['threshold']:g}"
    elif desc.get("timesteps"):
        text = f"{name}, {desc['timesteps']} steps"
    else:
        text = name
    if desc.get("temperature", 1.0) != 1.0:
        text += f" (temperature {desc['temperature']:.3g})"
    return text
