"""Datasets named by a prefix and a path: ``imagefolder:PATH`` (your own images, :mod:`seenn.imagefolder`) and
``events:PATH`` (event recordings, :mod:`seenn.events.dataset`). Each such module has ``info_for(name, ...)`` (the
pipeline, measured or as a run recorded it), ``register(name, data)`` (a run's recorded pipeline),
``adopt(name, data)`` (another folder read the way a run recorded: ``--dataset`` given for it),
``pipeline_record(info)`` (what a run records in ``config["data"]``) and ``read_split(info, split)`` (the arrays
of a split, labels last)."""

from __future__ import annotations

from . import imagefolder
from .events import dataset as events_dataset

PREFIXES = ("imagefolder:", "events:")


def source(name):
    """The module serving a prefixed dataset name, or None for a registered dataset."""
    if not isinstance(name, str):
        return None
    if name.startswith("imagefolder:"):
        return imagefolder
    if name.startswith("events:"):
        return events_dataset
    return None


def is_prefixed(name) -> bool:
    return source(name) is not None


def prepare(name, *, image_size=None, frames=None, split_by: str = "time") -> None:
    """Before training: measure (imagefolder: at ``image_size``) or fix (events: ``frames`` per recording, cut by
    ``split_by``) a prefixed dataset's pipeline, reading the folder (and failing there on a bad one)."""
    if not isinstance(name, str):
        return
    if name.startswith("imagefolder:"):
        imagefolder.info_for(name, image_size)
    elif name.startswith("events:"):
        events_dataset.info_for(name, frames, split_by)


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


def adopt_for_run(config: dict, name) -> None:
    """``name``, a folder of the same kind as the run's own dataset given in its place (``--dataset``), is read
    through the run's recorded pipeline: its resizing and normalisation, or its frames and cut; its classes."""
    mod = source(name)
    if mod is None or name == config.get("dataset") or config.get("data") is None or mod is not source(
            config.get("dataset")):
        return
    mod.adopt(name, config["data"])


