"""Datasets named by a prefix and a path: ``imagefolder:PATH`` (your own images, :mod:`seenn.imagefolder`) and
``events:PATH`` (event recordings, :mod:`seenn.events.dataset`). Each such module has ``info_for(name, ...)`` (the
pipeline, measured or as a run recorded it), ``register(name, data)`` (a run's recorded pipeline),
``pipeline_record(info)`` (what a run records in ``config["data"]``) and ``read_split(info, split)`` (the arrays
of a split, labels last)."""

from __future__ import annotations

PREFIXES = ("imagefolder:", "events:")


def source(name):
    """The module serving a prefixed dataset name, or None for a registered dataset."""
    if not isinstance(name, str):
        return None
    if name.startswith("imagefolder:"):
        from . import imagefolder

        return imagefolder
    if name.startswith("events:"):
        from .events import dataset

        return dataset
    return None


def is_prefixed(name) -> bool:
    return source(name) is not None


def record_pipeline(config: dict, info) -> None:
    """A prefixed dataset's run records its pipeline in ``config["data"]``."""
    mod = source(info.name)
    if mod is not None:
        config["data"] = mod.pipeline_record(info)


def register_run(config: dict) -> None:
    """A run read back: its recorded pipeline serves its dataset name from now on."""
    mod = source(config["dataset"])
    if mod is not None and config.get("data") is not None:
        mod.register(config["dataset"], config["data"])
