"""The live audit of early exits: a sequential test that notices when they stop being safe, without labels.

A calibrated threshold (``seenn calibrate``) certifies that the **false-exit rate** (right at full T, wrong at the
early exit) is at most ``bound`` on data like its calibration split. A false exit is always a *disagreement* between
the early answer and the full-T answer, and disagreements need no label: run a random share of requests to full T
anyway and each gives one observation ``X = [early != full]``, an unbiased draw of the disagreement rate ``p``,
which is at least the false-exit rate. The audit tests ``H0: p <= bound`` as the observations come.

The test is anytime-valid: the wealth of a mixture of betting strategies, ``W_n = mean_j prod_i (1 + l_j (X_i -
bound))`` for a grid of bets ``0 < l_j < 1 / bound``, is a nonnegative supermartingale under H0, so by Ville's
inequality the probability that it *ever* reaches ``1 / alpha`` is at most ``alpha``, however long the service runs
and however often it is looked at. The alarm is raised there. Because disagreements include rescues (wrong at full T,
right early), the alarm errs on the side of raising early, never late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

BETS = tuple(0.5 ** k for k in range(1, 11))  # fractions of the largest bet 1 / bound: from bold to cautious


@dataclass
class AuditState:
    observations: int
    disagreements: int
    log_wealth: float
    alarm: bool
    alarm_at: int | None  # the observation that raised the alarm

    @property
    def rate(self) -> float | None:
        return self.disagreements / self.observations if self.observations else None


class Audit:
    """``Audit(bound, alpha).update(disagree) -> alarm``; ``reset()`` starts a fresh test (an operator's reset)."""

    def __init__(self, bound: float, alpha: float = 0.01):
        if not 0.0 < bound < 1.0:
            raise ValueError(f"the audit's bound must be in (0, 1), got {bound}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"the audit's alpha must be in (0, 1), got {alpha}")
        self.bound, self.alpha = float(bound), float(alpha)
        self._bets = np.array(BETS) / self.bound
        self.reset()

    def reset(self) -> None:
        self._log = np.zeros(len(self._bets))  # each bet's log wealth
        self.observations = self.disagreements = 0
        self.alarm, self.alarm_at = False, None

    @property
    def log_wealth(self) -> float:
        m = self._log.max()
        return float(m + math.log(np.exp(self._log - m).mean()))

    def update(self, disagree: bool) -> bool:
        x = 1.0 if disagree else 0.0
        self.observations += 1
        self.disagreements += int(disagree)
        self._log += np.log1p(self._bets * (x - self.bound))
        if not self.alarm and self.log_wealth >= math.log(1.0 / self.alpha):
            self.alarm, self.alarm_at = True, self.observations
        return self.alarm

    def state(self) -> AuditState:
        return AuditState(self.observations, self.disagreements, self.log_wealth, self.alarm, self.alarm_at)


def audit_stream(early_prediction, full_prediction, bound: float, fraction: float, *, alpha: float = 0.01,
                 seed: int = 0) -> dict:
    """The audit run offline over a stream of samples in order (``seenn eval --audit-fraction``): each sample is
    audited with probability ``fraction``; returns what a service would have reported at the end."""
    early, full = np.asarray(early_prediction), np.asarray(full_prediction)
    picked = np.random.default_rng(seed).random(len(early)) < fraction
    audit = Audit(bound, alpha)
    alarm_request = None
    for i in np.flatnonzero(picked):
        if audit.update(bool(early[i] != full[i])) and alarm_request is None:
            alarm_request = int(i) + 1
    s = audit.state()
    return {"fraction": fraction, "bound": bound, "alpha": alpha, "requests": len(early),
            "audited": s.observations, "disagreements": s.disagreements, "disagreement_rate": s.rate,
            "alarm": s.alarm, "alarm_after_audits": s.alarm_at, "alarm_after_requests": alarm_request}


def audit_bound(config: dict, override: float | None = None) -> float:
    """The bound the audit holds the live disagreement rate to: ``override`` (``--audit-bound``), else the run's
    calibration's upper confidence bound on the validation disagreement rate (``disagreement_bound``), else, for
    runs calibrated before it was recorded, the certified false-exit bound (stricter than it should be:
    disagreements include rescues)."""
    if override is not None:
        return float(override)
    calib = (config.get("exit", {}).get("confidence") or {}).get("calibration")
    if not calib:
        raise ConfigError("the audit tests the run's certified bound: calibrate the run first (seenn calibrate) or "
                          "give --audit-bound")
    return float(calib.get("disagreement_bound") or calib["max_accuracy_drop"])
