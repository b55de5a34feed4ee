"""Files seenn writes and reads, at the bottom of the layers: atomic writes (a temporary file beside the target,
flushed to disk, renamed over it) and seenn's JSON files (regular files of bounded size, checked before reading)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import CheckpointError
from .schema import LIMITS


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` then rename it over: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the user's path, not a temporary file
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file: a crash leaves old or new, whole
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def read_json(path: Path) -> dict:
    """A JSON file of seenn's (config, metrics, policy, events metadata): a regular file (not a device, FIFO or
    socket, also behind a symlink) of at most ``LIMITS["json_bytes"]``, checked before it is read."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path} is not a regular file")
        if st.st_size > LIMITS["json_bytes"]:
            raise CheckpointError(f"{path} is {st.st_size} bytes, more than the {LIMITS['json_bytes']} a seenn JSON "
                                  "file may have")
        with open(path, "rb") as f:
            raw = f.read(LIMITS["json_bytes"] + 1)
        if len(raw) > LIMITS["json_bytes"]:
            raise CheckpointError(f"{path} grew past {LIMITS['json_bytes']} bytes while read")
        return json.loads(raw.decode())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a seenn file") from None
