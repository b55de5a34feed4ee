"""``--dataset events:PATH``: a folder of event recordings in N-MNIST's layout, as frames.

``PATH/Train/CLASS/*.bin`` and ``PATH/Test/CLASS/*.bin`` (N-MNIST's own layout once unzipped; ``seenn events
emulate`` writes the same), with an optional ``PATH/events.json`` (read through :mod:`seenn.io.schema`) that gives
the sensor size, the format of the files, the class names and, for emulated data, how it was made. Without it
the folder is taken for N-MNIST: 34x34, ``.bin`` files, classes named by their folders.

Every recording becomes ``frames`` frames (:func:`~seenn.data.events.frames.to_frames`, split by time or by event
count; the run's timesteps), padded to a square, with the sensor time at the end of each frame. The pipeline
(frames, split, sensor, emulated or not) is recorded in the run's ``config.json`` (``"data"``) and registered
again whenever the run is read, so a run always sees its recordings the way it was trained. The validation
split is the last ``val_size`` training recordings: in their numbered order (N-MNIST's files are numbered by
the MNIST image they show, and so are the emulator's), else in a fixed shuffle (seed 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import CheckpointError, DataError
from ...io.files import read_json
from ...io.schema import check_events_meta, memory_check
from ..info import DatasetInfo, class_folders
from .formats import NMNIST_SENSOR, read_events
from .frames import to_frames

PREFIX = "events:"
META = "events.json"
SPLIT_DIRS = {"train": "Train", "test": "Test"}
SUFFIXES = {"nmnist": (".bin",), "aedat2": (".aedat", ".aedat2"), "aedat3": (".aedat", ".aedat3")}


def is_events(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def root(name: str, record: dict | None = None) -> Path:
    """The folder of ``events:PATH`` (``record``: the run's recorded pipeline, for a helpful message when the
    folder is missing)."""
    r = Path(name[len(PREFIX):]).expanduser()
    if not r.is_dir():
        rec = record or {}
        if rec.get("emulated") and rec.get("source"):  # a run's recorded pipeline: the folder can be made again
            raise DataError(f"{r} is not a folder: this run's recordings were emulated from {rec['source']}; make "
                            f"them with `seenn events emulate --dataset {rec['source']} --out {r}` (from the folder "
                            "the path is relative to), or pass --dataset events:DIR")
        raise DataError(f"{r} is not a folder (events:PATH needs Train/CLASS/ and Test/CLASS/ folders of recordings)")
    return r


def read_meta(folder: Path) -> dict:
    """``events.json`` checked against the schema, or N-MNIST's defaults where the folder has none."""
    path = folder / META
    if not path.exists():
        return {"format": "nmnist", "sensor": list(NMNIST_SENSOR), "emulated": False, "class_names": None}
    try:
        meta = read_json(path)  # a regular file of bounded size, checked before reading
    except CheckpointError as e:
        raise DataError(str(e)) from None
    return check_events_meta(meta, str(path))


def _listing(folder: Path, suffixes, classes=None):
    if not folder.is_dir():
        raise DataError(f"{folder} is missing (events:PATH needs Train/CLASS/ and Test/CLASS/ folders)")
    classes, files, labels = class_folders(folder, suffixes, classes, "recordings", numeric=True)
    if all(f.stem.isdigit() for f in files):  # numbered recordings (N-MNIST's and the emulator's: the source
        # dataset's index): in that order, across classes, as the images were
        order = np.argsort([int(f.stem) for f in files], kind="stable")
        return classes, [files[i] for i in order], labels[order]
    return classes, files, labels


def measure(name: str, frames: int | None = None, split_by: str = "time"):
    """The folder's pipeline with ``frames`` frames a recording, cut by ``split_by``: its sensor, file format and
    classes read from the folder (``events.json``, else N-MNIST's)."""
    if frames is None:
        raise DataError(f"{name}: the number of frames is not known (train with --timesteps)")
    r = root(name)
    meta = read_meta(r)
    classes = meta.get("class_names")
    if not classes:
        classes, _, _ = _listing(r / "Train", SUFFIXES[meta["format"]])
    record = {"frames": int(frames), "split_by": split_by, "sensor": list(meta["sensor"]),
              "format": meta["format"], "emulated": bool(meta.get("emulated")), "source": meta.get("source"),
              "motion": meta.get("motion")}
    return _info(name, record, classes)


def _info(name, record, classes):
    size = max(record["sensor"])
    how = f"make {name[len(PREFIX):]}/Train/CLASS/ and Test/CLASS/ recordings (or `seenn events emulate`)"
    return DatasetInfo(name, "", 2, size, len(classes), (0.0, 0.0), (1.0, 1.0), (), (), how, tuple(classes),
                       events=dict(record))


