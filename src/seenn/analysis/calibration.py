"""Choosing exit thresholds with a guarantee (Learn then Test, Angelopoulos et al. 2021).

The risk controlled is the **false-exit rate**: the fraction of samples that the full-T network gets right but the
early exit gets wrong. The accuracy drop relative to full T equals (false exits - rescued) / n, so it is never
larger than the false-exit rate: bounding the latter bounds the former.

For each candidate threshold, from the most conservative (never exit early) to the most aggressive, the null
hypothesis "false-exit rate > alpha" is tested with the exact binomial tail: p = P(Binomial(n, alpha) <= k) for k
false exits among n validation samples. Fixed-sequence testing walks down the candidates and stops at the first
that cannot be rejected at level delta = 1 - confidence; the last rejected one is chosen. With probability at least
``confidence_level`` over the draw of the validation data, the chosen threshold's false-exit rate on new data from
the same distribution is at most alpha.

Per-step thresholds (one per timestep) are chosen the same way along a one-dimensional path of threshold vectors
``1 - s (1 - shape)``, where the shape is fitted on one half of the validation split (coordinate descent under the
same false-exit budget) and the scale s is certified on the other half, so the path does not depend on the data
that certifies it. A temperature (``temperature=True``) is chosen the same way: on one half (the NLL fit or one of
a few fixed values, whichever lets a threshold within the budget exit soonest there), and the threshold is
certified on the other half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from ..exits import Confidence, confidence
from ..io.files import CONFIG, copy_folder, read_json, staged_dir, write_json
from ..runtime.engine import step_logits as dataset_step_logits

# ------------------------------------------------------------------------------------------- statistics


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logp, log1p = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * logp + (n - i) * log1p
             for i in range(k + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


def fixed_sequence_test(false_exits: list[int], n: int, alpha: float, delta: float) -> int:
    """Index of the last candidate (in the given order) whose null 'risk > alpha' is rejected before the first
    failure; -1 if even the first cannot be rejected."""
    chosen = -1
    for i, k in enumerate(false_exits):
        if binomial_cdf(k, n, alpha) > delta:
            break
        chosen = i
    return chosen


# ------------------------------------------------------------------------------------------- temperature, ECE


def scaled_confidence(summed_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return confidence(summed_logits / temperature)


def fit_temperature(step_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature tau minimising the NLL of softmax(summed logits / tau), over every step's summed logits."""
    summed = step_logits.cumsum(dim=1).double()
    n, t, k = summed.shape
    flat, y = summed.reshape(n * t, k), labels.repeat_interleave(t)

    def nll(log_tau: float) -> float:
        return torch.nn.functional.cross_entropy(flat / math.exp(log_tau), y).item()

    lo, hi = math.log(0.05), math.log(50.0)  # golden-section search on log tau (the NLL is unimodal in it)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


