"""What a run does, measured: :class:`~seenn.analysis.evaluate.Evaluation` (one full-T pass plus rules run by the
runner; the entry point), :mod:`~seenn.analysis.metrics`, thresholds with a guarantee
(:mod:`~seenn.analysis.calibration`) and the live audit's statistics (:mod:`~seenn.analysis.audit`), energy
(:mod:`~seenn.analysis.energy`), corruptions (:mod:`~seenn.analysis.robustness`), why a sample left
(:mod:`~seenn.analysis.explain`), wall-clock comparisons (:mod:`~seenn.analysis.bench`) and the HTML report
(:mod:`~seenn.analysis.report`)."""

from __future__ import annotations

from .calibration import Calibration, calibrate_network
from .evaluate import Evaluation

__all__ = ["Calibration", "Evaluation", "calibrate_network"]
