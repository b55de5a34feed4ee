"""One typed schema for every file seenn reads back (``config.json``, ``policy.json``, NIR metadata) and the bounds
on every size a user can type (flags, those files).

A field of the wrong type is reported as wrong (with the type expected and the value found), a missing field as
missing; every size has a documented maximum (:data:`LIMITS`, listed in the README), so a typo such as
``--timesteps 1000000000`` is refused in well under a second instead of filling the machine's memory.
"""

from __future__ import annotations

import json
import math
import os

from ..errors import CheckpointError, ConfigError

# The bounds on sizes a user can type (CLI flags and the files above). Generous for 2026 hardware, small enough
# that the largest network or evaluation they allow is still refused by memory_check before it allocates.
LIMITS = {
    "timesteps": 1024,  # max_timesteps, --timesteps, --max-timesteps
    "width": 16.0,  # --width (channel multiplier)
    "num_classes": 10_000,
    "in_channels": 64,
    "image_size": 1024,
    "channels": 16_384,  # channels / features of one layer
    "kernel_size": 64,
    "layers": 1_000,  # layers of a sequential / graph model
    "batch_size": 65_536,
    "epochs": 10_000,
    "samples": 10**9,  # --limit, --val-size, --latency-samples
    "repeats": 1_000,
    "quant_levels": 1_024,
    "hidden": 4_096,  # policy MLP hidden units
    "members": 64,  # policy ensemble members
    "seed": 2**63 - 1,
    "parameters": 2**28,  # 268M parameters: 1 GiB of fp32 weights
    "port": 65_535,  # seenn serve --port
    "threads": 1_024,  # seenn serve --threads
    "json_bytes": 16 * 2**20,  # config.json, metrics.json, policy.json, events.json: regular files up to 16 MiB
}


class _Spec:
    nullable = False

    def check(self, value, path: str, where: str):  # returns the value
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def fail(self, value, path: str, where: str):
        try:
            shown = json.dumps(value)
        except (TypeError, ValueError):
            shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
                dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
        raise CheckpointError(f"{where}: {path} must be {self.describe()}, got {shown} ({kind})")


class Int(_Spec):
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def check(self, value, path, where):
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            self.fail(value, path, where)
        return value

    def describe(self):
        return f"an integer in [{self.lo}, {self.hi}]"


class Float(_Spec):
    def __init__(self, lo: float, hi: float, open_lo: bool = False):
        self.lo, self.hi, self.open_lo = lo, hi, open_lo

    def check(self, value, path, where):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
            (value > self.lo if self.open_lo else value >= self.lo) and value <= self.hi
        if not ok:
            self.fail(value, path, where)
        return float(value)

    def describe(self):
        return f"a number in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}]"


class Str(_Spec):
    def __init__(self, choices=None):
        self.choices = None if choices is None else tuple(choices)

    def check(self, value, path, where):
        if not isinstance(value, str) or (self.choices is not None and value not in self.choices):
            self.fail(value, path, where)
        return value

    def describe(self):
        return "a string" if self.choices is None else f"one of {list(self.choices)}"


class Bool(_Spec):
    def check(self, value, path, where):
        if not isinstance(value, bool):
            self.fail(value, path, where)
        return value

    def describe(self):
        return "true or false"


class Opt(_Spec):
    """The field may be absent or null."""

    nullable = True

    def __init__(self, spec: _Spec):
        self.spec = spec

    def check(self, value, path, where):
        return None if value is None else self.spec.check(value, path, where)

    def describe(self):
        return self.spec.describe() + " or null"


class List(_Spec):
    def __init__(self, item: _Spec, lo: int = 0, hi: int = 10**6):
        self.item, self.lo, self.hi = item, lo, hi

    def check(self, value, path, where):
        if not isinstance(value, list) or not self.lo <= len(value) <= self.hi:
            self.fail(value, path, where)
        return [self.item.check(v, f"{path}[{i}]", where) for i, v in enumerate(value)]

    def describe(self):
        return f"a list of {self.lo} to {self.hi} items"


