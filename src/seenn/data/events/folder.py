"""``seenn events emulate``: a folder of emulated recordings made from a real image dataset (:func:`emulate_folder`).
A workflow above the data layer (it reads a dataset and writes a run-style staged folder), so the ``events``
package does not import it: ``from seenn.data.events.folder import emulate_folder``."""

from __future__ import annotations

import json

import numpy as np

from ...errors import DataError
from ...io.files import staged_dir
from .. import atomic_write_bytes, load_dataset
from .emulate import SETUPS, SensorModel, emulate, grey, sensor_thresholds
from .formats import encode_nmnist


def emulate_folder(source: str, out, *, data_dir=None, train_limit: int | None = None,
                   test_limit: int | None = None, model: SensorModel = SensorModel(), seed: int = 0,
                   overwrite: bool = False, batch: int = 500, progress=None) -> dict:
    """Emulated recordings of a real image dataset, written in N-MNIST's layout and format:
    ``out/Train/CLASS/NNNNN.bin``, ``out/Test/CLASS/NNNNN.bin`` and ``out/events.json`` (how they were made,
    ``"emulated": true``). The folder appears whole or not at all. Returns the metadata written."""

    if source not in SETUPS:
        raise DataError(f"cannot emulate recordings of {source!r}; choose one of {', '.join(SETUPS)}")
    motion, side, duration = SETUPS[source]
    rng = np.random.default_rng(seed)
    thresholds = sensor_thresholds((side, side), model, rng)
    splits = {"Train": load_dataset(source, "train", data_dir=data_dir, limit=train_limit, val_size=0),
              "Test": load_dataset(source, "test", data_dir=data_dir, limit=test_limit)}
    names = list(splits["Train"].info.class_names)
    meta = {"format": "nmnist", "sensor": [side, side], "emulated": True, "source": source, "motion": motion,
            "duration_ms": duration, "sensor_model": model.record(), "seed": seed,
            "class_names": [str(k) for k in range(len(names))], "class_titles": names,
            "counts": {k: len(v) for k, v in splits.items()}}
    events_total = 0
    with staged_dir(out, overwrite=overwrite) as stage:
        for split, data in splits.items():
            images = grey(data.images.numpy())
            labels = data.labels.numpy()
            for i in range(0, len(labels), batch):
                streams = emulate(images[i:i + batch], (side, side), motion, duration, model, rng=rng,
                                  thresholds=thresholds)
                for j, ev in enumerate(streams):
                    events_total += len(ev)
                    atomic_write_bytes(stage / split / str(labels[i + j]) / f"{i + j:05d}.bin", encode_nmnist(ev))
                if progress is not None:
                    progress(split, min(i + batch, len(labels)), len(labels))
        meta["mean_events"] = round(events_total / max(1, sum(meta["counts"].values())), 1)
        atomic_write_bytes(stage / "events.json", (json.dumps(meta, indent=2) + "\n").encode())
    return meta
