"""Run folders from Python: :func:`load_run` gives a :class:`Run` (its model, config, certified exit rule and a
runner), :func:`save_run` writes one (safetensors weights and a ``config.json`` checked by the one schema).

A run is a folder (or a shipped run's name): ``model.safetensors``, ``config.json`` and, after training,
``metrics.json``. Nothing in it is unpickled; an adapted run runs its network file only when trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import dataset_info, load_dataset
from ..errors import ConfigError
from ..exits import make_rule
from ..exits.policy import LearnedExitRule, PolicyRule, load_policy
from ..io.schema import check_config
from ..models.base import SpikingNetwork
from ..runtime.engine import EarlyExitRunner
from .store import load_run as _load
from .store import resolve_run
from .store import save_run as _save

__all__ = ["DEFAULT_THRESHOLD", "Run", "load_run", "open_with_data", "precision_for", "rule_for", "save_run"]

DEFAULT_THRESHOLD = 0.9  # a confidence rule asked for without a threshold, on a run that stores none


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
        if not (self.config.get("exit") or {}).get(exit):
            raise ConfigError(f"{self.path} has no stored {exit} rule: calibrate it (seenn.calibrate) or give a rule")
        return rule_for(self.config, exit)

    def runner(self, rule=None, **kw):
        """An :class:`~seenn.runtime.engine.EarlyExitRunner` over the run's model, with ``rule`` or the run's own."""

        return EarlyExitRunner(self.model, rule if rule is not None else self.rule(), self.max_timesteps, **kw)


def load_run(run, device: str = "cpu") -> Run:
    """A run folder or a shipped run's name (``seenn pretrained`` lists them) as a :class:`Run`."""
    model, config = _load(run, device)
    return Run(model, config, resolve_run(run))


def save_run(out_dir, model: SpikingNetwork, config: dict, metrics: dict | None = None) -> Path:
    """Write ``model`` and its ``config`` (checked against the schema first: a run that cannot be read back is never
    written) to ``out_dir``; returns the folder."""

    check_config(config, "config")
    _save(Path(out_dir), model, config, metrics)
    return Path(out_dir)


def open_with_data(run, *, split: str = "test", dataset: str | None = None, data_dir=None, limit: int | None = None,
                   max_timesteps: int | None = None, device: str = "cpu", ann_ok: bool = False, before_data=None):
    """What every evaluating command starts from: ``(model, config, data, max_timesteps)`` of a run and the split
    of its dataset (or of ``dataset``, another folder read through the run's recorded pipeline), the shapes checked
    against each other; ``max_timesteps`` None for an ANN run (allowed with ``ann_ok``). ``before_data(config)``
    runs before the data is read (a check that can fail fast, such as a policy that does not fit the run)."""

    model, config = _load(run, device)
    if config.get("kind") == "ann" and not ann_ok:
        raise ConfigError(f"{run} is an ANN run: turn it into an SNN first (seenn convert {run} --out DIR)")
    if before_data is not None:
        before_data(config)
    dataset = dataset or config["dataset"]
    data = load_dataset(dataset, split, data_dir=data_dir, limit=limit, info=dataset_info(dataset, config),
                        val_size=config.get("training", {}).get("val_size", 5000))
    m = config["model"]
    want = (m["in_channels"], m["image_size"], m["image_size"])
    frames = getattr(data, "time_varying", False)
    have = tuple(data.images.shape[2 if frames else 1:])
    if want != have:
        raise ConfigError(f"the run expects {'frames' if frames else 'images'} of shape {want}, {dataset} has {have}")
    if config.get("kind") == "ann":
        return model, config, data, None
    max_t = config["max_timesteps"] if max_timesteps is None else max_timesteps
    if max_t < 1:
        raise ConfigError(f"max_timesteps must be >= 1, got {max_t}", param="max_timesteps")
    if frames and max_t > data.images.shape[1]:
        raise ConfigError(f"max_timesteps {max_t} is more than the {data.images.shape[1]} frames each recording "
                          "of this run is cut into", param="max_timesteps")
    return model, config, data, max_t


def rule_for(config: dict, exit: str, *, threshold=None, timesteps: int | None = None, policy=None,
             run_dir=None):
    """The exit rule ``exit`` names for a run: ``oracle`` None; ``policy`` / ``learned`` the policy folder
    ``policy`` (checked against the run; a name is looked up in ``run_dir``'s policies); ``confidence`` / ``entropy`` without ``threshold`` the run's stored
    (calibrated) setting, else :data:`DEFAULT_THRESHOLD`; ``fixed`` ``timesteps``."""

    if exit == "oracle":
        return None
    if exit in ("policy", "learned"):
        if not policy:
            raise ConfigError(f"exit {exit} needs a policy folder (--policy; seenn policy train makes one)",
                              param="exit")
        rule = load_policy(policy, config["max_timesteps"], config, run_dir=run_dir)
        want = PolicyRule if exit == "policy" else LearnedExitRule
        if not isinstance(rule, want):
            raise ConfigError(f"{policy} is a {rule.name!r} policy, not a {exit!r} one")
        return rule
    if exit in ("confidence", "entropy") and threshold is None:
        stored = config.get("exit", {}).get(exit)
        if stored:
            value = stored["thresholds"] if stored.get("thresholds") else stored["threshold"]
            return make_rule(exit, threshold=value, temperature=stored.get("temperature", 1.0))
        return make_rule(exit, threshold=DEFAULT_THRESHOLD)
    return make_rule(exit, threshold=threshold, timesteps=timesteps)


def precision_for(config: dict, precision: str | None = None, *, uses_stored_rule: bool = False):
    """``(precision, note)``: ``precision``, else the one the run's calibrated threshold was certified for, else
    fp32; ``note`` says when a stored rule runs in another precision than it was certified for (else None)."""
    stored = (config.get("exit") or {}).get("confidence") or {}
    certified = stored.get("precision", "fp32") if stored.get("calibration") else None
    chosen = precision or certified or "fp32"
    note = None
    if certified and chosen != certified and uses_stored_rule:
        note = (f"note: the run's threshold was certified for {certified}; running {chosen} (seenn calibrate "
                f"--precision {chosen} certifies one for it)")
    return chosen, note
