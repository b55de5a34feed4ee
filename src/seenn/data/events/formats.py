"""Event files: N-MNIST / N-Caltech101 (ATIS binary), AEDAT 2.0 (jAER; CIFAR10-DVS) and AEDAT 3.1 (cAER / DV;
DVS128 Gesture), read into one :class:`Events` record, and the N-MNIST format written back.

Each reader follows the format's published description and checks what it reads: a truncated record,
timestamps that run backwards, or coordinates outside the sensor are refused with one line naming the file
(:class:`~seenn.errors.DataError`), never read into a half-right stream.

- **N-MNIST** (Orchard et al. 2015): 5 bytes per event, big-endian bit fields: byte 0 = x, byte 1 = y, byte 2
  bit 7 = polarity (1 ON, 0 OFF), the remaining 23 bits = timestamp in microseconds.
- **AEDAT 2.0**: ASCII header lines starting with ``#`` (the first ``#!AER-DAT2.0``), then 8-byte records,
  big-endian: a 32-bit address and a 32-bit timestamp in microseconds. Two address layouts are in use: DAVIS
  (``y = addr[30:22]``, ``x = addr[21:12]``, polarity ``addr[11]``, bit 31 set for APS / IMU samples, skipped;
  CIFAR10-DVS's files are read this way) and DVS128 (``x = addr[7:1]``, ``y = addr[14:8]``, polarity ``addr[0]``).
- **AEDAT 3.1**: a header of ``#`` lines ending in ``#!END-HEADER``, then packets, little-endian: a 28-byte packet
  header (event type, source, event size, timestamp offset, timestamp overflow, capacity, number, valid) and its
  events. Polarity events (type 1) are 8 bytes: a data word (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31
  x) and a 31-bit timestamp, extended by the packet's overflow counter. Other packet types are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError

FORMATS = ("nmnist", "aedat2", "aedat3")
NMNIST_SENSOR = (34, 34)  # (height, width) of N-MNIST's ATIS crop
MAX_NMNIST_TIME_US = (1 << 23) - 1  # the 23-bit timestamp field


@dataclass
class Events:
    """One recording: ``x``, ``y`` (int64 pixel coordinates), ``t`` (int64 microseconds, non-decreasing), ``p``
    (uint8 polarity, 1 ON and 0 OFF), and the sensor's ``(height, width)``."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    sensor: tuple[int, int]

    def __len__(self) -> int:
        return len(self.t)

    @property
    def duration_us(self) -> int:
        return int(self.t[-1] - self.t[0]) if len(self.t) else 0


def check_events(ev: Events, where: str) -> Events:
    """The checks every reader applies: time runs forwards and every event is on the sensor."""
    h, w = ev.sensor
    if len(ev.t):
        back = np.flatnonzero(np.diff(ev.t) < 0)
        if len(back):
            i = int(back[0]) + 1
            raise DataError(f"{where}: timestamps run backwards at event {i} ({int(ev.t[i - 1])} then "
                            f"{int(ev.t[i])} us); the file is corrupt or not in this format")
        if ev.x.min() < 0 or ev.x.max() >= w or ev.y.min() < 0 or ev.y.max() >= h:
            bad = int(np.flatnonzero((ev.x < 0) | (ev.x >= w) | (ev.y < 0) | (ev.y >= h))[0])
            raise DataError(f"{where}: event {bad} at (x={int(ev.x[bad])}, y={int(ev.y[bad])}) is outside the "
                            f"{w}x{h} sensor")
    return ev


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None


def read_nmnist(path, sensor: tuple[int, int] = NMNIST_SENSOR) -> Events:
    """An N-MNIST / N-Caltech101 file (for N-Caltech101 pass its sensor size, e.g. ``(180, 240)``)."""
    return decode_nmnist(_read(path), str(path), sensor)


