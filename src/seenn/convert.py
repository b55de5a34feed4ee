"""ANN-to-SNN conversion: a chain of Conv2d / Linear / BatchNorm / ReLU or QCFS / AvgPool2d / Flatten layers becomes
a ``sequential`` SNN of integrate-and-fire neurons.

- Batch norm is folded into the preceding convolution or linear layer (exact in eval mode).
- Each activation becomes an IF neuron reset by subtraction with threshold ``theta`` and initial membrane
  ``theta / 2``: ``theta`` is the QCFS clip value ``lam`` (a clip value trained below zero computes
  ``-qcfs_|lam|(-x)``: the neuron then reads the negated input and passes ``-|lam|`` on), or for a plain ReLU a high percentile of its activations
  on calibration data (robust normalisation, Rueckauer et al. 2017).
- Spikes stay binary; each neuron's ``theta`` multiplies the weights of the next convolution or linear layer (so
  the SNN's rate ``theta * spikes / t`` reproduces the ANN's activation), average pooling and flatten pass through.
- The stem (everything before the first neuron) is computed once per input, as for every seenn network.

Max pooling has no spiking counterpart here and is refused, as is anything that is not a plain chain.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ConfigError
from .fold import fold_bn
from .models.sequential import SequentialSNN
from .qcfs import QCFS

ACTIVATIONS = (nn.ReLU, QCFS)
SUPPORTED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, QCFS, nn.AvgPool2d, nn.Flatten,
             nn.Dropout, nn.Identity)
SUPPORTED_NAMES = "Conv2d, Linear, BatchNorm1d/2d, ReLU, QCFS, AvgPool2d, Flatten, Dropout"


class ConversionError(ConfigError):
    """The ANN has a layer or a structure that does not convert."""


def _refuse(layer: nn.Module, where: str) -> None:
    if isinstance(layer, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
        raise ConversionError(f"{type(layer).__name__} at {where} cannot be converted: a spiking layer has no max of "
                              "rates; train the ANN with AvgPool2d instead")
    if not isinstance(layer, SUPPORTED):
        raise ConversionError(f"unsupported layer {type(layer).__name__} at {where}; conversion handles "
                              f"{SUPPORTED_NAMES}")


def layer_chain(ann: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ANN's layers in execution order, checked to form a plain chain. A seenn network (``stem`` + ``body``)
    and ``nn.Sequential`` are read directly; any other module is traced with ``torch.fx``."""
    if isinstance(getattr(ann, "stem", None), nn.Sequential) and isinstance(getattr(ann, "body", None), nn.Sequential):
        layers = [(f"stem.{n}", m) for n, m in ann.stem.named_children()]
        layers += [(f"body.{n}", m) for n, m in ann.body.named_children()]
    elif isinstance(ann, nn.Sequential):
        layers = []
        for name, m in ann.named_children():
            layers += [(f"{name}.{n}", c) for n, c in layer_chain(m)] if isinstance(m, nn.Sequential) else [(name, m)]
    else:
        layers = _trace(ann)
    for name, m in layers:
        _refuse(m, name)
    return layers


def _trace(ann: nn.Module) -> list[tuple[str, nn.Module]]:
    import torch.fx as fx

    try:
        graph = fx.symbolic_trace(ann).graph
    except Exception as e:  # tracing fails on data-dependent control flow: not a plain chain
        raise ConversionError(f"cannot read {type(ann).__name__} as a chain of layers ({type(e).__name__}: {e}); "
                              "pass an nn.Sequential") from None
    modules = dict(ann.named_modules())

    def is_size(n) -> bool:  # x.size(0) feeding x.view(x.size(0), -1)
        return n.op == "call_method" and n.target == "size"

    layers, prev = [], None
    for node in graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise ConversionError(f"{type(ann).__name__}.forward takes more than one input")
            prev = node
            continue
        if is_size(node):
            continue
        inputs = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and not is_size(a)]
        if node.op == "output":
            if inputs != [prev]:
                raise ConversionError(f"{type(ann).__name__} does not return its last layer's output")
            break
        users = [u for u in prev.users if not is_size(u)]
        if inputs != [prev] or users != [node]:
            raise ConversionError(f"{type(ann).__name__} is not a plain chain of layers at {node.name!r} "
                                  "(branches or residual connections do not convert)")
        name = getattr(node.target, "__name__", node.target)
        if node.op == "call_module":
            m = modules[node.target]
            _refuse(m, node.target)
            layers.append((node.target, m))
        elif _flattens(node, is_size):
            layers.append((node.name, nn.Flatten()))
        elif name == "relu":
            layers.append((node.name, nn.ReLU()))
        elif name in ("max_pool2d", "adaptive_max_pool2d"):
            raise ConversionError(f"{name} at {node.name!r} cannot be converted: a spiking layer has no max of "
                                  "rates; train the ANN with AvgPool2d instead")
        else:
            raise ConversionError(f"unsupported operation {name!r} at {node.name!r}; conversion handles "
                                  f"{SUPPORTED_NAMES}")
        prev = node
    return layers