class Obj(_Spec):
    """An object with known fields (``fields``: name -> spec; non-``Opt`` fields are required). Unknown fields
    are kept unless ``closed``."""

    def __init__(self, fields: dict | None = None, closed: bool = False):
        self.fields, self.closed = fields or {}, closed

    def check(self, value, path, where):
        if not isinstance(value, dict):
            self.fail(value, path, where)
        out = dict(value)
        for name, spec in self.fields.items():
            sub = f"{path}.{name}" if path else name
            if name not in value:
                if not spec.nullable:
                    raise CheckpointError(f"{where}: {sub} is missing")
                continue
            out[name] = spec.check(value[name], sub, where)
        if self.closed:
            extra = sorted(set(value) - set(self.fields))
            if extra:
                raise CheckpointError(f"{where}: {path or 'the object'} has unknown fields {extra[:3]}")
        return out

    def describe(self):
        return "an object"


L = LIMITS
_T = Int(1, L["timesteps"])
_CH = Int(1, L["channels"])
_PAIR = List(Int(0, L["kernel_size"]), 2, 2)
_PAIR1 = List(Int(1, L["kernel_size"]), 2, 2)

LAYERS = {
    "conv2d": Obj({"in_channels": _CH, "out_channels": _CH, "kernel_size": _PAIR1, "stride": _PAIR1,
                   "padding": _PAIR, "dilation": _PAIR1, "groups": _CH, "bias": Bool()}),
    "linear": Obj({"in_features": Int(1, L["channels"] * 64), "out_features": _CH, "bias": Bool()}),
    "neuron": Obj({"decay": Float(0.0, 1.0), "threshold": Float(0.0, 1e9, open_lo=True), "soft_reset": Bool(),
                   "v_init": Float(0.0, 1.0), "v_init_channels": Opt(_CH)}),
    "avgpool2d": Obj({"kernel_size": _PAIR1, "stride": _PAIR1, "padding": _PAIR}),
    "sumpool2d": Obj({"kernel_size": _PAIR1, "stride": _PAIR1, "padding": _PAIR}),
    "flatten": Obj({}),
    "add": Obj({}),  # graph models: the sum of the layers named in "inputs"
    "scale": Obj({"factor": Float(-1e9, 1e9)}),  # a constant gain
    "li": Obj({"decay": Float(0.0, 1.0)}),  # a leaky integrator readout (NIR LI)
    "cubalif": Obj({"syn_decay": Float(0.0, 1.0), "decay": Float(0.0, 1.0), "gain": Float(-1e9, 1e9),
                    "threshold": Float(0.0, 1e9, open_lo=True)}),  # a current-based LIF (NIR CubaLIF)
}


class _Layer(_Spec):
    def check(self, value, path, where):
        if not isinstance(value, dict):
            self.fail(value, path, where)
        kind = Str(tuple(LAYERS)).check(value.get("type"), f"{path}.type", where)
        out = LAYERS[kind].check(value, path, where)
        if "inputs" in value:
            List(Int(-1, L["layers"]), 1, 8).check(value["inputs"], f"{path}.inputs", where)
        return out

    def describe(self):
        return "a layer spec"


def _model_schema():

    return Obj({"name": Str(MODEL_NAMES + ("peer",)), "in_channels": Int(1, L["in_channels"]),
                "image_size": Int(1, L["image_size"]), "num_classes": Int(2, L["num_classes"]),
                "width": Opt(Float(0.0, L["width"], open_lo=True)), "surrogate": Opt(Str(SURROGATE_NAMES)),
                "neuron": Opt(Str(("lif", "qcfs"))), "quant_levels": Opt(Int(1, L["quant_levels"])),
                "layers": Opt(List(_Layer(), 1, L["layers"])),
                # a peer run (seenn adapt): another framework's network built by the user's own Python file
                "framework": Opt(Str(("spikingjelly", "snntorch", "norse", "explicit"))), "source": Opt(Str()),
                "sha256": Opt(Str()), "factory": Opt(Str()), "step": Opt(Str()), "output": Opt(Int(-8, 8)),
                "readout": Opt(Str(("sum", "max", "last", "mean"))),
                # the input the peer was trained on, (x / 255 - mean) / std, and seenn's pipeline it is made from
                "input": Opt(Obj({"scale": Str(("normalized", "unit", "custom")), "mean": _CHANNELS,
                                  "std": _POSITIVE, "data_mean": _CHANNELS, "data_std": _POSITIVE}))})


_CHANNELS = List(Float(-1e3, 1e3), 1, L["in_channels"])
_POSITIVE = List(Float(0, 1e3, True), 1, L["in_channels"])


_EXIT = Obj({"threshold": Opt(Float(0.0, 1.0)), "thresholds": Opt(List(Float(0.0, 1.0), 1, L["timesteps"])),
             "temperature": Opt(Float(0.0, 1e6, open_lo=True)), "calibration": Opt(Obj()),
             "precision": Opt(Str(("fp32", "bf16", "int8")))})