def decode_nmnist(raw: bytes, where: str = "events", sensor: tuple[int, int] = NMNIST_SENSOR) -> Events:
    if len(raw) % 5:
        raise DataError(f"{where}: {len(raw)} bytes is not a whole number of 5-byte N-MNIST events (truncated "
                        f"record at the end)")
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 5)
    t = ((b[:, 2].astype(np.int64) & 0x7F) << 16) | (b[:, 3].astype(np.int64) << 8) | b[:, 4]
    ev = Events(b[:, 0].astype(np.int64), b[:, 1].astype(np.int64), t, (b[:, 2] >> 7).astype(np.uint8),
                tuple(sensor))
    return check_events(ev, where)


def encode_nmnist(ev: Events) -> bytes:
    """The N-MNIST bytes of ``ev`` (coordinates up to 255, timestamps up to 2^23 - 1 us)."""
    if len(ev) and (ev.x.max() > 255 or ev.y.max() > 255 or ev.x.min() < 0 or ev.y.min() < 0):
        raise DataError("the N-MNIST format holds coordinates 0..255 only")
    if len(ev) and (ev.t.min() < 0 or ev.t.max() > MAX_NMNIST_TIME_US):
        raise DataError(f"the N-MNIST format holds timestamps 0..{MAX_NMNIST_TIME_US} us only")
    out = np.empty((len(ev), 5), dtype=np.uint8)
    t = ev.t.astype(np.int64)
    out[:, 0] = ev.x
    out[:, 1] = ev.y
    out[:, 2] = ((t >> 16) & 0x7F) | (ev.p.astype(np.int64) << 7)
    out[:, 3] = (t >> 8) & 0xFF
    out[:, 4] = t & 0xFF
    return out.tobytes()


def _split_header(raw: bytes, where: str, end_marker: bytes | None):
    """(header lines, offset of the binary part): ``#`` lines, or up to ``end_marker`` where the format has one."""
    pos, lines = 0, []
    while pos < len(raw) and raw[pos:pos + 1] == b"#":
        nl = raw.find(b"\n", pos)
        if nl < 0:
            raise DataError(f"{where}: the header never ends (no newline after a '#' line)")
        line = raw[pos:nl + 1]
        lines.append(line.decode("latin-1").strip())
        pos = nl + 1
        if end_marker is not None and line.startswith(end_marker):
            return lines, pos
    if end_marker is not None:
        raise DataError(f"{where}: no {end_marker.decode()} line: not an AEDAT 3.1 file")
    return lines, pos


def read_aedat2(path, sensor: tuple[int, int] = (128, 128), layout: str = "davis") -> Events:
    """An AEDAT 2.0 file; ``layout``: ``"davis"`` (CIFAR10-DVS, DAVIS cameras) or ``"dvs128"``."""
    return decode_aedat2(_read(path), str(path), sensor, layout)


def decode_aedat2(raw: bytes, where: str = "events", sensor: tuple[int, int] = (128, 128),
                  layout: str = "davis") -> Events:
    if layout not in ("davis", "dvs128"):
        raise DataError(f"unknown AEDAT 2.0 address layout {layout!r}; choose davis or dvs128")
    lines, start = _split_header(raw, where, None)
    if lines and not lines[0].startswith("#!AER-DAT2"):
        raise DataError(f"{where}: the header starts {lines[0][:20]!r}, not #!AER-DAT2.0")
    body = len(raw) - start
    if body % 8:
        raise DataError(f"{where}: {body} bytes after the header is not a whole number of 8-byte AEDAT 2.0 events "
                        "(truncated record at the end)")
    rec = np.frombuffer(raw, dtype=">u4", offset=start).reshape(-1, 2).astype(np.int64)
    addr, t = rec[:, 0], rec[:, 1]
    if layout == "davis":
        keep = (addr >> 31) == 0  # DVS events only (APS and IMU samples have bit 31 set)
        addr, t = addr[keep], t[keep]
        x, y, p = (addr >> 12) & 0x3FF, (addr >> 22) & 0x1FF, (addr >> 11) & 1
    else:
        x, y, p = (addr >> 1) & 0x7F, (addr >> 8) & 0x7F, addr & 1
    return check_events(Events(x, y, t, p.astype(np.uint8), tuple(sensor)), where)