def _flattens(node, is_size) -> bool:
    """``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``, ``x.reshape(-1, n)``."""
    name = getattr(node.target, "__name__", node.target)
    if name == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if name in ("view", "reshape") and node.op == "call_method":
        shape = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        batch_dim = shape[0] == -1 or (hasattr(shape[0], "op") and is_size(shape[0]))
        return len(shape) == 2 and batch_dim and (shape[0] == -1 or shape[1] == -1)
    return False


def _fold(layers: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Fold every BN into the conv / linear before it; drop dropout and identities."""
    out: list[tuple[str, nn.Module]] = []
    for name, m in layers:
        if isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not out or not isinstance(out[-1][1], (nn.Conv2d, nn.Linear)):
                raise ConversionError(f"{type(m).__name__} at {name} does not follow a Conv2d or Linear, so it "
                                      "cannot be folded")
            pname, prev = out[-1]
            out[-1] = (pname, fold_bn(prev, m))
            continue
        out.append((name, m))
    return out


@torch.no_grad()
def _relu_thresholds(layers, calibration: torch.Tensor, percentile: float) -> dict[int, float]:
    """For each ReLU (by position): the ``percentile`` of its positive activations on ``calibration``."""
    out, x = {}, calibration
    for i, (_, m) in enumerate(layers):
        x = m(x)
        if isinstance(m, nn.ReLU):
            pos = x[x > 0].float()
            if pos.numel() == 0:
                raise ConversionError(f"the ReLU at position {i} never fires on the calibration data")
            if pos.numel() > 2 ** 24:  # torch.quantile's limit: a random subsample
                pos = pos[torch.randperm(pos.numel())[:2 ** 24]]
            out[i] = torch.quantile(pos, percentile / 100.0).item()
    return out


def _spec(m: nn.Module) -> dict:
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ConversionError("only zero-padded convolutions with numeric padding convert")
        return {"type": "conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": list(m.kernel_size), "stride": list(m.stride), "padding": list(m.padding),
                "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}
    if isinstance(m, nn.Linear):
        return {"type": "linear", "in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None}
    if isinstance(m, nn.AvgPool2d):
        pair = (lambda v: list(v) if isinstance(v, tuple) else [v, v])
        if m.ceil_mode or (m.padding not in (0, (0, 0)) and not m.count_include_pad) or m.divisor_override:
            raise ConversionError("AvgPool2d with ceil_mode, divisor_override or count_include_pad=False does not "
                                  "convert")
        return {"type": "avgpool2d", "kernel_size": pair(m.kernel_size), "stride": pair(m.stride or m.kernel_size),
                "padding": pair(m.padding)}
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ConversionError("only Flatten(start_dim=1) converts")
        return {"type": "flatten"}
    raise ConversionError(f"unsupported layer {type(m).__name__}")  # pragma: no cover (filtered before)


def convert(ann: nn.Module, *, input_shape: tuple[int, int, int], calibration: torch.Tensor | None = None,
            percentile: float = 99.9) -> tuple[SequentialSNN, dict]:
    """Convert ``ann`` (a chain, see the module docstring) into a ``sequential`` SNN.

    ``input_shape`` is ``(channels, height, width)`` with height == width. ``calibration`` (a batch of inputs) is
    needed when the ANN has plain ReLUs: their thresholds are the ``percentile`` of their activations on it.
    Returns the SNN (eval mode) and its model config (the ``"model"`` entry of a run's ``config.json``)."""
    c, h, w = input_shape
    if h != w:
        raise ConversionError(f"seenn networks take square inputs, got {h}x{w}")
    if not 0 < percentile <= 100:
        raise ConversionError(f"percentile must be in (0, 100], got {percentile}")
    ann = ann.eval()
    layers = _fold(layer_chain(ann))
    if not any(isinstance(m, ACTIVATIONS) for _, m in layers):
        raise ConversionError("the ANN has no ReLU or QCFS activation: nothing to turn into spiking neurons")
    if not isinstance(layers[-1][1], (nn.Linear, nn.Conv2d)):
        raise ConversionError(f"the ANN must end in a Linear (or Conv2d) readout, not {type(layers[-1][1]).__name__}")
    relus = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.ReLU)]
    if relus and calibration is None:
        raise ConversionError("the ANN uses ReLU: pass calibration inputs to set the neuron thresholds "
                              "(or train it with QCFS: seenn train --ann)")
    relu_theta = _relu_thresholds(layers, calibration, percentile) if relus else {}

    last_weighted = None
    specs, tensors, scale = [], {}, 1.0  # scale: the last neuron's threshold, owed to the next weighted layer
    pending_act = False  # an activation needs a weighted layer before it
    for i, (name, m) in enumerate(layers):
        if isinstance(m, ACTIVATIONS):
            if not pending_act:
                raise ConversionError(f"the activation at {name} does not follow a Conv2d or Linear")
            theta = m.threshold.item() if isinstance(m, QCFS) else relu_theta[i]
            if theta == 0 or not math.isfinite(theta):
                raise ConversionError(f"the activation at {name} has the threshold {theta}: it passes nothing")
            if theta < 0:  # a clip value trained through zero: qcfs_lam(x) = -qcfs_|lam|(-x), so the neuron
                # reads the negated input (the last weighted layer's sign flips) and the next layer gets -|lam|
                for k in (f"{last_weighted}.weight", f"{last_weighted}.bias"):
                    if k in tensors:
                        tensors[k] = -tensors[k]
            tensors[f"{len(specs)}.threshold"] = torch.tensor(abs(float(theta)))
            specs.append({"type": "neuron", "decay": 1.0, "threshold": abs(float(theta)), "soft_reset": True,
                          "v_init": 0.5})
            scale, pending_act = theta, False
            continue
        spec = _spec(m)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            last_weighted = len(specs)
            tensors[f"{len(specs)}.weight"] = m.weight.detach() * scale
            if m.bias is not None:
                tensors[f"{len(specs)}.bias"] = m.bias.detach().clone()
            scale, pending_act = 1.0, True
        specs.append(spec)
    model_cfg = {"name": "sequential", "in_channels": c, "image_size": h, "num_classes": _num_classes(layers),
                 "layers": specs}
    snn = SequentialSNN(layers=specs, in_channels=c, image_size=h, num_classes=model_cfg["num_classes"])
    first = next(i for i, s in enumerate(specs) if s["type"] == "neuron")
    state = {}
    for k, v in tensors.items():
        idx, param = k.split(".")
        idx = int(idx)
        state[f"stem.{idx}.{param}" if idx < first else f"body.{idx - first}.{param}"] = v
    missing = set(snn.state_dict()) - set(state)
    if missing:  # pragma: no cover (the specs and tensors are built together)
        raise ConversionError(f"internal: no weights for {sorted(missing)}")
    snn.load_state_dict(state)
    return snn.eval(), model_cfg


