"""Events to frames: a recording becomes ``T`` frames of per-pixel event counts, two polarity channels (0 OFF,
1 ON), by the two conventions of SpikingJelly's neuromorphic datasets:

- ``split_by="time"``: ``T`` equal windows of the recording's span, from its first event to its last;
- ``split_by="count"``: ``T`` frames of (nearly) equal event counts.

Beside the frames, the sensor time each frame ends at (milliseconds since the first event): a sample that
leaves after ``k`` steps has read ``ends[k - 1]`` ms of the recording, the real-time latency of its answer.
"""

from __future__ import annotations

import numpy as np

from ...errors import DataError
from .formats import Events

SPLITS = ("time", "count")


def to_frames(ev: Events, frames: int, split_by: str = "time", size: tuple[int, int] | None = None):
    """``(counts uint8 [frames, 2, H, W], ends float32 [frames])``; counts saturate at 255. ``size`` pads the
    sensor up to ``(H, W)`` (bottom and right), e.g. to a square."""
    if split_by not in SPLITS:
        raise DataError(f"unknown frame split {split_by!r}; choose time or count")
    if frames < 1:
        raise DataError(f"frames must be >= 1, got {frames}")
    h, w = size or ev.sensor
    if h < ev.sensor[0] or w < ev.sensor[1]:
        raise DataError(f"frames of {h}x{w} cannot hold the {ev.sensor[0]}x{ev.sensor[1]} sensor")
    n = len(ev)
    ends = np.zeros(frames, dtype=np.float32)
    if n == 0:
        return np.zeros((frames, 2, h, w), dtype=np.uint8), ends
    t = ev.t - ev.t[0]
    if split_by == "time":
        span = int(t[-1]) + 1  # microseconds covered: the last event falls in the last window
        if span > (1 << 62) // frames:  # t * frames would wrap around in int64 (over a century of recording)
            raise DataError(f"the recording spans {span} us, over a century: its timestamps are corrupt")
        index = (t * frames) // span
        ends[:] = np.arange(1, frames + 1) * (span / frames) / 1000.0
    else:
        index = (np.arange(n) * frames) // n  # frame k holds events [k n / T, (k + 1) n / T)
        last = np.searchsorted(index, np.arange(frames), side="right") - 1  # each frame's last event
        ends[:] = np.where(last >= 0, t[np.maximum(last, 0)], 0) / 1000.0
        ends[:] = np.maximum.accumulate(ends)  # an empty frame (fewer events than frames) ends where the last did
    flat = ((index * 2 + ev.p.astype(np.int64)) * h + ev.y) * w + ev.x
    counts = np.bincount(flat, minlength=frames * 2 * h * w)
    return np.minimum(counts, 255).astype(np.uint8).reshape(frames, 2, h, w), ends
