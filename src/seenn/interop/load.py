"""A peer network from the user's own files: a Python file with a factory function that builds the network, and
its weights as safetensors or a plain ``state_dict`` saved with ``torch.save`` (read with ``weights_only=True``:
tensors only, nothing else is unpickled).

A peer run folder (``seenn adapt``) records the Python file's absolute path and SHA-256 instead of copying code
into the folder; loading the run runs that file only while its contents are unchanged and only when the user
trusts that file (:mod:`seenn.interop.trust`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from .._version import __version__
from ..errors import CheckpointError, ConfigError
from .base import FRAMEWORKS, INPUT_SCALES, InputMap, PeerNetwork, adapt
from .snntorch import STATE_NAMES
from .trust import check_trusted, file_digest


def build_from_file(source, factory: str, step: str | None = None):
    """Run ``source`` (a Python file) and call its ``factory()``: the untrained network. With ``step``, also the
    one-step function: a method of the network of that name, or a function ``step(net, x, state) -> (out, state)``
    of the file (returned bound to the network). Returns ``(net, step or None)``."""
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"{source} is missing (the Python file that builds the network)")
    name = f"seenn_peer_{file_digest(source)[:16]}"
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{source} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(source.resolve().parent)
    added = folder not in sys.path
    if added:  # its sibling modules import as they do when the user runs the file (covered by the hash)
        sys.path.insert(0, folder)
    before = set(sys.modules)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        raise ConfigError(f"{source} needs a package that is not installed ({e})") from None
    except SystemExit as e:  # sys.exit in the user's file ends the file, not seenn
        raise ConfigError(f"running {source} called sys.exit({e.code!r})") from None
    except Exception as e:  # the user's code failed: say where, in one line
        raise ConfigError(f"running {source} failed: {type(e).__name__}: {e}") from None
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
        for k in set(sys.modules) - before:  # siblings imported now: not cached for another network's file
            if str(getattr(sys.modules[k], "__file__", None) or "").startswith(folder + "/"):
                del sys.modules[k]
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ConfigError(f"{source} has no function {factory!r} (--factory) that builds the network")
    try:
        net = fn()
    except SystemExit as e:
        raise ConfigError(f"{source}: {factory}() called sys.exit({e.code!r})") from None
    except Exception as e:
        raise ConfigError(f"{source}: {factory}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(net, torch.nn.Module):
        raise ConfigError(f"{source}: {factory}() returned a {type(net).__name__}, not a torch.nn.Module")
    if step is None:
        return net, None
    method = getattr(net, step, None)
    if callable(method):
        return net, step
    fn = getattr(module, step, None)
    if not callable(fn):
        raise ConfigError(f"{source}: neither the network nor the file has a function {step!r} (--step) that takes "
                          "one step: step(x, state) -> (out, state)")
    return net, fn


def read_weights(path) -> dict:
    """A state dict from safetensors, or from ``torch.save`` (``weights_only=True``; a mapping of tensors, or one
    under a ``"state_dict"`` key)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a valid safetensors file ({e})") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"{path} is neither safetensors nor a plain state_dict saved with torch.save "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return state


