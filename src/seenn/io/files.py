"""Files seenn writes and reads, at the bottom of the layers: atomic writes (a temporary file beside the target,
flushed to disk, renamed over it) and seenn's JSON files (regular files of bounded size, checked before reading)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from ..errors import CheckpointError
from .schema import LIMITS

CONFIG = "config.json"  # a run folder's config (seenn.runs.store)
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"  # the shipped runs
PRETRAINED_ANN_DIR = PRETRAINED_DIR / "ann"  # the shipped QCFS ANNs, to convert or to start a LIF network from


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


# ------------------------------------------------------------------------------------------- output folders


def check_out_dir(out, *, overwrite: bool = False, source=None, inputs=(), what: str = "--out") -> Path:
    """Refuse to write into a non-empty folder without ``overwrite`` (a run there would be replaced), and never
    where the command reads: ``--out`` may not be, hold or lie inside ``source`` (the run being read) or any of
    ``inputs`` (dataset folders, files, other runs), and ``overwrite`` never empties the current folder or one
    above it. Creates nothing."""
    out = Path(out)
    if source is not None and out.resolve() == Path(source).resolve():
        raise CheckpointError(f"{what} {out} is the run being read; write to another folder")
    check_not_an_input(out, [source, *inputs], what)
    if overwrite and out.is_dir() and any(out.iterdir()):
        here = Path.cwd().resolve()
        if out.resolve() in (here, *here.parents):
            raise CheckpointError(f"{what} {out} holds the current folder; --overwrite would empty it: write to a "
                                  "new folder")
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{what} {out} exists and is not a folder")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise CheckpointError(f"cannot create {what} {out}: {ancestor} is not a writable folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{what} {out} exists and is not empty; pass --overwrite to replace what is there")
    if PRETRAINED_DIR.resolve() in (out.resolve(), *out.resolve().parents):
        raise CheckpointError(f"{what} {out} is inside the shipped runs, which stay unchanged")
    return out


def check_not_an_input(out, inputs, what: str = "--out") -> None:
    """``out`` is not, does not hold and does not lie inside any of ``inputs`` (None entries skipped): what a
    command reads is never replaced, emptied or added to."""
    o = Path(out).resolve()
    for p in inputs:
        if p is None:
            continue
        i = Path(p).resolve()
        if o == i:
            how = "is"
        elif o in i.parents:
            how = "holds"
        elif i in o.parents:
            how = "lies inside"
        else:
            continue
        raise CheckpointError(f"{what} {out} {how} {p}, which this command reads; write to a folder outside it")


@contextlib.contextmanager
def staged_dir(dest, *, overwrite: bool = False):
    """Write a whole folder into a staging folder beside ``dest`` and move it into place only when the block ends
    without error: a crash (even ``kill -9``) leaves ``dest`` as it was and at most a hidden ``.NAME.staging-*``
    folder, which never blocks a rerun. With ``overwrite`` an existing ``dest`` is replaced."""
    dest = Path(dest)
    check_out_dir(dest, overwrite=overwrite)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.staging-"))
    except OSError as e:
        raise CheckpointError(f"cannot write {dest}: {e.strerror}") from None
    try:
        try:
            yield stage
        except OSError as e:  # a full disk while staging: name the file as the user will know it
            name = str(e.filename or "")
            if name.startswith(str(stage)):
                raise OSError(e.errno, e.strerror, str(dest) + name[len(str(stage)):]) from None
            raise
        os.chmod(stage, 0o777 & ~_umask())
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if dest.exists():  # --overwrite: the old folder goes only once the new one is complete
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
            os.replace(dest, old / "x")
            os.replace(stage, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def copy_folder(src: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy the files and folders of ``src`` into the existing folder ``dest`` (names in ``skip`` and hidden ones
    left out), each file flushed to disk. A failure (a full disk) is one OSError naming the file being *written*,
    never the source it was read from."""
    for item in sorted(Path(src).iterdir()):
        if item.name in skip or item.name.startswith("."):
            continue
        target = Path(dest) / item.name
        if item.is_dir():
            target.mkdir()
            copy_folder(item, target)
            continue
        with open(item, "rb") as fin:  # a source that cannot be read is named as itself
            try:
                with open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                    fout.flush()
                    os.fsync(fout.fileno())
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(target)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_aside(folder: Path) -> Path | None:
    """``--overwrite`` for a run written in place (``train``): the old folder is renamed to a hidden
    ``.NAME.replaced-*`` beside it (same file system: instant, nothing copied) and an empty folder takes its name.
    The caller removes the set-aside folder (:func:`drop_aside`) only once the new run is complete; if the new run
    is interrupted, the old one is still there, whole. Returns None when there was nothing to set aside."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.replaced-"))
    os.replace(folder, aside / folder.name)
    folder.mkdir()
    return aside


def drop_aside(aside: Path | None) -> None:
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