# names of the layers above, held equal to their registries by tests (seenn.models.MODELS, seenn.nn.surrogate.SURROGATES)
MODEL_NAMES = ("convnet", "vgg", "resnet19", "resnet20", "airbench", "sequential", "graph")
SURROGATE_NAMES = ("tanh", "triangle", "rectangle")

# the built-in datasets (seenn.data.DATASETS describes each; a test holds the two equal)
BUILTIN_DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100")


class DatasetName(Str):
    """A registered dataset, ``imagefolder:PATH`` or ``events:PATH``."""

    def check(self, value, path, where):
        if not (isinstance(value, str) and (value in BUILTIN_DATASETS or
                                            value.startswith(("imagefolder:", "events:")))):
            self.fail(value, path, where)
        return value

    def describe(self):
        return f"one of {sorted(BUILTIN_DATASETS)}, imagefolder:PATH or events:PATH"


_SENSOR = List(Int(1, L["image_size"]), 2, 2)
_PIPELINE = Obj({"image_size": Int(1, L["image_size"]), "channels": Int(1, L["in_channels"]),
                 "mean": List(Float(-1e3, 1e3), 1, L["in_channels"]), "std": List(Float(0, 1e3, True), 1,
                                                                                  L["in_channels"]),
                 "class_names": List(Str(), 2, L["num_classes"]),
                 # events:PATH runs: how recordings become frames (seenn.data.events.dataset)
                 "events": Opt(Obj({"frames": _T, "split_by": Str(("time", "count")), "sensor": _SENSOR,
                                    "format": Str(("nmnist", "aedat2", "aedat3")), "emulated": Bool(),
                                    "source": Opt(Str()), "motion": Opt(Str())})),
                 "resize": Opt(Str())})


def config_schema() -> Obj:
    return Obj({"seenn_version": Opt(Str()), "kind": Opt(Str(("ann", "snn"))), "dataset": DatasetName(),
                "data": Opt(_PIPELINE),
                "max_timesteps": Opt(_T), "model": _model_schema(),
                "training": Opt(Obj({"val_size": Opt(Int(0, L["samples"]))})),
                "exit": Opt(Obj({"confidence": Opt(_EXIT), "entropy": Opt(_EXIT)})),
                "converted_from": Opt(Obj()), "imported_from": Opt(Obj())})


def check_config(config, where: str = "config.json") -> dict:
    """``config.json`` checked against the schema, with the cross-field rules: an SNN run has ``max_timesteps``,
    per-step threshold lists have one entry per timestep."""
    config = config_schema().check(config, "", where)
    m = config["model"]
    if m["name"] == "peer":
        for k in ("framework", "source", "sha256", "factory"):
            if m.get(k) is None:
                raise CheckpointError(f"{where}: model.{k} is missing (a peer run)")
    if config["dataset"].startswith("imagefolder:") and config.get("data") is None:
        raise CheckpointError(f"{where}: data is missing (the image pipeline of an imagefolder: run)")
    if config["dataset"].startswith("events:") and (config.get("data") or {}).get("events") is None:
        raise CheckpointError(f"{where}: data.events is missing (how an events: run makes its frames)")
    if (config.get("data") or {}).get("events") and config.get("max_timesteps") \
            and config["max_timesteps"] > config["data"]["events"]["frames"]:
        raise CheckpointError(f"{where}: max_timesteps {config['max_timesteps']} is more than the "
                              f"{config['data']['events']['frames']} frames the run's recordings are cut into")
    if config.get("kind") != "ann" and config.get("max_timesteps") is None:
        raise CheckpointError(f"{where}: max_timesteps must be {_T.describe()} for a spiking run, got null")
    for rule, entry in (config.get("exit") or {}).items():
        if entry is None:
            continue
        ths = entry.get("thresholds")
        if ths and len(ths) != config["max_timesteps"]:
            raise CheckpointError(f"{where}: exit.{rule}.thresholds has {len(ths)} entries, the run has "
                                  f"{config['max_timesteps']} timesteps")
        if entry.get("threshold") is None and not ths:
            raise CheckpointError(f"{where}: exit.{rule} has neither a threshold nor thresholds")
    return config


