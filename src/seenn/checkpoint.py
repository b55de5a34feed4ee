"""Run directories: ``model.safetensors`` (weights and buffers), ``config.json`` (everything needed to rebuild
the model and its data pipeline), ``metrics.json``. Nothing is ever unpickled."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .files import atomic_write_bytes, read_json, write_json  # noqa: F401 (also seenn.checkpoint's)
from .errors import CheckpointError
from .models import SpikingNetwork, build_model
from .neuron import SpikingNeuron
from .schema import LIMITS, check_config, memory_check
from .sources import register_run
from .interop.load import peer_from_config

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def read_config(run_dir: Path) -> dict:
    """A run's ``config.json``, checked against the one schema (:func:`seenn.schema.check_config`)."""

    path = Path(run_dir) / CONFIG
    config = check_config(read_json(path), str(path))

    register_run(config)  # an imagefolder: or events: run's own pipeline for its data, from now on
    return config


def pretrained_runs() -> list[dict]:
    out = []
    if PRETRAINED_DIR.is_dir():
        for d in sorted(PRETRAINED_DIR.iterdir()):
            if (d / CONFIG).is_file() and (d / WEIGHTS).is_file():
                cfg = read_config(d)
                entry = {"name": d.name, "dataset": cfg["dataset"], "max_timesteps": cfg["max_timesteps"],
                         "path": str(d)}
                if "converted_from" in cfg:
                    entry["converted_from"] = "QCFS ANN"
                best = _best_policy(d)
                if best:
                    entry["policy"], entry["policy_rule"] = best
                out.append(entry)
    return out


def _best_policy(run_dir: Path):
    """(name, rule) of the shipped policy with the fewest validation timesteps among those within 0.1 points of
    full T on validation, else the most accurate one; None without policies."""
    cands = []
    for p in sorted((run_dir / "policies").glob("*/policy.json")):
        v = read_json(p).get("validation", {})
        if "accuracy" in v:
            ok = v["accuracy"] >= v.get("full_accuracy", 1.0) - 0.001 - 1e-12
            cands.append((not ok, v["avg_timesteps"] if ok else -v["accuracy"], p.parent.name, read_json(p)["kind"]))
    return min(cands)[2:] if cands else None


def resolve_run(run: str | Path) -> Path:
    """A run directory, or the name of a shipped run."""
    p = Path(run)
    if p.is_dir():
        return p
    shipped = PRETRAINED_DIR / str(run)
    if "/" not in str(run) and (shipped / CONFIG).is_file():
        return shipped
    names = [r["name"] for r in pretrained_runs()]
    raise CheckpointError(f"{run} is neither a run directory nor a shipped run (shipped: {', '.join(names) or 'none'})")


def save_run(out_dir: Path, model: SpikingNetwork, config: dict, metrics: dict | None = None) -> None:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {out_dir}: {e.strerror}") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out_dir / WEIGHTS, save(tensors, metadata={"format": "seenn"}))
    write_json(out_dir / CONFIG, config)
    if metrics is not None:
        write_json(out_dir / METRICS, metrics)


def model_from_config(config: dict) -> SpikingNetwork:
    """The model a (checked) config describes; its size is checked before any weight is allocated."""
    m = config["model"]
    if m["name"] == "peer":  # another framework's network (seenn adapt), built by the user's own file
        return peer_from_config(m, frames=config["dataset"].startswith("events:"))
    options = {k: m[k] for k in ("layers", "neuron", "quant_levels") if m.get(k) is not None}
    kw = dict(in_channels=m["in_channels"], image_size=m["image_size"], num_classes=m["num_classes"],
              width=m.get("width") or 1.0, surrogate=m.get("surrogate") or "tanh", **options)
    check_model_size(m["name"], **kw)
    return build_model(m["name"], **kw)


def check_model_size(name: str, **kw) -> int:
    """Build the model on the meta device (no memory) and refuse it beyond ``LIMITS["parameters"]`` or the memory
    this machine has. Returns the parameter count."""

    with torch.device("meta"):
        try:
            count = sum(p.numel() for p in build_model(name, **kw).parameters())
        except (RuntimeError, ValueError) as e:  # impossible layer shapes
            raise CheckpointError(f"the model {name!r} cannot be built: {str(e).splitlines()[0]}") from None
    if count > LIMITS["parameters"]:
        raise CheckpointError(f"the model {name!r} would have {count:,} parameters, more than seenn's bound of "
                              f"{LIMITS['parameters']:,}")
    memory_check(count * 4 * 2, f"the model {name!r} ({count:,} parameters)")
    return count


def load_run(run: str | Path, device: str = "cpu") -> tuple[SpikingNetwork, dict]:
    """Rebuild a run's model (in eval mode) and return it with its config."""
    d = resolve_run(run)
    config = read_config(d)
    model = model_from_config(config)
    path = d / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path} does not match config.json: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{path} does not match config.json: {k} has shape {tuple(v.shape)}, "
                                  f"the model needs {tuple(expected[k].shape)}")
        if v.dtype != expected[k].dtype and not (v.is_floating_point() and expected[k].is_floating_point()):
            raise CheckpointError(f"{path}: {k} is stored as {str(v.dtype).replace('torch.', '')}, the model needs "
                                  f"{str(expected[k].dtype).replace('torch.', '')}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: {k} holds NaN or Inf")
        if k.endswith("running_var") and (v < 0).any():
            raise CheckpointError(f"{path}: {k} holds a negative variance")
    model.load_state_dict(state)

    for name, m in model.named_modules():  # a neuron's threshold is positive (its firing condition divides by it)
        if isinstance(m, SpikingNeuron) and not m.params.threshold > 0:
            raise CheckpointError(f"{path}: the neuron {name} has threshold {m.params.threshold:g}; thresholds are > 0")
    model.eval()
    return model.to(device), config


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
