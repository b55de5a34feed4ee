"""Run folders from Python: :func:`load_run` gives a :class:`Run` (its model, config, certified exit rule and a
runner), :func:`save_run` writes one (safetensors weights and a ``config.json`` checked by the one schema).

A run is a folder (or a shipped run's name): ``model.safetensors``, ``config.json`` and, after training,
``metrics.json``. Nothing in it is unpickled; an adapted run runs its network file only when trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import load_run as _load
from ..checkpoint import resolve_run
from ..checkpoint import save_run as _save
from ..errors import ConfigError
from ..models.base import SpikingNetwork

__all__ = ["Run", "load_run", "save_run"]


@dataclass
class Run:
    """A run read back. ``model`` (eval mode), ``config`` (the checked ``config.json``), ``path``. Unpacks as
    ``model, config = seenn.load_run(...)``."""

    model: SpikingNetwork
    config: dict
    path: Path

    def __iter__(self):  # model, config = load_run(...)
        return iter((self.model, self.config))

    @property
    def max_timesteps(self) -> int | None:
        return self.config.get("max_timesteps")

    def rule(self, exit: str = "confidence"):
        """The run's certified (or stored) exit rule: ``confidence`` or ``entropy``; a run without one says so."""
        from ..exits import Confidence, Entropy

        entry = (self.config.get("exit") or {}).get(exit)
        if not entry:
            raise ConfigError(f"{self.path} has no stored {exit} rule: calibrate it (seenn.calibrate) or give a rule")
        cls = Confidence if exit == "confidence" else Entropy
        return cls(entry.get("thresholds") or entry["threshold"], entry.get("temperature") or 1.0)

    def runner(self, rule=None, **kw):
        """An :class:`~seenn.engine.EarlyExitRunner` over the run's model, with ``rule`` or the run's own."""
        from ..engine import EarlyExitRunner

        return EarlyExitRunner(self.model, rule if rule is not None else self.rule(), self.max_timesteps, **kw)


def load_run(run, device: str = "cpu") -> Run:
    """A run folder or a shipped run's name (``seenn pretrained`` lists them) as a :class:`Run`."""
    model, config = _load(run, device)
    return Run(model, config, resolve_run(run))


def save_run(out_dir, model: SpikingNetwork, config: dict, metrics: dict | None = None) -> Path:
    """Write ``model`` and its ``config`` (checked against the schema first: a run that cannot be read back is never
    written) to ``out_dir``; returns the folder."""
    from ..schema import check_config

    check_config(config, "config")
    _save(Path(out_dir), model, config, metrics)
    return Path(out_dir)
