"""The ``seenn`` command line: what the commands share: output (one JSON document on stdout, log lines on stderr), opening a run with its data, choosing the exit rule and the precision."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..data import find_dataset
from ..data.sources import is_prefixed, prepare
from ..errors import ConfigError, SeennError
from ..runs import open_with_data, precision_for, rule_for
from ..runs.store import resolve_run

DEMO_RUN = "fashion-mnist-convnet-t4"


DEMO_THRESHOLDS = (0.9, 0.99, 0.999)


def _writable_dir(path) -> Path:
    """Create an output folder up front, so a path that cannot be written fails before any work is done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the output folder {path}: {e.strerror}") from None
    return path


def _writable_file(path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: {path.parent} is not a folder")
    return path


def _emit_json(obj) -> None:
    print(json.dumps(obj, indent=2, allow_nan=False))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _dataset_present(name: str, data_dir, image_size=None, frames=None, split_by="time") -> None:
    if is_prefixed(name):
        prepare(name, image_size=image_size, frames=frames, split_by=split_by)
    else:
        find_dataset(name, data_dir, "train")


def _dataset_folder(name: str, data_dir, split: str | None = None):
    """The folder a dataset is read from (for the --out checks); None where it is not found (reported later)."""
    if is_prefixed(name):
        return Path(name.split(":", 1)[1] or ".")
    try:
        return find_dataset(name, data_dir, split)
    except SeennError:
        return None


def _run_dir_or_none(run):
    try:
        return resolve_run(run)
    except SeennError:
        return None


def _load(args, ann_ok: bool = False):
    """The run, its data and horizon for a command's arguments (:func:`seenn.runs.open_with_data`)."""
    policy = getattr(args, "exit", None) in ("policy", "learned") and getattr(args, "policy", None)
    check = (lambda config: _rule(args, config)) if policy else None  # a policy that does not fit: before the data
    return open_with_data(args.run, split=args.split, dataset=args.dataset, data_dir=args.data_dir, limit=args.limit,
                          max_timesteps=args.max_timesteps, device=args.device, ann_ok=ann_ok, before_data=check)


def _load_with_rule(args, purpose: str):
    """_load plus the exit rule, for commands that run the rule without labels (not the oracle)."""
    model, config, data, max_t = _load(args)
    rule = _rule(args, config)
    if rule is None:
        raise ConfigError(f"{purpose} needs an exit rule that runs without labels (not the oracle)")
    return model, config, data, max_t, rule


def _rule(args, config):
    """The exit rule asked for (:func:`seenn.runs.rule_for`)."""
    return rule_for(config, args.exit, threshold=args.threshold, timesteps=args.timesteps,
                    policy=getattr(args, "policy", None), run_dir=resolve_run(args.run))


def _precision(args, config) -> str:
    """--precision, else the certified one, else fp32 (:func:`seenn.runs.precision_for`), with its note."""
    uses_stored = getattr(args, "exit", None) == "confidence" and getattr(args, "threshold", None) is None
    chosen, note = precision_for(config, args.precision, uses_stored_rule=uses_stored)
    if note and not getattr(args, "json", False):
        _log(note)
    return chosen


def _parse_betas(spec: str) -> list[float]:
    """'2', or 'auto' (a grid), or '1,2,5'."""
    text = "0.5,1,2,5,10,20" if spec == "auto" else spec
    try:
        betas = [float(b) for b in text.split(",")]
    except ValueError:
        raise ConfigError(f"--beta must be a number, a list like 1,2,5 or auto; got {spec!r}") from None
    if not betas or any(not (b >= 0) or b == float("inf") for b in betas):
        raise ConfigError(f"--beta values must be >= 0, got {spec!r}")
    return betas


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
