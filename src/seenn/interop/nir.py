"""NIR (Neuromorphic Intermediate Representation) export and import. Needs ``pip install seenn[nir]``.

Time: seenn's networks are discrete with one step per input presentation. In NIR's continuous-time terms a LIF is
``tau dv/dt = (v_leak - v) + r I`` and an IF ``dv/dt = r I``. With forward-Euler steps of ``dt`` a LIF becomes
``v <- (1 - dt/tau) v + (dt r / tau) I``; with the exact (exponential) step ``v <- e^(-dt/tau) v +
(1 - e^(-dt/tau)) r I``. Export (``seenn export --dt DT``, default 1) writes decay d as ``tau = dt / (1 - d)`` and
``r = tau / dt`` (unit input gain; IF: ``r = 1 / dt``), and records dt in the metadata. The importers of the peers
assume a dt of their own: snnTorch's ``import_from_nir`` 1e-4 (fixed), SpikingJelly's 1e-4 by default, Norse its
``dt`` argument (1e-3 by default); export with that dt for them (``--for PEER`` picks it, and for Norse also writes
the node types its importer maps: :mod:`seenn.interop.nir_compat`). Import takes the dt the graph was made for
(``--dt``, else the graph's metadata, else 1) and the discretisation (``--discretisation euler|exp``; sinabs and
Norse-style graphs want exp), and folds any input gain into the synaptic layer right before the neuron, or into a
``scale`` layer where the neuron follows another neuron.

Thresholds: seenn fires at ``v >= theta``, NIR's reference semantics at ``v > theta``. Both directions are exact in
float32: export writes ``nextafter(theta, -inf)`` and import reads ``nextafter(theta, +inf)`` (a round trip gives
the same number back). The input normalisation seenn's network expects (``(pixel / 255 - mean) / std``) is written
into the metadata; import applies a graph's recorded normalisation as a per-channel affine layer, so the graph
sees the inputs it was trained on.

Export handles chains of layers and ResNet basic blocks (residual sums become two edges into one neuron node).
What NIR cannot express is refused: reset by subtraction (the IF neurons of converted networks), a nonzero
initial membrane. Import handles chains of layers, flat inputs (an MLP's ``(784,)`` takes the dataset's images
flattened) and refuses a graph whose output is not one vector of class scores.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..data import atomic_write_bytes, dataset_info
from ..errors import CheckpointError, ConfigError
from ..io.schema import bounded, check_config, nir_metadata
from ..models import SpikingNetwork, check_model_size
from ..models.resnet import BasicBlock
from ..models.sequential import SequentialSNN, SumPool2d
from ..models.stateful import LeakyIntegrator
from ..nn.fold import fold_batchnorm
from ..nn.neuron import SpikingNeuron
from .nir_compat import PEER_DT, PEERS, for_peer


def _nir():
    try:
        import nir
    except ImportError:
        raise ConfigError("NIR support needs the nir package: pip install 'seenn[nir]'") from None
    return nir


def _pair(v) -> tuple[int, int]:
    v = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _below(theta: float) -> float:
    """The float32 just below ``theta``: NIR's ``v > below`` is seenn's ``v >= theta``."""
    return float(np.nextafter(np.float32(theta), np.float32(-np.inf)))


def _above(theta: float) -> float:
    """The float32 just above ``theta``: seenn's ``v >= above`` is NIR's ``v > theta``."""
    return float(np.nextafter(np.float32(theta), np.float32(np.inf)))


def _leaf_node(nir, name: str, mod: nn.Module, ish, osh, dt: float = 1.0):
    """The NIR node of one layer; ``ish`` / ``osh`` are its per-sample input / output shapes."""
    f = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    if isinstance(mod, nn.Conv2d):
        bias = f(mod.bias) if mod.bias is not None else np.zeros(mod.out_channels, np.float32)
        return nir.Conv2d(input_shape=np.array(ish[1:]), weight=f(mod.weight), stride=np.array(mod.stride),
                          padding=np.array(mod.padding), dilation=np.array(mod.dilation), groups=mod.groups, bias=bias)
    if isinstance(mod, nn.Linear):
        return (nir.Affine(weight=f(mod.weight), bias=f(mod.bias)) if mod.bias is not None
                else nir.Linear(weight=f(mod.weight)))
    if isinstance(mod, SpikingNeuron):
        if mod.soft_reset:
            raise ConfigError(f"{name} resets by subtraction (converted IF neurons); NIR's LIF and IF reset to "
                              "a fixed potential, so this network cannot be exported faithfully")
        if not mod.starts_at_zero:
            raise ConfigError(f"{name} starts from a nonzero membrane potential, which NIR cannot express")
        full = lambda v: np.full(osh, v, dtype=np.float32)  # noqa: E731
        th = _below(float(mod.threshold))
        if mod.decay == 1.0:
            return nir.IF(r=full(1.0 / dt), v_threshold=full(th), v_reset=full(0.0))
        tau = dt / (1.0 - mod.decay)
        return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0.0), v_threshold=full(th), v_reset=full(0.0))
    if isinstance(mod, LeakyIntegrator):  # a membrane readout: NIR's LI, never a spiking LIF
        if not 0.0 < mod.decay < 1.0:
            raise ConfigError(f"{name}: a leaky integrator with decay {mod.decay:g} has no NIR LI time constant")
        full = lambda v: np.full(osh, v, dtype=np.float32)  # noqa: E731
        tau = dt / (1.0 - mod.decay)  # Euler: v <- (1 - dt / tau) v + (dt / tau) r x, with (dt / tau) r = 1
        return nir.LI(tau=full(tau), r=full(tau / dt), v_leak=full(0.0))
    if isinstance(mod, (SumPool2d, nn.AvgPool2d)):
        cls = nir.SumPool2d if isinstance(mod, SumPool2d) else nir.AvgPool2d
        return cls(kernel_size=np.array(_pair(mod.kernel_size)), stride=np.array(_pair(mod.stride)),
                   padding=np.array(_pair(mod.padding)))
    if isinstance(mod, nn.AdaptiveAvgPool2d) and _pair(mod.output_size) == (1, 1):
        return nir.AvgPool2d(kernel_size=np.array(ish[1:]), stride=np.array(ish[1:]), padding=np.array((0, 0)))
    if isinstance(mod, nn.Flatten):
        return nir.Flatten(input_type={"input": np.array(ish)}, start_dim=0, end_dim=-1)
    raise ConfigError(f"{name} ({type(mod).__name__}) has no NIR counterpart")


def to_nir(model: SpikingNetwork, config: dict, rule: dict | None = None, dt: float = 1.0, peer: str = "nir"):
    """A NIR graph of ``model`` (BN folded), with the exit rule and data pipeline in its metadata. Chains of
    layers and ResNet basic blocks (the residual sum becomes two edges into the block's last neuron: NIR sums
    a node's inputs). ``peer``: ``nir`` (all of NIR) or a peer whose importer reads only part of it
    (:mod:`seenn.interop.nir_compat`: the same network in the node types it maps)."""

    nir = _nir()
    model = fold_batchnorm(model)
    m = config["model"]
    in_shape = (m["in_channels"], m["image_size"], m["image_size"])
    shapes = {}
    leaves = [(n, mod) for n, mod in model.named_modules() if not list(mod.children())]
    hooks = [mod.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, (tuple(i[0].shape[1:]), tuple(o.shape[1:]))))
             for n, mod in leaves]
    with torch.no_grad():
        model.reset()
        model.step(model.encode(torch.zeros(1, *in_shape)))
        model.reset()
    for h in hooks:
        h.remove()
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
    edges = []

    def add(name: str, mod: nn.Module, sources: list[str]) -> str:
        key = name.replace(".", "_")
        nodes[key] = _leaf_node(nir, name, mod, *shapes[name], dt=dt)
        edges.extend((src, key) for src in sources)
        return key

    prev = "input"
    for part in ("stem", "body"):
        for child, mod in getattr(model, part).named_children():
            name = f"{part}.{child}"
            if isinstance(mod, nn.Identity):
                continue
            if isinstance(mod, BasicBlock):
                a = add(f"{name}.conv1", mod.conv1, [prev])
                a = add(f"{name}.lif1", mod.lif1, [a])
                a = add(f"{name}.conv2", mod.conv2, [a])
                sc = [c for c in mod.shortcut.children() if not isinstance(c, nn.Identity)]
                if len(sc) > 1:
                    raise ConfigError(f"{name}: a shortcut of several layers is not supported")
                short = add(f"{name}.shortcut.0", sc[0], [prev]) if sc else prev
                prev = add(f"{name}.lif2", mod.lif2, [a, short])
            elif list(mod.children()):
                raise ConfigError(f"layer {name} ({type(mod).__name__}) is a block the NIR exporter does not know")
            else:
                prev = add(name, mod, [prev])
    nodes["output"] = nir.Output(output_type={"output": np.array([m["num_classes"]])})
    edges.append((prev, "output"))

    info = dataset_info(config["dataset"], config)
    meta = {"source": "seenn", "seenn_version": __version__, "dt": float(dt), "max_timesteps": int(config["max_timesteps"]),
            "dataset": config["dataset"], "encoding": "direct (the image at every step)",
            "discretisation": "euler", "threshold_semantics": "v > v_threshold (NIR)",
            "input_normalisation": json.dumps({"pixel_scale": 1 / 255, "mean": list(info.mean), "std": list(info.std)}),
            "readout": "sum of the output over the steps run; argmax",
            "exit": json.dumps(rule or {})}
    if rule:
        meta["exit_rule"] = rule.get("rule", "")
        if rule.get("threshold") is not None:
            meta["exit_threshold"] = float(rule["threshold"])
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)

    return for_peer(graph, peer, {n.replace(".", "_"): s[0] for n, s in shapes.items()})


def export_nir(model, config, path: Path, rule: dict | None = None, dt: float | None = None,
               peer: str = "nir") -> None:
    """Write ``model`` as a NIR file. ``dt``: default the one ``peer``'s importer assumes (1 for ``nir``)."""

    nir = _nir()
    if peer not in PEERS:
        raise ConfigError(f"--for must be one of {', '.join(PEERS)}, got {peer!r}")
    dt = PEER_DT[peer] if dt is None else dt
    if not (dt > 0 and np.isfinite(dt)):
        raise ConfigError(f"--dt must be a positive number, got {dt}")
    graph = to_nir(model, config, rule, dt, peer)
    path = Path(path)
    # HDF5 is written to memory and the bytes to disk by seenn: HDF5 writing straight to a nearly full disk can
    # crash the process; a full disk is then one OSError here, the temporary file removed
    buf = io.BytesIO()
    nir.write(buf, graph)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------- import


def read_nir(path: Path):
    nir = _nir()
    if not Path(path).is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return nir.read(str(path))
    except Exception as e:  # h5py / NIR raise many types on a bad file
        raise CheckpointError(f"{path} is not a readable NIR graph ({type(e).__name__}: {e})") from None


def _ordered_chain(graph) -> list[str]:
    succ, pred = {}, {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    inputs = [k for k, n in graph.nodes.items() if type(n).__name__ == "Input"]
    if len(inputs) != 1:
        raise ConfigError(f"the graph needs exactly one Input node, it has {len(inputs)}")
    order, node = [], inputs[0]
    while True:
        order.append(node)
        nxt = succ.get(node, [])
        if not nxt:
            break
        if len(nxt) > 1 or len(pred.get(nxt[0], [])) > 1:
            raise ConfigError(f"node {node!r} branches: only chains of layers can be imported")
        node = nxt[0]
        if node in order:
            raise ConfigError("the graph has a cycle (recurrent connections cannot be imported)")
    if len(order) != len(graph.nodes):
        raise ConfigError("the graph has nodes off the input-to-output chain")
    return order


def _uniform(name: str, what: str, arr) -> float:
    try:
        a = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"node {name!r}: {what} must be numbers, got {arr!r:.40}") from None
    if not np.isfinite(a).all():
        raise ConfigError(f"node {name!r}: {what} holds NaN or Inf")
    if a.size == 0 or not np.allclose(a, a.flat[0]):
        raise ConfigError(f"node {name!r}: {what} differs between neurons; seenn needs one value per layer")
    return float(a.flat[0])


def from_nir(graph, dt: float = 1.0, discretisation: str = "euler", image_shape=None):
    """(layer specs, per-layer tensors, input shape, number of classes) from a chain-shaped NIR graph.
    ``image_shape`` ``(C, H, W)``: the images a flat input (an MLP's ``(C*H*W,)``) is made of."""
    if not dt > 0:
        raise ConfigError(f"--dt must be > 0, got {dt}")
    if discretisation not in ("euler", "exp"):
        raise ConfigError(f"--discretisation must be euler or exp, got {discretisation!r}")
    specs, tensors = [], []
    in_shape = None
    last_syn = None  # index of the latest synaptic layer, to fold input gains into
    for key in _ordered_chain(graph):
        node = graph.nodes[key]
        kind = type(node).__name__
        if kind == "Input":
            in_shape = tuple(int(v) for v in np.asarray(node.input_type["input"]).tolist())
            if len(in_shape) == 1 and image_shape is not None and int(np.prod(image_shape)) == in_shape[0]:
                in_shape = tuple(image_shape)  # a flat input: the images, flattened first
                specs.append({"type": "flatten"})
                tensors.append({})
            continue
        if kind == "Output":
            continue
        if kind == "Conv2d":
            w = np.array(node.weight, np.float32)  # a copy: gains fold into it, the caller's graph stays as it was
            if w.ndim != 4:
                raise ConfigError(f"node {key!r}: only 2-D convolutions are supported")
            pad = node.padding
            if isinstance(pad, str):
                raise ConfigError(f"node {key!r}: string padding {pad!r} is not supported")
            bias = None if node.bias is None or np.ndim(node.bias) == 0 else np.array(node.bias, np.float32)
            specs.append({"type": "conv2d", "in_channels": int(w.shape[1] * int(node.groups)),
                          "out_channels": int(w.shape[0]), "kernel_size": list(w.shape[2:]),
                          "stride": list(_pair(node.stride)), "padding": list(_pair(pad)),
                          "dilation": list(_pair(node.dilation)), "groups": int(node.groups), "bias": bias is not None})
            tensors.append({"weight": w, **({"bias": bias} if bias is not None else {})})
            last_syn = len(specs) - 1
        elif kind in ("Affine", "Linear"):
            w = np.array(node.weight, np.float32)
            if w.ndim != 2:
                raise ConfigError(f"node {key!r}: an {kind} weight must be a matrix, got shape {w.shape}")
            bias = np.array(node.bias, np.float32) if kind == "Affine" else None
            specs.append({"type": "linear", "in_features": int(w.shape[1]), "out_features": int(w.shape[0]),
                          "bias": bias is not None})
            tensors.append({"weight": w, **({"bias": bias} if bias is not None else {})})
            last_syn = len(specs) - 1
        elif kind in ("LIF", "IF"):
            if kind == "LIF":
                tau = _uniform(key, "tau", node.tau)
                if not tau > 0:
                    raise ConfigError(f"node {key!r}: tau must be > 0, got {tau}")
                if _uniform(key, "v_leak", node.v_leak) != 0.0:
                    raise ConfigError(f"node {key!r}: a nonzero v_leak is not supported")
                r = _uniform(key, "r", node.r)
                if discretisation == "exp":
                    decay = float(np.exp(-dt / tau))
                    gain = r * (1.0 - decay)
                else:
                    decay, gain = 1.0 - dt / tau, dt * r / tau
                if not 0.0 < decay <= 1.0:
                    raise ConfigError(f"node {key!r}: tau {tau} with dt {dt} gives decay {decay}, outside (0, 1]; "
                                      "pass the dt the graph was made for (--dt: snnTorch and SpikingJelly export "
                                      "with 1e-4) or --discretisation exp")
            else:
                decay, gain = 1.0, dt * _uniform(key, "r", node.r)
            v_reset = getattr(node, "v_reset", None)
            if v_reset is not None and _uniform(key, "v_reset", v_reset) != 0.0:
                raise ConfigError(f"node {key!r}: reset to a nonzero potential is not supported")
            if gain != 1.0:
                if last_syn is not None:  # the synaptic layer right before this neuron (pools, flatten between)
                    for t in tensors[last_syn].values():
                        t *= np.float32(gain)
                else:  # the neuron reads another neuron (or the input): the gain is a layer of its own
                    specs.append({"type": "scale", "factor": float(gain)})
                    tensors.append({})
            theta = _uniform(key, "v_threshold", node.v_threshold)
            if not theta > 0:
                raise ConfigError(f"node {key!r}: v_threshold must be > 0, got {theta}")
            specs.append({"type": "neuron", "decay": decay, "threshold": _above(theta), "soft_reset": False,
                          "v_init": 0.0})
            tensors.append({})
            last_syn = None  # a gain after this neuron must not reach the layer before it
        elif kind in ("LI", "CubaLIF"):
            def step_of(tau_name, tau):
                if not tau > 0:
                    raise ConfigError(f"node {key!r}: {tau_name} must be > 0, got {tau}")
                d = float(np.exp(-dt / tau)) if discretisation == "exp" else 1.0 - dt / tau
                if not 0.0 < d <= 1.0:
                    raise ConfigError(f"node {key!r}: {tau_name} {tau} with dt {dt} gives decay {d}, outside (0, 1]; "
                                      "pass the dt the graph was made for (--dt) or --discretisation exp")
                return d, ((1.0 - d) if discretisation == "exp" else dt / tau)

            if _uniform(key, "v_leak", node.v_leak) != 0.0:
                raise ConfigError(f"node {key!r}: a nonzero v_leak is not supported")
            r = _uniform(key, "r", node.r)
            if kind == "LI":
                decay, k = step_of("tau", _uniform(key, "tau", node.tau))
                gain, spec = k * r, {"type": "li", "decay": decay}
            else:
                syn_decay, ks = step_of("tau_syn", _uniform(key, "tau_syn", node.tau_syn))
                decay, km = step_of("tau_mem", _uniform(key, "tau_mem", node.tau_mem))
                v_reset = getattr(node, "v_reset", None)
                if v_reset is not None and _uniform(key, "v_reset", v_reset) != 0.0:
                    raise ConfigError(f"node {key!r}: reset to a nonzero potential is not supported")
                theta = _uniform(key, "v_threshold", node.v_threshold)
                if not theta > 0:
                    raise ConfigError(f"node {key!r}: v_threshold must be > 0, got {theta}")
                gain = ks * _uniform(key, "w_in", node.w_in)
                spec = {"type": "cubalif", "syn_decay": syn_decay, "decay": decay, "gain": km * r,
                        "threshold": _above(theta)}
            if gain != 1.0:
                if last_syn is not None:
                    for t in tensors[last_syn].values():
                        t *= np.float32(gain)
                else:
                    specs.append({"type": "scale", "factor": float(gain)})
                    tensors.append({})
            specs.append(spec)
            tensors.append({})
            last_syn = None
        elif kind in ("AvgPool2d", "SumPool2d"):
            specs.append({"type": kind.lower(), "kernel_size": list(_pair(node.kernel_size)),
                          "stride": list(_pair(node.stride)), "padding": list(_pair(node.padding))})
            tensors.append({})
        elif kind == "Flatten":
            specs.append({"type": "flatten"})
            tensors.append({})
        else:
            raise ConfigError(f"node {key!r} is a {kind}, which seenn cannot import (supported: Conv2d, Affine, "
                              "Linear, LIF, IF, LI, CubaLIF, AvgPool2d, SumPool2d, Flatten)")
    if in_shape is None or len(in_shape) != 3:
        raise ConfigError(f"the Input node must give a [C, H, W] image shape, got {in_shape}")
    out_features = next((s["out_features"] if s["type"] == "linear" else s["out_channels"]
                         for s in reversed(specs) if s["type"] in ("linear", "conv2d")), None)
    if out_features is None:
        raise ConfigError("the graph has no synaptic layer")
    return specs, tensors, in_shape, out_features


DEFAULT_IMPORT_TIMESTEPS = 4  # when neither --timesteps nor the graph's metadata says


def _normalisation_layer(text, info, channels: int, where: str):
    """A per-channel affine layer (a depthwise 1x1 convolution) taking seenn's normalised inputs to the ones the
    graph records in ``input_normalisation`` (``{"pixel_scale", "mean", "std"}``); None when they are the same."""
    if not text:
        return None
    try:
        spec = json.loads(text)
        scale = float(spec.get("pixel_scale", 1 / 255))
        mean = np.broadcast_to(np.asarray(spec.get("mean", 0.0), np.float64), (channels,))
        std = np.broadcast_to(np.asarray(spec.get("std", 1.0), np.float64), (channels,))
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise ConfigError(f"{where}: metadata input_normalisation must be JSON with pixel_scale, mean and std") from None
    if channels != info.channels or not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()
                                         and np.isfinite(scale) and scale > 0):
        raise ConfigError(f"{where}: metadata input_normalisation does not fit {info.name} ({channels} channels)")
    md, sd = np.asarray(info.mean), np.asarray(info.std)
    weight = sd * 255 * scale / std  # pixel p = (x * sd + md) * 255; the graph wants (p * scale - mean) / std
    bias = (md * 255 * scale - mean) / std
    if np.allclose(weight, 1.0, atol=1e-6) and np.allclose(bias, 0.0, atol=1e-6):
        return None
    spec = {"type": "conv2d", "in_channels": channels, "out_channels": channels, "kernel_size": [1, 1],
            "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": channels, "bias": True}
    return spec, {"weight": weight.astype(np.float32).reshape(channels, 1, 1, 1), "bias": bias.astype(np.float32)}


