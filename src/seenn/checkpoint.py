"""Run directories: ``model.safetensors`` (weights and buffers), ``config.json`` (everything needed to rebuild
the model and its data pipeline), ``metrics.json``. Nothing is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .data import atomic_write_bytes
from .errors import CheckpointError
from .models import SpikingNetwork, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def pretrained_runs() -> list[dict]:
    out = []
    if PRETRAINED_DIR.is_dir():
        for d in sorted(PRETRAINED_DIR.iterdir()):
            if (d / CONFIG).is_file() and (d / WEIGHTS).is_file():
                cfg = read_json(d / CONFIG)
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
    try:
        m = config["model"]
        options = {k: m[k] for k in ("layers", "neuron", "quant_levels") if k in m}
        return build_model(m["name"], in_channels=m["in_channels"], image_size=m["image_size"],
                           num_classes=m["num_classes"], width=m.get("width", 1.0),
                           surrogate=m.get("surrogate", "tanh"), **options)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"config.json lacks the model field {e}") from None


def load_run(run: str | Path, device: str = "cpu") -> tuple[SpikingNetwork, dict]:
    """Rebuild a run's model (in eval mode) and return it with its config."""
    d = resolve_run(run)
    config = read_json(d / CONFIG)
    for key in ("model", "dataset", "max_timesteps"):
        if key not in config:
            raise CheckpointError(f"{d / CONFIG} lacks {key!r}")
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
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: {k} holds NaN or Inf")
    model.load_state_dict(state)
    model.eval()
    return model.to(device), config
