"""Run directories: ``model.safetensors`` (weights and buffers), ``config.json`` (everything needed to rebuild
the model and its data pipeline), ``metrics.json``. Nothing is ever unpickled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import CheckpointError
from ..interop.load import peer_from_config
from ..io.files import (CONFIG, PRETRAINED_ANN_DIR, PRETRAINED_DIR, atomic_write_bytes, check_out_dir, copy_folder,
                        read_json, staged_dir, write_json)
from ..io.schema import check_config
from ..models import SpikingNetwork, build_model, check_model_size
from ..nn.neuron import SpikingNeuron
from .storage import compact_state, expand_state, metadata

WEIGHTS = "model.safetensors"
METRICS = "metrics.json"


def read_config(run_dir: Path) -> dict:
    """A run's ``config.json``, checked against the one schema (:func:`seenn.io.schema.check_config`)."""

    path = Path(run_dir) / CONFIG
    config = check_config(read_json(path), str(path))
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


def pretrained_anns() -> list[dict]:
    """The shipped QCFS ANNs (``pretrained/ann/``). Not spiking runs: what ``seenn convert NAME`` and ``seenn train
    --init NAME`` start from, so that the two paths' shipped networks can be remade without training the ANN again."""
    out = []
    if PRETRAINED_ANN_DIR.is_dir():
        for d in sorted(PRETRAINED_ANN_DIR.iterdir()):
            if (d / CONFIG).is_file() and (d / WEIGHTS).is_file():
                cfg = read_config(d)
                out.append({"name": d.name, "dataset": cfg["dataset"], "kind": "ann",
                            "quant_levels": cfg["model"].get("quant_levels"), "path": str(d)})
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
    if "/" not in str(run):
        for shipped in (PRETRAINED_DIR / str(run), PRETRAINED_ANN_DIR / str(run)):
            if (shipped / CONFIG).is_file():
                return shipped
    names = [r["name"] for r in pretrained_runs() + pretrained_anns()]
    raise CheckpointError(f"{run} is neither a run directory nor a shipped run (shipped: {', '.join(names) or 'none'})")


def weights_digest(run: str | Path) -> str | None:
    """The SHA-256 of a run's weights file (``None`` where it has none): what a run made from it records, so that its
    origin can be checked where the path it was given does not exist."""
    path = resolve_run(run) / WEIGHTS
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _write_weights(folder: Path, model: SpikingNetwork, weights: str = "fp32") -> None:
    """``model.safetensors`` in ``folder``, stored as ``weights`` (:mod:`seenn.runs.storage`)."""
    tensors = compact_state(model.state_dict(), weights)
    atomic_write_bytes(Path(folder) / WEIGHTS, save(tensors, metadata=metadata(weights)))


def save_run(out_dir: Path, model: SpikingNetwork, config: dict, metrics: dict | None = None) -> None:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {out_dir}: {e.strerror}") from None
    _write_weights(out_dir, model)
    write_json(out_dir / CONFIG, config)
    if metrics is not None:
        write_json(out_dir / METRICS, metrics)


def copy_run(run: str | Path, out: Path, *, weights: str = "fp16", overwrite: bool = False) -> Path:
    """A copy of a run folder (config, metrics, policies, calibration) with its weights stored as ``weights``
    (:mod:`seenn.runs.storage`: fp16 or int8 for a smaller file; it loads as fp32); a training state is left out.
    The run is loaded and checked first; ``out`` is written in one go and may not be, hold or lie inside the run."""
    d = resolve_run(run)
    model, _ = load_run(d)
    check_out_dir(out, overwrite=overwrite, source=d)
    with staged_dir(out, overwrite=overwrite) as stage:
        copy_folder(d, stage, skip=(WEIGHTS, "train_state.safetensors"))
        _write_weights(stage, model, weights)
    return Path(out)


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
    state = expand_state(state, str(path))
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
