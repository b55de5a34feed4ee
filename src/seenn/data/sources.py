"""Datasets named by a prefix and a path: ``imagefolder:PATH`` (your own images, :mod:`seenn.data.imagefolder`) and
``events:PATH`` (event recordings, :mod:`seenn.data.events.dataset`). Each such module has ``measure(name, ...)`` (the
pipeline measured on the folder), ``from_record(name, data)`` (the pipeline a run recorded), ``adopt(name, data)``
(another folder read the way a run recorded: ``--dataset`` given for it), all returning a ``DatasetInfo`` and
keeping nothing (a run's pipeline travels as its config's ``"data"``, never through module state),
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


def prepare(name, *, image_size=None, frames=None, split_by: str = "time"):
    """Before training: the ``DatasetInfo`` of a prefixed dataset's pipeline, measured (imagefolder: at
    ``image_size``) or fixed (events: ``frames`` per recording, cut by ``split_by``), reading the folder (and
    failing there on a bad one); None for a registered dataset."""
    if not isinstance(name, str):
        return None
    if name.startswith("imagefolder:"):
        return imagefolder.measure(name, image_size)
    if name.startswith("events:"):
        return events_dataset.measure(name, frames, split_by)
    return None


def record_pipeline(config: dict, info) -> None:
    """A prefixed dataset's run records its pipeline in ``config["data"]``."""
    mod = source(info.name)
    if mod is not None:
        config["data"] = mod.pipeline_record(info)


def run_pipeline(config: dict, name=None):
    """The ``DatasetInfo`` a run reads a prefixed dataset through: its own (``name`` None or the run's dataset) by
    the pipeline it recorded, or ``name``, a folder of the same kind given in its place (``--dataset``), through
    the run's resizing and normalisation, or its frames and cut, and its classes. None where the run recorded no
    pipeline or ``name`` is of another kind (read as itself)."""
    name = name or config.get("dataset")
    mod = source(name)
    data = config.get("data")
    if mod is None or data is None or mod is not source(config.get("dataset")):
        return None
    return mod.from_record(name, data) if name == config.get("dataset") else mod.adopt(name, data)