def events_meta_schema() -> Obj:
    """``events.json`` beside a folder of recordings (``seenn events emulate`` writes it)."""
    return Obj({"format": Str(("nmnist", "aedat2", "aedat3")), "sensor": _SENSOR, "emulated": Opt(Bool()),
                "source": Opt(Str()), "motion": Opt(Str()), "duration_ms": Opt(Float(0.0, 1e9)),
                "sensor_model": Opt(Obj()), "seed": Opt(Int(0, L["seed"])),
                "class_names": Opt(List(Str(), 2, L["num_classes"])),
                "class_titles": Opt(List(Str(), 2, L["num_classes"])), "counts": Opt(Obj()),
                "mean_events": Opt(Float(0.0, 1e12))})


def check_events_meta(meta, where: str = "events.json") -> dict:
    return events_meta_schema().check(meta, "", where)


def policy_schema() -> Obj:
    return Obj({"kind": Str(("policy", "learned")), "max_timesteps": _T, "run": Opt(Str()),
                "dataset": Opt(DatasetName()), "in_channels": Opt(Int(1, L["in_channels"])),
                "threshold": Opt(Float(0.0, 1.0)), "features_version": Opt(Int(1, 2)),
                "features": Opt(Int(1, L["num_classes"] + 64)), "hidden": Opt(Int(1, L["hidden"])),
                "members": Opt(Int(1, L["members"])), "num_classes": Opt(Int(2, L["num_classes"])),
                "image_size": Opt(Int(1, L["image_size"]))})


def check_policy(info, where: str = "policy.json") -> dict:
    info = policy_schema().check(info, "", where)
    weights = (info.get("members") or 1) * ((info.get("features") or 1) + 1) * (info.get("hidden") or 1)
    if weights > L["parameters"]:  # checked before anything is built
        raise CheckpointError(f"{where}: members x features x hidden is {weights} weights, more than the "
                              f"{L['parameters']} a model may have")
    if info["kind"] == "policy" and info.get("in_channels") is None:
        raise CheckpointError(f"{where}: in_channels is missing (a SEENN-II policy network)")
    if info["kind"] == "learned" and info.get("threshold") is None:
        raise CheckpointError(f"{where}: threshold is missing (a learned exit rule)")
    if info["kind"] == "learned" and info.get("features_version", 1) >= 2:
        for k in ("features", "hidden", "members", "num_classes"):
            if info.get(k) is None:
                raise CheckpointError(f"{where}: {k} is missing (a learned exit rule, version 2)")
    return info


def nir_metadata(meta, where: str) -> dict:
    """A NIR graph's metadata as plain Python (HDF5 gives numpy scalars and bytes), checked: the fields seenn
    reads have the types it needs; everything else is kept as it is."""
    import numpy as np

    def plain(v):
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        if isinstance(v, np.generic):
            return v.item()
        return v

    meta = {str(k): plain(v) for k, v in dict(meta or {}).items()}
    return Obj({"max_timesteps": Opt(_T), "dt": Opt(Float(0.0, 1e6, open_lo=True)), "exit": Opt(Str()),
                "source": Opt(Str()), "dataset": Opt(Str())}).check(meta, "metadata", where)


# ------------------------------------------------------------------------------------------- sizes and memory


def bounded(name: str, value: int, what: str | None = None, lo: int = 1) -> int:
    """``value`` checked against ``[lo, LIMITS[name]]``; ``what`` names it in the message (a flag)."""
    hi = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{what or name} must be an integer in [{lo}, {hi}], got {value}")
    return value


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable (and a cgroup limit where one is set)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
            if text != "max":
                used = 0
                for cur in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
                    if os.path.exists(cur):
                        used = int(open(cur).read())
                        break
                limit = int(text) - used
                avail = limit if avail is None else min(avail, limit)
        except (OSError, ValueError):
            continue
    return avail if avail is not None else 2**62


def memory_check(nbytes: float, what: str, hint: str = "") -> None:
    """Refuse work that needs more memory than the machine has, before allocating it."""
    avail = available_memory()
    if nbytes > avail:
        raise ConfigError(f"{what} needs about {nbytes / 2**30:.1f} GiB, this machine has {avail / 2**30:.1f} GiB "
                          f"available{'; ' + hint if hint else ''}")


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` for a device this machine has; anything else is refused in one line."""
    import re

    import torch

    m = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if device == "cpu":
        return device
    if not m:
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}", param="device")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device}: no CUDA device is available here (or this PyTorch has no CUDA)",
                          param="device")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ConfigError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                          param="device")
    return device
