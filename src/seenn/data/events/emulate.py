"""A DVS emulator: real images turned into event streams the way the neuromorphic datasets were recorded.

No recorded dataset can be downloaded everywhere, so seenn makes its own, labelled *emulated* everywhere they go.
Two recording set-ups, from the datasets' papers:

- ``saccades`` (N-MNIST, Orchard et al. 2015): the sensor makes three saccades in front of a static image, along
  the sides of an isosceles triangle, 100 ms each (about 300 ms per recording).
- ``loop`` (CIFAR10-DVS, Li et al. 2017): the image moves on a monitor in a repeated closed-loop smooth movement
  in front of a still sensor (here a circle, four times round in 1 s).

The pixel model is the one DVS emulators (ESIM, v2e) use: each pixel compares its log intensity with the level
of its last event and fires ON (brighter) or OFF events each time the difference crosses its contrast
threshold; thresholds differ from pixel to pixel (Gaussian mismatch, fixed for the sensor), a pixel cannot fire
again within its refractory period (the change it missed comes out afterwards), and shot noise adds events at
random. The image sits on a black monitor (``black_level`` of white), sub-pixel motion is bilinear.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ...errors import DataError
from .formats import Events

MOTIONS = ("saccades", "loop", "still")


@dataclass(frozen=True)
class SensorModel:
    threshold: float = 0.35  # contrast threshold, in log intensity
    mismatch: float = 0.03  # standard deviation of each pixel's threshold about it
    refractory_us: int = 500
    noise_hz: float = 0.5  # shot-noise events per pixel and second
    black_level: float = 0.1  # a black pixel's intensity, relative to white
    step_us: int = 1000  # the simulation step

    def record(self) -> dict:
        return asdict(self)


def motion_path(motion: str, margin: float, steps: int) -> np.ndarray:
    """Offsets ``[steps + 1, 2]`` (dy, dx, pixels) of the image in the sensor's frame, within ``[0, margin]``."""
    s = np.linspace(0.0, 1.0, steps + 1)
    if motion == "saccades":  # three saccades along the sides of an isosceles triangle, eased in and out
        m = margin
        corners = np.array([[0.85 * m, 0.15 * m], [0.15 * m, 0.5 * m], [0.85 * m, 0.85 * m], [0.85 * m, 0.15 * m]])
        leg = np.minimum((s * 3).astype(int), 2)
        u = s * 3 - leg
        ease = (1 - np.cos(math.pi * u)) / 2
        return corners[leg] + (corners[leg + 1] - corners[leg]) * ease[:, None]
    if motion == "loop":  # four turns of a circle about the centre
        r = 0.4 * margin
        a = 2 * math.pi * 4 * s
        return np.stack([margin / 2 + r * np.sin(a), margin / 2 + r * (1 - np.cos(a)) - r], axis=1)
    if motion == "still":  # no motion: a still sensor sees only its noise
        return np.full((steps + 1, 2), margin / 2)
    raise DataError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")