def read_aedat3(path, sensor: tuple[int, int] = (128, 128)) -> Events:
    """The polarity events of an AEDAT 3.1 file (DVS128 Gesture's recordings)."""
    return decode_aedat3(_read(path), str(path), sensor)


_PACKET_HEADER = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"),
                           ("ts_overflow", "<i4"), ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")])


def decode_aedat3(raw: bytes, where: str = "events", sensor: tuple[int, int] = (128, 128)) -> Events:
    lines, pos = _split_header(raw, where, b"#!END-HEADER")
    if not lines[0].startswith("#!AER-DAT3"):
        raise DataError(f"{where}: the header starts {lines[0][:20]!r}, not #!AER-DAT3.1")
    parts = []
    while pos < len(raw):
        if len(raw) - pos < _PACKET_HEADER.itemsize:
            raise DataError(f"{where}: a packet header is cut off at byte {pos} (truncated file)")
        head = np.frombuffer(raw, dtype=_PACKET_HEADER, count=1, offset=pos)[0]
        size, number = int(head["size"]), int(head["number"])
        if int(head["ts_overflow"]) < 0:
            raise DataError(f"{where}: a packet at byte {pos} has a negative timestamp overflow counter (corrupt)")
        if size < 8 or number < 0:
            raise DataError(f"{where}: a packet at byte {pos} declares {number} events of {size} bytes (corrupt)")
        pos += _PACKET_HEADER.itemsize
        end = pos + size * number
        if end > len(raw):
            raise DataError(f"{where}: the packet at byte {pos - 28} needs {size * number} bytes, {len(raw) - pos} "
                            "are left (truncated record)")
        if int(head["type"]) == 1:  # polarity events
            words = np.frombuffer(raw, dtype="<u4", count=number * size // 4, offset=pos).reshape(number, size // 4)
            data, ts = words[:, 0].astype(np.int64), words[:, 1].astype(np.int64) & 0x7FFFFFFF
            ts |= int(head["ts_overflow"]) << 31
            ok = (data & 1) == 1
            parts.append(((data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, ts, (data >> 1) & 1, ok))
        pos = end
    if parts:
        x, y, t, p, ok = (np.concatenate(c) for c in zip(*parts))
        x, y, t, p = x[ok], y[ok], t[ok], p[ok]
    else:
        x = y = t = p = np.zeros(0, dtype=np.int64)
    return check_events(Events(x, y, t, p.astype(np.uint8), tuple(sensor)), where)


def read_events(path, format: str | None = None, sensor: tuple[int, int] | None = None) -> Events:
    """Any supported file: ``format`` ``nmnist``, ``aedat2`` or ``aedat3``, or from the suffix / header
    (``.bin``: N-MNIST; ``.aedat``: the version its first header line names)."""
    path = Path(path)
    if format is None:
        if path.suffix.lower() == ".bin":
            format = "nmnist"
        elif path.suffix.lower() in (".aedat", ".aedat2", ".aedat3"):
            head = _read(path)[:16]
            format = "aedat3" if head.startswith(b"#!AER-DAT3") else "aedat2"
        else:
            raise DataError(f"{path}: cannot tell the event format from the name; pass --format "
                            f"({', '.join(FORMATS)})")
    if format == "nmnist":
        return read_nmnist(path, sensor or NMNIST_SENSOR)
    if format == "aedat2":
        return read_aedat2(path, sensor or (128, 128))
    if format == "aedat3":
        return read_aedat3(path, sensor or (128, 128))
    raise DataError(f"unknown event format {format!r}; choose one of {', '.join(FORMATS)}")
