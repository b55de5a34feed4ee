"""What a dataset is, at the bottom of the data layer: :class:`DatasetInfo` (name, folder, shape, normalisation,
classes) and :func:`class_folders` (a folder with one sub-folder per class, listed), shared by the built-in readers
(:mod:`seenn.data`), image folders (:mod:`seenn.data.imagefolder`) and event recordings (:mod:`seenn.data.events`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..io.schema import LIMITS


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: tuple[str, ...]
    urls: tuple[str, ...]  # where to download from when online (each base + file name)
    how_to_get: str
    class_names: tuple[str, ...] = ()
    # events:PATH: how recordings become frames (frames, cut, sensor, format, ...; seenn.data.events.dataset)
    events: dict | None = field(default=None, compare=False, hash=False)


def class_folders(folder, suffixes, classes=None, what: str = "files", numeric: bool = False):
    """``(classes, files, labels)`` of a folder with one sub-folder per class (``classes``: the run's, in its
    order; else the folders found, sorted by name as torchvision's ImageFolder does, or with ``numeric`` numbers in
    numeric order). Files are those ending in ``suffixes``."""
    def order(name):
        return (0, int(name), name) if numeric and name.isdigit() else (1, 0, name)

    found = sorted((d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=order)
    classes = classes or found
    if len(classes) < 2:
        raise DataError(f"{folder} needs at least two class folders, found {found}")
    if len(classes) > LIMITS["num_classes"]:  # a run no later command could read: refused before training
        raise DataError(f"{folder} has {len(classes)} class folders, more than the {LIMITS['num_classes']} a run may "
                        "have")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder} has classes the run was not trained on: {unknown[:3]}")
    files, labels = [], []
    for k, c in enumerate(classes):
        d = folder / c
        if d.is_dir():
            picked = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            files += picked
            labels += [k] * len(picked)
    if not files:
        raise DataError(f"{folder} holds no {what} ({', '.join(suffixes)})")
    return classes, files, np.array(labels, dtype=np.int64)