def _num_classes(layers) -> int:
    last = layers[-1][1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


def convert_run(ann_run, out_dir, *, timesteps: int = 64) -> dict:
    """Convert a QCFS ANN run (``seenn train --ann``) into an SNN run directory with ``timesteps`` max timesteps.
    Returns the new run's config."""
    from pathlib import Path

    from . import __version__
    from .checkpoint import METRICS, load_run, read_json, resolve_run, save_run

    if timesteps < 1:
        raise ConversionError(f"--timesteps must be >= 1, got {timesteps}")
    src = resolve_run(ann_run)
    ann, config = load_run(src)
    if config.get("kind") != "ann":
        raise ConversionError(f"{ann_run} is a spiking run, not an ANN (train one with seenn train --ann)")
    m = config["model"]
    snn, model_cfg = convert(ann, input_shape=(m["in_channels"], m["image_size"], m["image_size"]))
    ann_metrics = read_json(src / METRICS) if (src / METRICS).is_file() else {}
    thresholds = [s["threshold"] for s in model_cfg["layers"] if s["type"] == "neuron"]
    out = {"seenn_version": __version__, "dataset": config["dataset"], "max_timesteps": timesteps,
           "model": model_cfg, "training": config.get("training", {}),
           "converted_from": {"run": Path(src).name, "model": m, "neuron": "IF, reset by subtraction, v0 = theta/2",
                              "thresholds": thresholds,
                              "clip_values": [q.threshold.item() for q in ann.modules() if isinstance(q, QCFS)]}}
    save_run(Path(out_dir), snn, out, {"ann_val_accuracy": ann_metrics.get("best_val_accuracy")})
    return out