def expected_calibration_error(conf: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins."""
    edges = torch.linspace(0, 1, bins + 1)
    ece, n = 0.0, len(conf)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.sum().item() / n * abs(conf[m].mean().item() - correct[m].float().mean().item())
    return ece


def ece_per_timestep(step_logits, labels, temperature: float = 1.0, bins: int = 15) -> list[float]:
    summed = step_logits.cumsum(dim=1)
    out = []
    for t in range(summed.shape[1]):
        conf = scaled_confidence(summed[:, t], temperature)
        out.append(expected_calibration_error(conf, summed[:, t].argmax(1) == labels, bins))
    return out


# ------------------------------------------------------------------------------------------- exits under thresholds


def exit_steps(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """0-based exit step for each sample under per-step thresholds ``[T]`` (the last step always exits)."""
    fire = scores > thresholds[None, :]
    fire[:, -1] = True
    return fire.float().argmax(dim=1)


def _outcomes(scores, thresholds, correct):
    """(number of false exits, average timesteps) under the given per-step thresholds."""
    t = exit_steps(scores, thresholds)
    right_exit = correct[torch.arange(len(t)), t]
    false = int((correct[:, -1] & ~right_exit).sum())
    return false, (t + 1).double().mean().item()


def candidate_grid(scores: torch.Tensor, size: int = 200) -> torch.Tensor:
    """Thresholds from 1 (never exit) down through the quantiles of the observed scores."""
    q = torch.quantile(scores.flatten().double(), torch.linspace(1, 0, size, dtype=torch.double))
    return torch.cat([torch.ones(1, dtype=torch.double), q]).unique().flip(0)


def fit_per_step(scores, correct, budget: int, grid_size: int = 60, sweeps: int = 3) -> torch.Tensor:
    """Per-step thresholds with the fewest average timesteps whose false exits stay within ``budget`` on the
    given samples: the best single threshold first, then coordinate descent over each step's threshold."""
    n, t_max = scores.shape
    grids = [candidate_grid(scores[:, t], grid_size) for t in range(t_max - 1)]
    single = candidate_grid(scores[:, :-1], grid_size)
    best = torch.ones(t_max, dtype=torch.double)
    best_steps = _outcomes(scores, best, correct)[1]
    for th in single:
        trial = torch.full((t_max,), float(th), dtype=torch.double)
        f, st = _outcomes(scores, trial, correct)
        if f <= budget and st < best_steps:
            best, best_steps = trial, st
    for _ in range(sweeps):
        improved = False
        for t in range(t_max - 1):
            for th in grids[t]:
                trial = best.clone()
                trial[t] = th
                f, st = _outcomes(scores, trial, correct)
                if f <= budget and st < best_steps - 1e-12:
                    best, best_steps, improved = trial, st, True
        if not improved:
            break
    return best


def scaled_path(shape: torch.Tensor, points: int = 120) -> list[torch.Tensor]:
    """Threshold vectors from all-ones (never exit early) through ``shape`` and beyond: 1 - s (1 - shape)."""
    return [(1.0 - s * (1.0 - shape)).clamp(0.0, 1.0) for s in torch.linspace(0.0, 2.0, points, dtype=torch.double)]


def calibrate(step_logits: torch.Tensor, labels: torch.Tensor, *, max_accuracy_drop: float,
              confidence_level: float = 0.95, per_step: bool = False, temperature: bool = False,
              seed: int = 0) -> dict:
    """Choose confidence threshold(s) on validation step logits ``[N, T, K]``; see the module docstring."""
    if not 0.0 < max_accuracy_drop < 1.0:
        raise ConfigError(f"max_accuracy_drop must be in (0, 1), got {max_accuracy_drop}", param="max_accuracy_drop")
    if not 0.0 < confidence_level < 1.0:
        raise ConfigError(f"confidence_level must be in (0, 1), got {confidence_level}", param="confidence_level")
    n, t_max, _ = step_logits.shape
    delta = 1.0 - confidence_level
    summed = step_logits.cumsum(dim=1)
    correct = summed.argmax(dim=2) == labels[:, None]
    split = per_step or temperature  # anything fitted is fitted on one half and certified on the other
    if split:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        fit_idx, test_idx = perm[: n // 2], perm[n // 2:]
    else:
        fit_idx = test_idx = torch.arange(n)
    out = {"method": "learn-then-test, fixed-sequence, binomial tail on the false-exit rate",
           "max_accuracy_drop": max_accuracy_drop, "confidence_level": confidence_level,
           "validation_samples": n, "ece_per_timestep": ece_per_timestep(step_logits, labels, 1.0)}
    tau = 1.0
    if temperature:
        tau, out["temperature_nll"] = choose_temperature(summed[fit_idx], correct[fit_idx], step_logits[fit_idx],
                                                         labels[fit_idx], max_accuracy_drop)
        out["ece_per_timestep_scaled"] = ece_per_timestep(step_logits, labels, tau)
    out["temperature"] = tau
    scores = torch.stack([scaled_confidence(summed[:, t], tau) for t in range(t_max)], dim=1).double()
    if split:
        out["path_fit_samples"] = len(fit_idx)
    if not per_step:
        grid = candidate_grid(scores[fit_idx][:, :-1])
        paths = [torch.full((t_max,), float(th), dtype=torch.double) for th in grid]
    else:
        shape = fit_per_step(scores[fit_idx], correct[fit_idx], int(max_accuracy_drop * len(fit_idx)))
        paths = scaled_path(shape)
    s_test, c_test = scores[test_idx], correct[test_idx]
    outcomes = [_outcomes(s_test, p, c_test) for p in paths]
    chosen = fixed_sequence_test([f for f, _ in outcomes], len(test_idx), max_accuracy_drop, delta)
    if chosen < 0:
        thresholds, (false, steps) = torch.ones(t_max, dtype=torch.double), _outcomes(s_test, torch.ones(t_max), c_test)
        out["note"] = "no threshold could be certified: every sample runs all timesteps"
    else:
        thresholds, (false, steps) = paths[chosen], outcomes[chosen]
    thresholds = [float(x) for x in thresholds[:-1]] + [1.0]
    out.update({
        "per_step": per_step,
        "threshold": thresholds[0] if not per_step else None,
        "thresholds": thresholds if per_step else None,
        "certified_samples": len(test_idx),
        "validation_false_exits": false,
        "validation_avg_timesteps": steps,
        "validation_accuracy_drop": (c_test[:, -1].double().mean()
                                     - c_test[torch.arange(len(test_idx)), exit_steps(s_test, torch.tensor(thresholds, dtype=torch.double))].double().mean()).item(),
        "p_value": binomial_cdf(false, len(test_idx), max_accuracy_drop),
    })
    # what a live audit can watch without labels: how often the early answer differs from full T (every false exit
    # does), with its one-sided upper confidence bound on data like this (seenn serve --audit-fraction tests it)
    summed_test = summed[test_idx]
    pred = summed_test.argmax(dim=2)
    exit_at = exit_steps(s_test, torch.tensor(thresholds, dtype=torch.double))
    disagree = int((pred[torch.arange(len(test_idx)), exit_at] != pred[:, -1]).sum())
    out["validation_disagreements"] = disagree
    out["disagreement_bound"] = binomial_upper_bound(disagree, len(test_idx), delta)
    return out


TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def choose_temperature(summed, correct, step_logits, labels, max_accuracy_drop: float) -> tuple[float, float]:
    """(temperature, the NLL-fitted one) on the fitting half: among the NLL fit and ``TEMPERATURES``, the one whose
    best single threshold within the false-exit budget takes the fewest average steps there. The NLL over every
    step's summed logits alone leaves the first steps under-confident when T is large (it is dominated by the many
    late steps), so the choice is made for the exits, on data the certification never sees."""
    t_max = summed.shape[1]
    nll = fit_temperature(step_logits, labels)
    budget = int(max_accuracy_drop * len(summed))
    best = (float("inf"), nll)
    for tau in sorted({nll, *TEMPERATURES}):
        sc = torch.stack([scaled_confidence(summed[:, t], tau) for t in range(t_max)], dim=1).double()
        for th in candidate_grid(sc[:, :-1], 60):
            f, st = _outcomes(sc, torch.full((t_max,), float(th), dtype=torch.double), correct)
            if f <= budget and st < best[0] - 1e-12:
                best = (st, tau)
    return float(best[1]), float(nll)


def binomial_upper_bound(k: int, n: int, delta: float) -> float:
    """The one-sided (1 - delta) Clopper-Pearson upper bound on a rate with ``k`` events in ``n`` trials: the
    largest p with P(Binomial(n, p) <= k) >= delta (bisection)."""
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


# ------------------------------------------------------------------------------------------- storing it in a run


def store_in_run(src, result: dict, precision: str, *, out=None, overwrite: bool = False,
                 allow_no_early_exit: bool = False):
    """Write ``result`` (from ``calibrate``) as the run's confidence rule: into ``src/config.json``, or into a full
    copy of the run at ``out`` (staged, so the copy is whole or absent). Where no threshold could be certified and
    the run already has a rule, that rule is kept unless ``allow_no_early_exit`` (then 'never exit early' is
    stored). Returns (the folder written or kept, the kept rule or None)."""
    src = Path(src)
    config = read_json(src / CONFIG)
    old = (config.get("exit") or {}).get("confidence")
    kept = old if "note" in result and old and not allow_no_early_exit else None  # the note: nothing certified
    if kept is None:
        config.setdefault("exit", {})["confidence"] = {
            "threshold": result["threshold"], "thresholds": result["thresholds"], "temperature": result["temperature"],
            "precision": precision, "calibration": result}
    if out is None:
        if kept is None:
            write_json(src / CONFIG, config)
        return src, kept
    with staged_dir(out, overwrite=overwrite) as stage:  # the whole copy, or nothing
        copy_folder(src, stage, skip=(CONFIG,))
        write_json(stage / CONFIG, config)
    return Path(out), kept


def calibration_lines(result: dict, dest, precision: str) -> list[str]:
    """What was chosen and why, in words: the certificate, the validation cost and the ECE per timestep."""
    alpha, level = result["max_accuracy_drop"], result["confidence_level"]
    chosen = (f"per-step thresholds {[round(t, 6) for t in result['thresholds'][:-1]]}" if result["per_step"]
              else f"threshold {result['threshold']:.6g}")
    lines = [f"chose {chosen} (temperature {result['temperature']:.3f}, {precision}) for {dest}",
             f"why: on {result['certified_samples']} validation samples it makes {result['validation_false_exits']} "
             f"false exits (binomial p = {result['p_value']:.3g} that the false-exit rate exceeds {alpha:g}); with "
             f"probability >= {level:g} the accuracy drop against full T on new data from the same distribution is "
             f"at most {alpha:g}",
             f"validation: {result['validation_avg_timesteps']:.3f} avg timesteps, accuracy drop "
             f"{result['validation_accuracy_drop'] * 100:+.2f} points",
             "ECE per timestep: " + " ".join(f"{e:.4f}" for e in result["ece_per_timestep"])
             + ("" if "ece_per_timestep_scaled" not in result else
                "; after temperature scaling: " + " ".join(f"{e:.4f}" for e in result["ece_per_timestep_scaled"]))]
    if "note" in result:
        lines.append(result["note"])
    return lines


# ------------------------------------------------------------------------------------------- the typed result


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate_network` (``seenn.calibrate``) chose and certified: one confidence ``threshold`` or
    per-step ``thresholds``, the ``temperature`` the scores are read at, and the certificate (``report``: the dict
    :func:`calibrate` returns, what ``seenn calibrate`` stores in a run). :meth:`rule` is the exit rule to run."""

    threshold: float | None
    thresholds: list | None
    temperature: float
    certified: bool
    report: dict

    def rule(self):
        """The certified rule: ``Confidence`` at the chosen threshold(s) and temperature."""
        return Confidence(self.thresholds if self.thresholds is not None else self.threshold, self.temperature)

    @classmethod
    def from_report(cls, report: dict) -> "Calibration":
        return cls(report.get("threshold"), report.get("thresholds"), float(report.get("temperature", 1.0)),
                   "note" not in report, report)


def calibrate_network(model, data, timesteps: int, *, max_accuracy_drop: float = 0.01, confidence_level: float = 0.95,
                      per_step: bool = False, temperature: bool = False, seed: int = 0,
                      batch_size: int = 256) -> Calibration:
    """Certify a confidence threshold for ``model`` at ``timesteps`` on held-out ``data`` (a seenn dataset, or any
    iterable of ``(x, y)`` batches such as a DataLoader; never the data it was trained on): with probability
    ``confidence_level`` its early exits lose at most ``max_accuracy_drop`` of accuracy against full T (see the
    module docstring)."""
    if hasattr(data, "batches") and hasattr(data, "labels"):
        logits, labels = dataset_step_logits(model, data, timesteps, batch_size), data.labels
    else:
        model.eval()
        outs, ys = [], []
        with torch.no_grad():
            for x, y in data:
                outs.append(model(x, timesteps).transpose(0, 1).float())
                ys.append(torch.as_tensor(y))
        if not outs:
            raise ConfigError("calibrate: the data held no batches")
        logits, labels = torch.cat(outs), torch.cat(ys)
    report = calibrate(logits, labels, max_accuracy_drop=max_accuracy_drop, confidence_level=confidence_level,
                       per_step=per_step, temperature=temperature, seed=seed)
    return Calibration.from_report(report)