def input_record(scale: str, info, mean=None, std=None) -> dict:
    """The run's record of the input the peer takes (``model.input``): ``(x / 255 - mean) / std`` per channel, and
    the dataset pipeline's constants it is made from."""

    c = info.channels
    if mean is not None or std is not None:
        scale = "custom"
        if mean is None or std is None or len(mean) != c or len(std) != c \
                or not all(-1e3 <= v <= 1e3 for v in mean) or not all(0 < v <= 1e3 for v in std):
            raise ConfigError(f"mean and std need {c} value(s) each for {info.name} (one per channel), mean in "
                              "[-1000, 1000], std in (0, 1000] (the run's schema)", param="mean")
    elif scale not in INPUT_SCALES[:2]:
        raise ConfigError(f"input_scale must be one of {', '.join(INPUT_SCALES[:2])}, got {scale!r}",
                          param="input_scale")
    data_mean, data_std = [float(v) for v in info.mean], [float(v) for v in info.std]
    if scale == "normalized":
        mean, std = data_mean, data_std
    elif scale == "unit":
        mean, std = [0.0] * c, [1.0] * c
    return {"scale": scale, "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "data_mean": data_mean, "data_std": data_std}


def input_map(record: dict | None):

    if record is None:
        return None
    return InputMap(record)


def describe_input(record: dict | None) -> str:
    """One line for reports: what the peer network is fed."""
    if record is None or record["scale"] == "normalized":
        m, s = (record or {}).get("mean"), (record or {}).get("std")
        return "normalized: (x / 255 - mean) / std" + (f", mean {m}, std {s}" if m else " (the dataset's constants)")
    if record["scale"] == "unit":
        return "unit: x / 255, in [0, 1]"
    return f"custom: (x / 255 - mean) / std, mean {record['mean']}, std {record['std']}"


def scale_accuracy(net: PeerNetwork, record: dict, data, timesteps: int, batch: int = 64) -> float:
    """``net``'s full-T accuracy on ``data`` fed the input ``record`` describes (its own input map restored)."""
    own = net.stem
    net.stem = input_map(record)
    correct = 0
    try:
        with torch.no_grad():
            for x, y in data.batches(batch):
                correct += int((net(x, timesteps).sum(0).argmax(1) == y).sum())
    finally:
        net.stem = own
    return correct / max(len(data), 1)


def load_weights(net: torch.nn.Module, weights, factory: str = "build") -> None:
    """``weights`` (safetensors or a ``weights_only`` state dict, :func:`read_weights`) into ``net``, strictly: no
    float weight stored as an integer (``load_state_dict`` would cast it silently), no missing or unexpected key
    (state buffers snnTorch keeps with ``init_hidden=True`` may be present or absent on either side), no NaN or Inf."""
    state = read_weights(weights)
    own = net.state_dict()
    for k, v in state.items():
        if k in own and own[k].is_floating_point() and not v.is_floating_point():
            raise CheckpointError(f"{weights}: {k} is stored as {str(v.dtype).replace('torch.', '')}, the network "
                                  f"holds {str(own[k].dtype).replace('torch.', '')}: save float weights")
    neurons = {name for name, m in net.named_modules()
               if type(m).__module__.startswith("snntorch") and hasattr(m, "init_hidden")}

    def is_state(k):  # an snnTorch neuron's state (mem, syn, ...): saved by some versions and forms, not others
        owner, _, leaf = k.rpartition(".")
        return leaf in STATE_NAMES and owner in neurons

    state = {k: v for k, v in state.items() if not is_state(k) or k in own}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not is_state(k)]  # state at rest: not weights
        if missing or unexpected:
            raise RuntimeError("\n\t" + (f"missing: {', '.join(missing[:5])}" if missing else
                                         f"unexpected: {', '.join(unexpected[:5])}"))
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not fit the network {factory}() builds: "
                              f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{weights}: {k} holds NaN or Inf")


def load_peer(source, factory: str = "build", weights=None, framework: str | None = None,
              output: int | None = None, readout: str = "sum", input: dict | None = None,
              step: str | None = None, frames: bool = False) -> PeerNetwork:
    """The user's network as a seenn network: ``factory()`` from ``source``, ``weights`` loaded (strictly; state
    buffers snnTorch keeps with ``init_hidden=True`` may be present or absent on either side). ``input``: a
    :func:`input_record` (default: seenn's normalised input)."""
    net, step_fn = build_from_file(source, factory, step)
    if weights is not None:
        load_weights(net, weights, factory)
    return adapt(net, framework, output=output, readout=readout, input_map=input_map(input), step=step_fn,
                 frames=frames)


def peer_run_config(source, factory: str, framework: str, output: int | None, *, dataset: str, max_timesteps: int,
                    info, readout: str = "sum", input: dict | None = None, step: str | None = None) -> dict:
    """The ``config.json`` of a peer run folder."""

    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}; choose one of {list(FRAMEWORKS)}")
    source = Path(source).resolve()
    return {"seenn_version": __version__, "dataset": dataset, "max_timesteps": max_timesteps,
            "model": {"name": "peer", "framework": framework, "source": str(source), "sha256": file_digest(source),
                      "factory": factory, "step": step, "output": output, "readout": readout,
                      "input": input or input_record("normalized", info), "in_channels": info.channels,
                      "image_size": info.image_size, "num_classes": info.num_classes}}


def peer_from_config(m: dict, frames: bool = False) -> PeerNetwork:
    """The network of a peer run's (checked) model config, untrained weights; refuses a changed source file."""
    source = Path(m["source"])
    if not source.is_file():
        raise CheckpointError(f"the run's network file {source} is missing")
    if file_digest(source) != m["sha256"]:
        raise CheckpointError(f"{source} changed since the run was made (its SHA-256 differs); make the run again "
                              "with seenn adapt")
    check_trusted(source, m["sha256"])  # a run folder never runs code the user has not trusted
    net, step = build_from_file(source, m["factory"], m.get("step"))
    return adapt(net, m["framework"], output=m.get("output"), readout=m.get("readout") or "sum",
                 input_map=input_map(m.get("input")), step=step, frames=frames)