def import_nir(path: Path, *, dataset: str, max_timesteps: int | None = None, dt: float | None = None,
               discretisation: str = "euler"):
    """A seenn model and run config from a NIR file. ``dt``: the time step the graph's time constants assume
    (default: the graph's metadata, else 1)."""

    info = dataset_info(dataset)
    graph = read_nir(path)
    meta = nir_metadata(graph.metadata, str(path))
    if dt is None:
        dt = meta.get("dt") or 1.0
    specs, tensors, (c, h, w), classes = from_nir(graph, dt, discretisation,
                                                   (info.channels, info.image_size, info.image_size))
    if h != w:
        raise ConfigError(f"only square images are supported, got {h}x{w}")
    norm = _normalisation_layer(meta.get("input_normalisation"), info, c, str(path))
    if norm is not None:
        specs.insert(0, norm[0])
        tensors.insert(0, norm[1])
    for spec, tens in zip(specs, tensors):
        for k, v in tens.items():
            if not np.isfinite(v).all():
                raise ConfigError(f"{path}: the {spec['type']} layer's {k} holds NaN or Inf")
    t = max_timesteps if max_timesteps is not None else meta.get("max_timesteps")
    t_source = "--timesteps" if max_timesteps is not None else "metadata" if t is not None else "default"
    t = DEFAULT_IMPORT_TIMESTEPS if t is None else bounded("timesteps", t, "--timesteps")
    model_cfg = {"name": "sequential", "in_channels": c, "image_size": h, "num_classes": classes, "width": 1.0,
                 "surrogate": "tanh", "layers": specs}
    config = {"seenn_version": __version__, "dataset": dataset, "max_timesteps": t, "model": model_cfg,
              "imported_from": {"file": Path(path).name, "dt": dt, "discretisation": discretisation,
                                "max_timesteps_from": t_source, "input_normalisation": norm is not None,
                                "source": str(meta.get("source", "unknown"))}}
    exit_meta = meta.get("exit")
    if exit_meta:
        try:
            rule = json.loads(exit_meta)
            if rule.get("rule") in ("confidence", "entropy") and rule.get("threshold") is not None:
                config["exit"] = {rule["rule"]: {"threshold": rule["threshold"],
                                                 "temperature": rule.get("temperature", 1.0)}}
        except (ValueError, AttributeError, RecursionError):
            pass

    check_config(config, f"{path} (its metadata and layers)")
    check_model_size("sequential", in_channels=c, image_size=h, num_classes=classes, layers=specs)
    model = SequentialSNN(layers=specs, in_channels=c, image_size=h, num_classes=classes)
    mods = list(model.stem) + list(model.body)
    with torch.no_grad():
        for mod, tens in zip(mods, tensors):
            for k, v in tens.items():
                getattr(mod, k).copy_(torch.from_numpy(np.ascontiguousarray(v)))
        try:
            out = model.eval()(torch.zeros(1, c, h, w), 1)
        except RuntimeError as e:
            raise ConfigError(f"{path}: the graph does not run on [{c}, {h}, {w}] inputs "
                              f"({str(e).splitlines()[0]})") from None
    if out.dim() != 3:
        raise ConfigError(f"{path}: the graph's output must be one vector of class scores per input, got shape "
                          f"{list(out.shape[2:])}")
    return model.eval(), config