def _render(images: np.ndarray, offset, sensor) -> np.ndarray:
    """The images (float [B, H, W] in [0, 1]) placed at a sub-pixel ``offset`` on a black ``sensor``-sized canvas."""
    b, h, w = images.shape
    sh, sw = sensor
    oy, ox = float(offset[0]), float(offset[1])
    iy, ix = int(math.floor(oy)), int(math.floor(ox))
    fy, fx = oy - iy, ox - ix
    canvas = np.zeros((b, sh + 1, sw + 1), dtype=np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            if wy * wx:
                canvas[:, iy + dy:iy + dy + h, ix + dx:ix + dx + w] += (wy * wx) * images
    return canvas[:, :sh, :sw]


def emulate(images: np.ndarray, sensor: tuple[int, int], motion, duration_ms: float,
            model: SensorModel = SensorModel(), *, rng: np.random.Generator, thresholds=None) -> list[Events]:
    """Event streams of a batch of grey images (uint8 ``[B, H, W]``) on one sensor.

    ``motion``: one of :data:`MOTIONS`, or the image's offsets ``[steps + 1, 2]`` (dy, dx) in the sensor, one per
    simulation step. ``thresholds``: the sensor's per-pixel (ON, OFF) thresholds ``[2, H, W]`` (drawn from
    ``model`` if None; pass the same pair for every batch of one dataset: it is one sensor)."""
    if images.ndim != 3:
        raise DataError(f"expected grey images [B, H, W], got shape {images.shape}")
    b, h, w = images.shape
    sh, sw = sensor
    margin = min(sh - h, sw - w) - 1
    if margin < 1:
        raise DataError(f"a {sw}x{sh} sensor leaves no room to move a {w}x{h} image (needs 2 pixels more)")
    if thresholds is None:
        thresholds = sensor_thresholds(sensor, model, rng)
    step = int(model.step_us)
    steps = max(1, int(round(duration_ms * 1000 / step)))
    if isinstance(motion, str):
        path = motion_path(motion, margin, steps)
    else:
        path = np.asarray(motion, dtype=np.float64)
        if path.shape != (steps + 1, 2) or path.min() < 0 or path[:, 0].max() > sh - h - 1 \
                or path[:, 1].max() > sw - w - 1:
            raise DataError(f"a motion path must be [{steps + 1}, 2] offsets inside the sensor, got {path.shape}")
    img = images.astype(np.float32) / 255.0
    black = model.black_level

    def log_intensity(k):
        return np.log(np.float32(black) + np.float32(1 - black) * _render(img, path[k], sensor))

    ref = log_intensity(0).ravel()  # the pixels have adapted to the first view
    c_on, c_off = (np.tile(thresholds[i].astype(np.float32).ravel(), b) for i in (0, 1))  # every image's pixels
    inv_on, inv_off = 1.0 / c_on, 1.0 / c_off
    last = np.full(ref.shape, -1e9, dtype=np.float32)  # each pixel's last event (us; exact in float32 to 16 s)
    cap = max(1, step // model.refractory_us) if model.refractory_us > 0 else 1 << 20
    parts = []  # (flat pixel index, t, p) per step and polarity
    noise_p = model.noise_hz * step * 1e-6
    for k in range(1, steps + 1):  # float32 and flat indices throughout: ~5 ms a step for 500 images
        t0 = (k - 1) * step
        diff = log_intensity(k).ravel() - ref
        ready = (t0 + step - last) >= model.refractory_us  # this step's last event vs the pixel's last
        for sign, inv, c, pol in ((1.0, inv_on, c_on, 1), (-1.0, inv_off, c_off, 0)):
            crossings = np.floor(np.maximum(sign * diff, 0) * inv)
            flat = np.flatnonzero(crossings * ready)
            if not len(flat):
                continue
            n = np.minimum(crossings[flat], cap)
            ref[flat] += sign * n * c[flat]  # the reference moves by the events fired; a change past the cap
            last[flat] = t0 + step  # comes out at the next steps
            n = n.astype(np.int64)
            rep = np.repeat(np.arange(len(flat)), n)
            j = np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)  # the event's number within its pixel
            parts.append((flat[rep], t0 + ((j + 1) * step) // n[rep], np.full(len(rep), pol)))  # spread evenly
        if noise_p > 0:  # shot noise: a Poisson number of events at uniformly random pixels and times
            m = rng.poisson(noise_p * b * sh * sw)
            if m:
                parts.append((rng.integers(0, b * sh * sw, m), t0 + rng.integers(0, step, m), rng.integers(0, 2, m)))
    if parts:
        flat, t, p = (np.concatenate(c).astype(np.int64) for c in zip(*parts))
    else:
        flat = t = p = np.zeros(0, dtype=np.int64)
    s, y, x = flat // (sh * sw), (flat // sw) % sh, flat % sw
    order = np.lexsort((t, s))
    s, y, x, t, p = s[order], y[order], x[order], t[order], p[order]
    bounds = np.searchsorted(s, np.arange(b + 1))
    return [Events(x[i:j], y[i:j], t[i:j], p[i:j].astype(np.uint8), (sh, sw))
            for i, j in zip(bounds[:-1], bounds[1:])]


def sensor_thresholds(sensor, model: SensorModel, rng: np.random.Generator) -> np.ndarray:
    """One sensor's per-pixel (ON, OFF) contrast thresholds ``[2, H, W]``."""
    c = rng.normal(model.threshold, model.mismatch, size=(2, *sensor))
    return np.maximum(c, 0.01).astype(np.float32)


def grey(images: np.ndarray) -> np.ndarray:
    """uint8 ``[B, C, H, W]`` -> grey uint8 ``[B, H, W]`` (ITU-R 601 luma for RGB)."""
    if images.shape[1] == 1:
        return images[:, 0]
    rgb = images.astype(np.float32)
    return np.clip(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2] + 0.5, 0, 255).astype(np.uint8)


SETUPS = {  # source dataset -> (motion, sensor side, recording ms), after the dataset each imitates
    "mnist": ("saccades", 34, 300.0),  # N-MNIST
    "fashion-mnist": ("saccades", 34, 300.0),
    "cifar10": ("loop", 40, 1000.0),  # CIFAR10-DVS (at a lower resolution than its 128x128)
}
