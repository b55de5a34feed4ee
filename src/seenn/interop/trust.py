"""Which users' Python files a run folder may run: a run folder never runs code by itself.

A peer run (``seenn adapt``) is built by the user's own Python file. The folder records that file's absolute path
and SHA-256; loading the run runs the file only when that exact (path, hash) pair is in the user's trust list.
``seenn adapt`` adds the file it was given (the user asked for it to be run); ``seenn trust FILE`` adds one by hand,
for example for a run folder made on another machine. The list lives in ``$SEENN_TRUST_STORE``, else
``$XDG_CONFIG_HOME/seenn/trusted.json`` (``~/.config/seenn/trusted.json``): outside every run folder, so copying a
folder (with its Python file beside it) carries no trust with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..io.files import atomic_write_bytes

MAX_STORE_BYTES = 1 << 20  # a trust list larger than 1 MiB is refused as damaged


def trust_store() -> Path:
    if os.environ.get("SEENN_TRUST_STORE"):
        return Path(os.environ["SEENN_TRUST_STORE"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "seenn" / "trusted.json"


def local_modules(path) -> list[Path]:
    """The Python files beside ``path`` that it imports, directly or through each other (``import helper``,
    ``from helper import x``, ``from . import helper`` and packages ``helper/__init__.py``), sorted."""
    import ast

    root = Path(path).resolve().parent
    seen: dict[Path, None] = {}
    todo = [Path(path).resolve()]
    while todo:
        f = todo.pop()
        try:
            tree = ast.parse(f.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        for name in names:
            for cand in (root / f"{name}.py", root / name / "__init__.py"):
                if cand.is_file() and cand not in seen and cand != Path(path).resolve():
                    seen[cand] = None
                    todo.append(cand)
    return sorted(seen)


def file_digest(path) -> str:
    """The SHA-256 of a network file and of every local module it imports (:func:`local_modules`): editing a
    sibling file the network imports changes it too. A file that imports none has its plain SHA-256."""
    path = Path(path)
    mods = local_modules(path)
    if not mods:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256(path.read_bytes())
    for m in mods:
        h.update(b"\0" + str(m.relative_to(path.resolve().parent)).encode() + b"\0" + m.read_bytes())
    return h.hexdigest()


def _entries(store: Path) -> list[dict]:
    if not store.is_file():
        return []
    if store.stat().st_size > MAX_STORE_BYTES:
        raise ConfigError(f"the trust list {store} is larger than {MAX_STORE_BYTES} bytes: damaged; remove it")
    try:
        data = json.loads(store.read_text())
        files = data["files"]
        if not isinstance(files, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                                                  and isinstance(e.get("sha256"), str) for e in files):
            raise TypeError("entries are not {path, sha256} objects")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the trust list {store} is not valid ({e}); remove it and trust the files again") from None
    return files


def is_trusted(path, sha256: str) -> bool:
    p = str(Path(path).resolve())
    return any(e["path"] == p and e["sha256"] == sha256 for e in _entries(trust_store()))


def trust(path) -> tuple[Path, str]:
    """Add ``path`` (as it is now: its absolute path and SHA-256) to the trust list; returns (path, hash)."""

    p = Path(path).resolve()
    if not p.is_file():
        raise ConfigError(f"{path} is not a file")
    digest = file_digest(p)
    store = trust_store()
    files = [e for e in _entries(store) if not (e["path"] == str(p) and e["sha256"] == digest)]
    files.append({"path": str(p), "sha256": digest})
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write the trust list {store}: {e.strerror}") from None
    atomic_write_bytes(store, (json.dumps({"files": files}, indent=1) + "\n").encode())
    return p, digest


def check_trusted(source: Path, sha256: str) -> None:
    """Refuse to run ``source`` unless its recorded path is absolute and (path, hash) is trusted."""
    if not source.is_absolute():
        raise CheckpointError(f"the run names its network file by a relative path ({source}); a run folder never "
                              "runs code found relative to where it is read: make the run again with seenn adapt")
    if not is_trusted(source, sha256):
        raise CheckpointError(f"this run would run the Python file {source} (SHA-256 {sha256[:16]}...), which is not "
                              f"in your trust list; read it, then `seenn trust {source}` if you trust it")