def from_record(name: str, data: dict):
    """The recordings read through the pipeline a run recorded (``config["data"]``)."""
    return _info(name, data["events"], data["class_names"])


def adopt(name: str, data: dict):
    """Another folder of recordings read the way a run recorded: its sensor and file format, the run's frames, cut
    and classes."""
    ev = data["events"]
    return _info(name, measure(name, ev["frames"], ev["split_by"]).events, data["class_names"])


def pipeline_record(info) -> dict:
    return {"image_size": info.image_size, "channels": 2, "mean": [0.0, 0.0], "std": [1.0, 1.0],
            "class_names": list(info.class_names), "events": dict(info.events)}


def read_split(info, split: str):
    """(uint8 frames [N, T, 2, S, S], frame ends in ms [N, T], labels [N]) of ``train`` (every training recording,
    in a fixed shuffle) or ``test``."""
    rec = info.events
    part = "test" if split == "test" else "train"
    _, files, labels = _listing(root(info.name, rec) / SPLIT_DIRS[part], SUFFIXES[rec["format"]],
                                list(info.class_names))
    sensor = tuple(rec["sensor"])
    size = (info.image_size, info.image_size)
    # sensor x frames x recordings, checked before allocating (a sensor of 1024 x 1024 in 8 frames is 16 MiB a
    # recording)
    memory_check(float(len(files)) * rec["frames"] * 2 * size[0] * size[1],
                 f"{len(files)} recordings as {rec['frames']} frames of a {size[1]}x{size[0]} sensor",
                 "use fewer frames or fewer recordings")
    frames = np.empty((len(files), rec["frames"], 2, *size), dtype=np.uint8)
    ends = np.empty((len(files), rec["frames"]), dtype=np.float32)
    for i, f in enumerate(files):
        frames[i], ends[i] = to_frames(read_events(f, rec["format"], sensor), rec["frames"], rec["split_by"],
                                       size)
    grouped = (np.diff(labels) != 0).sum() < len(info.class_names)  # one run of each class
    if part == "train" and grouped:
        # recordings grouped by class (not numbered): a fixed shuffle, so the validation hold-out (the last
        # records) covers every class
        order = np.random.default_rng(0).permutation(len(labels))
        return frames[order], ends[order], labels[order]
    return frames, ends, labels


class EventDataset:
    """One split of recordings as frames: ``images`` uint8 ``[N, T, 2, S, S]`` (event counts), ``ends`` float32
    ``[N, T]`` (the sensor time, in ms since the recording's first event, at the end of each frame), ``labels``.
    Batches are ``[B, T, 2, S, S]`` float counts: a time-varying input, one frame per timestep."""

    def __init__(self, info, split: str, frames, ends, labels):
        if not (len(frames) == len(ends) == len(labels)):
            raise DataError(f"{info.name}: {len(frames)} recordings but {len(labels)} labels")
        self.info, self.split = info, split
        self.images = torch.from_numpy(np.ascontiguousarray(frames))
        self.ends = torch.from_numpy(np.ascontiguousarray(ends))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    time_varying = True

    @property
    def emulated(self) -> bool:
        """Made by ``seenn events emulate`` (not a recording): every report says so."""
        return bool((self.info.events or {}).get("emulated"))

    def __len__(self) -> int:
        return len(self.labels)

    def shard(self, rank: int, world: int) -> "EventDataset":
        return EventDataset(self.info, self.split, self.images[rank::world].numpy(), self.ends[rank::world].numpy(),
                            self.labels[rank::world].numpy())

    def normalize(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        return frames_uint8.float()

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False, jpeg: float = 0.0, **image_augmentation):
        """Yield ``(x float [B, T, 2, S, S], y [B])`` (``augment``, ``jpeg`` and the other image augmentations of
        :meth:`seenn.data.Dataset.batches`: not for event data, ignored)."""
        n = len(self)
        per_sample = 4.0 * self.images[0].numel() if n else 0.0  # a float batch: frames x 2 x S x S x 4 bytes
        memory_check(per_sample * min(batch_size, n), f"a batch of {min(batch_size, n)} recordings as float frames",
                     "use a smaller --batch-size")
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield self.images[idx].float(), self.labels[idx]

    def sensor_ms(self, exit_timestep: torch.Tensor) -> torch.Tensor:
        """The sensor time each sample had read when it left after ``exit_timestep`` frames (1-based), in ms."""
        return self.ends.gather(1, (exit_timestep.long() - 1).clamp(min=0).view(-1, 1)).squeeze(1)
