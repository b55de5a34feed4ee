"""ANN-to-SNN conversion: a network of Conv2d / Linear / BatchNorm / ReLU, ReLU6 or QCFS / AvgPool2d /
AdaptiveAvgPool2d / Flatten layers, wired as a chain or with residual additions (ResNet basic and bottleneck blocks,
with or without projection shortcuts), becomes an SNN of integrate-and-fire neurons.

The ANN is traced with ``torch.fx`` (seenn's own networks, ``nn.Sequential``, torchvision-style ResNets and any
module whose forward has no data-dependent control flow), then:

- Every batch norm is folded into the convolution or linear layer before it (exact in eval mode), also inside
  shortcuts; a BN that follows anything else is refused. Dropout and Identity vanish (identities at inference).
- Each activation becomes an IF neuron reset by subtraction with threshold ``theta`` and initial membrane
  ``theta / 2``: ``theta`` is the QCFS clip value ``lam`` (a clip value trained below zero computes
  ``-qcfs_|lam|(-x)``: the neuron then reads the negated input and passes ``-|lam|`` on), a ReLU6 / ``clamp(x, 0, c)``
  / ``hardtanh(x, 0, c)``'s clip ``c`` (exactly what an IF neuron saturates at), or for a plain ReLU a high
  percentile of its activations on calibration data (robust normalisation, Rueckauer et al. 2017).
- Spikes stay binary. A neuron's output stands for ``theta * spikes``: that amplitude multiplies the weights of the
  next convolution or linear layer, passes through pooling and flatten, and where spikes enter a residual sum
  unweighted (an identity shortcut) a constant gain layer (``scale``) carries it. The residual sum feeds the next
  IF neuron as one input current.
- ``AdaptiveAvgPool2d`` becomes the average pool it is at the traced input size; ``torch.flatten(x, 1)``,
  ``x.flatten(1)``, ``x.view(x.size(0), -1)`` and ``x.reshape(x.size(0), -1)`` become a flatten.
- Max pooling is refused: a rate-coded spiking layer has no exact max of rates. Train with average pooling, or
  replace each max pool by the average pool of the same window (:func:`replace_maxpool`) and fine-tune the ANN a
  few epochs before converting.
- The result is a ``sequential`` network when the ANN is a chain and a ``graph`` network otherwise; the stem (the
  chain before the first neuron) is computed once per input, as for every seenn network.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .fold import fold_bn
from .qcfs import QCFS

SUPPORTED_NAMES = ("Conv2d, Linear, BatchNorm1d/2d, ReLU, ReLU6, QCFS, AvgPool2d, AdaptiveAvgPool2d, Flatten, "
                   "Dropout, Identity and residual additions")
_MAXPOOL_HINT = ("a rate-coded spiking layer has no exact max of rates; train the ANN with AvgPool2d instead, or "
                 "replace it by the average pool of the same window (seenn.conversion.replace_maxpool) and fine-tune "
                 "the ANN for a few epochs before converting")


class ConversionError(ConfigError):
    """The ANN has a layer or a structure that does not convert."""


def replace_maxpool(ann: nn.Module) -> nn.Module:
    """Replace every ``MaxPool2d`` of ``ann`` in place by the ``AvgPool2d`` of the same window, stride and padding
    (the documented way to make a max-pooling ANN convertible; fine-tune it afterwards, as its function changed).
    Returns ``ann``."""
    for name, child in ann.named_children():
        if isinstance(child, nn.MaxPool2d):
            if child.dilation not in (1, (1, 1)):
                raise ConversionError(f"MaxPool2d at {name} is dilated: no average pool has the same window")
            if child.ceil_mode:
                raise ConversionError(f"MaxPool2d at {name} uses ceil_mode, which no convertible pool has")
            # zeros in the padding count: a linear pool, as the converted network needs
            setattr(ann, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        else:
            replace_maxpool(child)
    return ann


# ------------------------------------------------------------------------------------------- reading the ANN


class _SeennANN(nn.Module):
    """A seenn network's ANN pass (``stem`` then ``body``) as a module to trace."""

    def __init__(self, net):
        super().__init__()
        self.stem, self.body = net.stem, net.body

    def forward(self, x):
        return self.body(self.stem(x))


def _root(ann: nn.Module) -> nn.Module:
    """What to trace: a seenn network's ANN pass (its forward takes timesteps), any other module as it is. By type,
    never by attribute names: a user's ANN with a ``stem`` / ``body`` / ``head`` is traced through its own
    forward, every layer it calls included."""
    from .models.base import SpikingNetwork

    return _SeennANN(ann) if isinstance(ann, SpikingNetwork) else ann


def _tracer():
    import torch.fx as fx

    from .fold import FastAvgPool2d

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, (QCFS, FastAvgPool2d)) or super().is_leaf_module(m, qualname)

    return Tracer()


def _op_name(node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


_ADDS = {operator.add, operator.iadd, torch.add}
_RELUS = {F.relu, torch.relu, torch.relu_}
_IDENTITY_CALLS = {F.dropout, F.dropout2d, torch.dropout}


def read_graph(ann: nn.Module, input_shape) -> list[dict]:
    """The ANN as a list of operations in execution order, each ``{"name", "kind", "inputs", "shape", ...}``
    (``inputs``: indices of earlier operations, -1 the input; ``shape``: the output shape for one sample).
    Kinds: conv, linear, bn, act (with ``act``: "relu", "clip" and ``clip``, or "qcfs"), avgpool, flatten, add.
    Anything else is refused with the layer's name."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    root = _root(ann)
    try:
        graph = _tracer().trace(root)
        gm = fx.GraphModule(root, graph)
    except Exception as e:  # data-dependent control flow and the like
        raise ConversionError(f"cannot trace {type(ann).__name__} with torch.fx ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); write its forward without "
                              "data-dependent control flow") from None
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception as e:
        raise ConversionError(f"{type(ann).__name__} does not run on inputs of shape {tuple(input_shape)} "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    modules = dict(gm.named_modules())
    ops: list[dict] = []
    value: dict = {}
    SIZE = object()
    out_index = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if value:
                raise ConversionError(f"{type(ann).__name__}.forward takes more than one input")
            value[node] = -1
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or value.get(out, SIZE) is SIZE:
                raise ConversionError(f"{type(ann).__name__} must return one tensor of logits")
            out_index = value[out]
            break
        if node.op == "get_attr":
            raise ConversionError(f"{node.target!r} reads a tensor attribute directly; only layers convert")
        name = _op_name(node)
        if node.op == "call_method" and name in ("size", "dim"):
            value[node] = SIZE
            continue
        tensor_args = [a for a in node.args if isinstance(a, fx.Node) and value.get(a) is not SIZE]
        ins = [value[a] for a in tensor_args]
        where = node.target if node.op == "call_module" else node.name
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None
        op = _classify(node, modules, name, where, shape, tensor_args, value, SIZE)
        if op is None:  # an identity
            value[node] = ins[0]
            continue
        if op["kind"] != "add" and len(ins) != 1:
            raise ConversionError(f"{where!r} takes {len(ins)} tensor inputs; only additions take several")
        op.update(name=str(where), inputs=ins, shape=shape)
        ops.append(op)
        value[node] = len(ops) - 1
    if out_index is None or out_index < 0:
        raise ConversionError(f"{type(ann).__name__} returns its input unchanged")
    if out_index != len(ops) - 1:
        raise ConversionError(f"{type(ann).__name__} computes layers after its output")
    return ops


def _classify(node, modules, name, where, shape, tensor_args, value, SIZE):
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d)):
            raise ConversionError(f"{type(m).__name__} at {where} cannot be converted: {_MAXPOOL_HINT}")
        if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity)):
            return None
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ConversionError(f"Conv2d at {where}: only zero-padded convolutions with numeric padding "
                                      "convert")
            return {"kind": "conv", "module": m}
        if isinstance(m, nn.Linear):
            return {"kind": "linear", "module": m}
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return {"kind": "bn", "module": m}
        if isinstance(m, QCFS):
            return {"kind": "act", "act": "qcfs", "clip": m.threshold.item()}
        if isinstance(m, nn.ReLU):
            return {"kind": "act", "act": "relu"}
        if isinstance(m, nn.ReLU6):
            return {"kind": "act", "act": "clip", "clip": 6.0}
        if isinstance(m, nn.Hardtanh) and m.min_val == 0 and m.max_val > 0:
            return {"kind": "act", "act": "clip", "clip": float(m.max_val)}
        if isinstance(m, nn.AvgPool2d):
            if m.ceil_mode or m.divisor_override or (m.padding not in (0, (0, 0)) and not m.count_include_pad):
                raise ConversionError(f"AvgPool2d at {where} with ceil_mode, divisor_override or "
                                      "count_include_pad=False does not convert")
            return _avgpool(m.kernel_size, m.stride or m.kernel_size, m.padding)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return _adaptive(where, m.output_size, tensor_args[0])
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ConversionError(f"Flatten at {where}: only Flatten(start_dim=1) converts")
            return {"kind": "flatten"}
        raise ConversionError(f"unsupported layer {type(m).__name__} at {where}; conversion handles {SUPPORTED_NAMES}")
    fn = node.target
    consts = [a for a in node.args[1:] if not hasattr(a, "op")]
    if name in ("max_pool2d", "adaptive_max_pool2d", "max_pool2d_with_indices", "max_pool1d"):
        raise ConversionError(f"{name} at {where!r} cannot be converted: {_MAXPOOL_HINT}")
    if fn in _ADDS or (node.op == "call_method" and name in ("add", "add_", "__add__", "__iadd__")):
        tensors = [a for a in node.args if hasattr(a, "op") and value.get(a) is not SIZE]
        if len(tensors) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise ConversionError(f"{name} at {where!r} adds a constant: only sums of two layers' outputs convert")
        return {"kind": "add"}
    if fn in _RELUS or (node.op == "call_method" and name in ("relu", "relu_")):
        return {"kind": "act", "act": "relu"}
    if fn is F.relu6:
        return {"kind": "act", "act": "clip", "clip": 6.0}
    if fn in (torch.clamp, torch.clip, F.hardtanh) or (node.op == "call_method" and name in ("clamp", "clip",
                                                                                             "clamp_")):
        lo = node.kwargs.get("min", node.kwargs.get("min_val", consts[0] if consts else None))
        hi = node.kwargs.get("max", node.kwargs.get("max_val", consts[1] if len(consts) > 1 else None))
        if fn is F.hardtanh and lo is None:
            lo, hi = -1.0, 1.0 if hi is None else hi
        if lo == 0 and hi is not None and hi > 0:
            return {"kind": "act", "act": "clip", "clip": float(hi)}
        if lo == 0 and hi is None:
            return {"kind": "act", "act": "relu"}
        raise ConversionError(f"{name} at {where!r} clamps to [{lo}, {hi}]: only clamp(x, 0, c) maps onto a neuron")
    if fn in _IDENTITY_CALLS or (node.op == "call_method" and name in ("contiguous",)):
        return None
    if _flattens(node, value, SIZE):
        return {"kind": "flatten"}
    if fn is F.adaptive_avg_pool2d:
        return _adaptive(where, node.args[1] if len(node.args) > 1 else node.kwargs["output_size"], tensor_args[0])
    if fn is F.avg_pool2d:
        a = list(node.args[1:]) + [None] * 3
        k = node.kwargs.get("kernel_size", a[0])
        st = node.kwargs.get("stride", a[1]) or k
        pad = node.kwargs.get("padding", a[2] if a[2] is not None else 0)
        return _avgpool(k, st, pad)
    raise ConversionError(f"unsupported operation {name!r} at {where!r}; conversion handles {SUPPORTED_NAMES}")


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [int(v), int(v)]


def _avgpool(kernel, stride, padding) -> dict:
    return {"kind": "avgpool", "kernel_size": _pair(kernel), "stride": _pair(stride), "padding": _pair(padding)}


def _adaptive(where, output_size, arg) -> dict:
    meta = arg.meta.get("tensor_meta")
    h, w = meta.shape[-2:]
    oh, ow = _pair(output_size)
    oh, ow = oh or h, ow or w
    if h % oh or w % ow:
        raise ConversionError(f"AdaptiveAvgPool2d at {where}: {h}x{w} maps to {oh}x{ow} with unequal windows; "
                              "only output sizes that divide the input convert")
    return _avgpool((h // oh, w // ow), (h // oh, w // ow), 0)


def _flattens(node, value, SIZE) -> bool:
    """``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``, ``x.reshape(-1, n)``."""
    name = _op_name(node)
    if name == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if name in ("view", "reshape") and node.op == "call_method":
        shape = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        if len(shape) != 2:
            return False
        batch_dim = shape[0] == -1 or (hasattr(shape[0], "op") and value.get(shape[0]) is SIZE)
        return batch_dim and (shape[0] == -1 or shape[1] == -1)
    return False


# ------------------------------------------------------------------------------------------- converting


def _users(ops) -> list[list[int]]:
    users = [[] for _ in ops]
    for i, op in enumerate(ops):
        for j in op["inputs"]:
            if j >= 0:
                users[j].append(i)
    return users


def _fold_bns(ops: list[dict]) -> list[dict]:
    """Every BN folded into the conv / linear it reads (which nothing else may read); the BN becomes an alias."""
    users = _users(ops)
    alias = {}
    for i, op in enumerate(ops):
        op["inputs"] = [alias.get(j, j) for j in op["inputs"]]
        if op["kind"] != "bn":
            continue
        src = op["inputs"][0]
        prev = ops[src] if src >= 0 else None
        if prev is None or prev["kind"] not in ("conv", "linear") or len(users[src]) != 1:
            raise ConversionError(f"{type(op['module']).__name__} at {op['name']} does not follow a Conv2d or "
                                  "Linear that it alone reads, so it cannot be folded")
        prev["module"] = fold_bn(prev["module"], op["module"])
        alias[i] = src
    keep = [i for i, op in enumerate(ops) if op["kind"] != "bn"]
    index = {old: new for new, old in enumerate(keep)}
    out = []
    for i in keep:
        op = dict(ops[i])
        op["inputs"] = [index[alias.get(j, j)] if j >= 0 else -1 for j in op["inputs"]]
        out.append(op)
    return out


@torch.no_grad()
def _record(ann, names: set, calibration, input_shape, reduce) -> dict[str, list]:
    """``reduce(output)`` of each named operation (``read_graph``'s names) on the ``calibration`` inputs."""
    import torch.fx as fx

    root = _root(ann)
    gm = fx.GraphModule(root, _tracer().trace(root))
    seen: dict[str, list] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            where = str(n.target) if n.op == "call_module" else n.name
            if where in names:
                seen.setdefault(where, []).append(reduce(out.detach()))
            return out

    if calibration.dim() != 4 or tuple(calibration.shape[1:]) != tuple(input_shape):
        raise ConversionError(f"calibration inputs must be [N, {', '.join(map(str, input_shape))}], got "
                              f"{list(calibration.shape)}")
    Recorder(gm).run(calibration.float())
    return seen


def _relu_thresholds(ann, ops_names: set, calibration, percentile: float, input_shape) -> dict[str, float]:
    """For each ReLU (by operation name): the ``percentile`` of its positive activations on ``calibration``."""
    seen = _record(ann, ops_names, calibration, input_shape, lambda out: out)
    out = {}
    for where in ops_names:
        x = torch.cat([t.reshape(-1) for t in seen.get(where, [])]) if seen.get(where) else torch.zeros(0)
        pos = x[x > 0].float()
        if pos.numel() == 0:
            raise ConversionError(f"the ReLU at {where} never fires on the calibration data")
        if pos.numel() > 2 ** 24:  # torch.quantile's limit: a random subsample
            pos = pos[torch.randperm(pos.numel(), generator=torch.Generator().manual_seed(0))[:2 ** 24]]
        out[where] = torch.quantile(pos, percentile / 100.0).item()
    return out


def convert(ann: nn.Module, *, input_shape: tuple[int, int, int], calibration: torch.Tensor | None = None,
            percentile: float = 99.9):
    """Convert ``ann`` (see the module docstring) into a seenn SNN of IF neurons.

    ``input_shape`` is ``(channels, height, width)`` with height == width. ``calibration`` (a batch of inputs) is
    needed when the ANN has plain ReLUs: their thresholds are the ``percentile`` of their activations on it.
    Returns the SNN (eval mode; a ``sequential`` model for chains, a ``graph`` model for residual networks) and its
    model config (the ``"model"`` entry of a run's ``config.json``)."""
    from .checkpoint import check_model_size
    from .models import build_model

    c, h, w = input_shape
    if h != w:
        raise ConversionError(f"seenn networks take square inputs, got {h}x{w}")
    if not 0 < percentile <= 100:
        raise ConversionError(f"percentile must be in (0, 100], got {percentile}")
    was_training = ann.training
    ann.eval()
    try:
        ops = _fold_bns(read_graph(ann, input_shape))
        if not any(op["kind"] == "act" for op in ops):
            raise ConversionError("the ANN has no ReLU or QCFS activation: nothing to turn into spiking neurons")
        last = ops[-1]
        if last["kind"] not in ("linear", "conv"):
            raise ConversionError(f"the ANN must end in a Linear (or Conv2d) readout, not {last['kind']} at "
                                  f"{last['name']}")
        if last["shape"] is None or len(last["shape"]) != 1:
            raise ConversionError(f"the ANN's output must be a vector of class logits per input, got shape "
                                  f"{list(last['shape'] or [])} (add a flatten before the readout)")
        relus = {op["name"] for op in ops if op["kind"] == "act" and op["act"] == "relu"}
        if relus and calibration is None:
            raise ConversionError("the ANN uses ReLU: pass calibration inputs to set the neuron thresholds "
                                  "(or train it with QCFS: seenn train --ann)")
        relu_theta = _relu_thresholds(ann, relus, calibration, percentile, input_shape) if relus else {}
        specs, tensors = _snn_specs(ops, relu_theta)
    finally:
        ann.train(was_training)
    chain = all("inputs" not in s for s in specs)
    name = "sequential" if chain else "graph"
    model_cfg = {"name": name, "in_channels": c, "image_size": h, "num_classes": int(last["shape"][0]),
                 "layers": specs}
    check_model_size(name, in_channels=c, image_size=h, num_classes=model_cfg["num_classes"], layers=specs)
    snn = build_model(name, in_channels=c, image_size=h, num_classes=model_cfg["num_classes"], layers=specs)
    mods = list(snn.stem) + (list(snn.body) if chain else list(snn.body.layers))
    with torch.no_grad():
        for i, tens in tensors.items():
            for k, v in tens.items():
                getattr(mods[i], k).copy_(v)
    return snn.eval(), model_cfg


def _snn_specs(ops: list[dict], relu_theta: dict) -> tuple[list[dict], dict]:
    """The SNN's layer specs and weights. ``amp[j]``: what one unit of spec j's output stands for (a neuron's
    ``theta``; 1 for analog currents), folded into the next weighted layer or carried by a ``scale`` layer."""
    specs: list[dict] = []
    tensors: dict[int, dict] = {}
    amp: list[float] = []
    where: dict[int, int] = {-1: -1}  # op index -> spec index

    def emit(spec: dict, inputs: list[int], a: float) -> int:
        idx = len(specs)
        if inputs != [idx - 1]:
            spec["inputs"] = list(inputs)
        specs.append(spec)
        amp.append(a)
        return idx

    def amp_of(j: int) -> float:
        return 1.0 if j == -1 else amp[j]

    users = _users(ops)
    for i, op in enumerate(ops):
        ins = [where[j] for j in op["inputs"]]
        kind = op["kind"]
        if kind in ("conv", "linear"):
            m, a = op["module"], amp_of(ins[0])
            spec = _weighted_spec(m, op["name"])
            t = {"weight": m.weight.detach() * a}
            if m.bias is not None:
                t["bias"] = m.bias.detach().clone()
            where[i] = emit(spec, ins, 1.0)
            tensors[where[i]] = t
        elif kind == "act":
            src = ins[0]
            if amp_of(src) != 1.0 or src == -1 or specs[src]["type"] not in ("conv2d", "linear", "add"):
                raise ConversionError(f"the activation at {op['name']} does not follow a Conv2d, Linear or residual "
                                      "sum")
            theta = relu_theta[op["name"]] if op["act"] == "relu" else op["clip"]
            if theta == 0 or not math.isfinite(theta):
                raise ConversionError(f"the activation at {op['name']} has the threshold {theta}: it passes nothing")
            if theta < 0:  # a clip value trained through zero: qcfs_lam(x) = -qcfs_|lam|(-x): negated input
                producer = [k for k, o in enumerate(ops) if where.get(k) == src]
                if specs[src]["type"] != "add" and all(len(users[k]) == 1 for k in producer):
                    for k in ("weight", "bias"):
                        if k in tensors[src]:
                            tensors[src][k] = -tensors[src][k]
                else:
                    src = emit({"type": "scale", "factor": -1.0}, [src], 1.0)
            neuron = {"type": "neuron", "decay": 1.0, "threshold": abs(float(theta)), "soft_reset": True,
                      "v_init": 0.5}
            where[i] = emit(neuron, [src], float(theta))
            tensors[where[i]] = {"threshold": torch.tensor(abs(float(theta)))}
        elif kind == "avgpool":
            spec = {"type": "avgpool2d", "kernel_size": op["kernel_size"], "stride": op["stride"],
                    "padding": op["padding"]}
            where[i] = emit(spec, ins, amp_of(ins[0]))
        elif kind == "flatten":
            where[i] = emit({"type": "flatten"}, ins, amp_of(ins[0]))
        elif kind == "add":
            terms = []
            for j in ins:  # spikes entering the sum unweighted carry their amplitude as a gain
                terms.append(j if amp_of(j) == 1.0 else emit({"type": "scale", "factor": amp_of(j)}, [j], 1.0))
            where[i] = emit({"type": "add"}, terms, 1.0)
            specs[where[i]]["inputs"] = terms
        else:  # pragma: no cover (read_graph gives no other kinds)
            raise ConversionError(f"internal: unexpected operation {kind}")
    return specs, tensors


def _weighted_spec(m: nn.Module, where: str) -> dict:
    if isinstance(m, nn.Conv2d):
        return {"type": "conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": list(m.kernel_size), "stride": list(m.stride), "padding": list(m.padding),
                "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}
    return {"type": "linear", "in_features": m.in_features, "out_features": m.out_features,
            "bias": m.bias is not None}


def convert_run(ann_run, out_dir, *, timesteps: int = 64, bias_correction: int | None = None,
                calibration_samples: int = 256, data_dir=None, seed: int = 0, potential_correction: bool = False) -> dict:
    """Convert a QCFS ANN run (``seenn train --ann``) into an SNN run directory with ``timesteps`` max timesteps.
    With ``bias_correction`` (a number of steps), the biases are then corrected (:mod:`seenn.bias_correction`) on
    ``calibration_samples`` images drawn (``seed``) from the run's training split, never its validation split;
    with ``potential_correction`` also each neuron's initial potentials, per channel. Returns the new run's config."""
    from pathlib import Path

    from . import __version__
    from .checkpoint import METRICS, load_run, read_json, resolve_run, save_run

    from .schema import bounded

    bounded("timesteps", timesteps, "--timesteps")
    src = resolve_run(ann_run)
    ann, config = load_run(src)
    if config.get("kind") != "ann":
        raise ConversionError(f"{ann_run} is a spiking run, not an ANN (train one with seenn train --ann)")
    if bias_correction is not None:
        bounded("timesteps", bias_correction, "--bias-correction")
        bounded("samples", calibration_samples, "--calibration-samples")
        if bias_correction > timesteps:
            raise ConversionError(f"--bias-correction {bias_correction} is more than the run's {timesteps} timesteps")
    elif potential_correction:
        raise ConversionError("--potential-correction goes with --bias-correction STEPS (the steps it fits)")
    m = config["model"]
    snn, model_cfg = convert(ann, input_shape=(m["in_channels"], m["image_size"], m["image_size"]))
    corrected = None
    if bias_correction is not None:
        from .bias_correction import correct_biases

        images = calibration_images(config, calibration_samples, data_dir, seed)
        corrected = correct_biases(ann, snn, model_cfg, images, bias_correction, potential=potential_correction)
        corrected.update(split="train", seed=seed)
    ann_metrics = read_json(src / METRICS) if (src / METRICS).is_file() else {}
    thresholds = [s["threshold"] for s in model_cfg["layers"] if s["type"] == "neuron"]
    out = {"seenn_version": __version__, "dataset": config["dataset"], "max_timesteps": timesteps,
           "model": model_cfg, "training": config.get("training", {}),
           "converted_from": {"run": Path(src).name, "model": m, "neuron": "IF, reset by subtraction, v0 = theta/2"
                              + (", then corrected per channel" if potential_correction else ""),
                              "thresholds": thresholds,
                              "clip_values": [q.threshold.item() for q in ann.modules() if isinstance(q, QCFS)]}}
    if corrected is not None:
        out["converted_from"]["bias_correction"] = corrected
    if "data" in config:  # a prefixed dataset's recorded pipeline travels with the run
        out["data"] = config["data"]
    save_run(Path(out_dir), snn, out, {"ann_val_accuracy": ann_metrics.get("best_val_accuracy")})
    return out


def input_layer(record: dict) -> nn.Conv2d:
    """The user's input scaling as a first layer: a per-channel affine map (a depthwise 1x1 convolution) from
    seenn's normalised input to the ``(x / 255 - mean) / std`` the ANN was trained on (``record`` as
    :func:`seenn.interop.load.input_record` makes it); the converter treats it as any convolution of the stem."""
    m, s = torch.tensor(record["data_mean"]), torch.tensor(record["data_std"])
    pm, ps = torch.tensor(record["mean"]), torch.tensor(record["std"])
    conv = nn.Conv2d(len(m), len(m), 1, groups=len(m))
    with torch.no_grad():
        conv.weight.copy_((s / ps).view(-1, 1, 1, 1))
        conv.bias.copy_((m - pm) / ps)
    return conv


def convert_file(source, out_dir, *, dataset: str, factory: str = "build", weights=None, timesteps: int = 64,
                 input: dict | None = None, calibration_samples: int = 256, percentile: float = 99.9,
                 bias_correction: int | None = None, potential_correction: bool = False, data_dir=None,
                 seed: int = 0, val_size: int = 5000) -> dict:
    """Convert a user's own ANN into an SNN run directory: ``factory()`` from the Python file ``source`` (run once,
    here, because the user asked: the SNN run holds only seenn layers and never runs the file), ``weights`` from
    safetensors or a ``weights_only`` state dict, the layers found by tracing its forward (never by attribute
    names). ``input``: the input it was trained on (default seenn's normalised images of ``dataset``); ReLU
    thresholds (and ``bias_correction``) from ``calibration_samples`` training images of ``dataset``. Returns the
    new run's config."""
    from pathlib import Path

    from . import __version__
    from .checkpoint import save_run
    from .data import dataset_info
    from .interop.load import build_from_file, input_record, read_weights
    from .interop.trust import file_digest
    from .schema import bounded

    bounded("timesteps", timesteps, "--timesteps")
    bounded("samples", calibration_samples, "--calibration-samples")
    info = dataset_info(dataset)
    record = input or input_record("normalized", info)
    ann, _ = build_from_file(source, factory)
    if weights is not None:
        state = read_weights(weights)
        own = ann.state_dict()
        for k, v in state.items():
            if k in own and own[k].is_floating_point() and not v.is_floating_point():
                raise ConversionError(f"{weights}: {k} is stored as {str(v.dtype).replace('torch.', '')}: save "
                                      "float weights")
        try:
            ann.load_state_dict(state)
        except RuntimeError as e:
            lines = str(e).splitlines()
            raise ConversionError(f"{weights} does not fit the network {factory}() builds: "
                                  f"{lines[1].strip() if len(lines) > 1 else e}") from None
    if record["scale"] != "normalized":
        ann = nn.Sequential(input_layer(record), ann)
    config = {"dataset": dataset, "training": {"val_size": val_size}}
    images = calibration_images(config, calibration_samples, data_dir, seed)
    snn, model_cfg = convert(ann, input_shape=(info.channels, info.image_size, info.image_size),
                             calibration=images, percentile=percentile)
    corrected = None
    if bias_correction is not None:
        bounded("timesteps", bias_correction, "--bias-correction")
        if bias_correction > timesteps:
            raise ConversionError(f"--bias-correction {bias_correction} is more than the run's {timesteps} timesteps")
        from .bias_correction import correct_biases

        corrected = correct_biases(ann, snn, model_cfg, images, bias_correction, potential=potential_correction)
        corrected.update(split="train", seed=seed)
    elif potential_correction:
        raise ConversionError("--potential-correction goes with --bias-correction STEPS (the steps it fits)")
    source = Path(source).resolve()
    out = {"seenn_version": __version__, "dataset": dataset, "max_timesteps": timesteps, "model": model_cfg,
           "training": {"val_size": val_size},
           "converted_from": {"source": str(source), "sha256": file_digest(source), "factory": factory,
                              "weights": str(Path(weights).resolve()) if weights is not None else None,
                              "input": record, "calibration_samples": calibration_samples, "percentile": percentile,
                              "neuron": "IF, reset by subtraction, v0 = theta/2",
                              "thresholds": [s["threshold"] for s in model_cfg["layers"] if s["type"] == "neuron"]}}
    if corrected is not None:
        out["converted_from"]["bias_correction"] = corrected
    from .sources import record_pipeline

    record_pipeline(out, info)  # an imagefolder: dataset's pipeline travels with the run
    save_run(Path(out_dir), snn, out)
    return out


def calibration_images(config: dict, samples: int, data_dir, seed: int) -> torch.Tensor:
    """``samples`` normalised images drawn at random from the run's training split (its validation split held out
    as at training)."""
    from .data import load_dataset

    data = load_dataset(config["dataset"], "train", data_dir=data_dir,
                        val_size=config.get("training", {}).get("val_size", 5000))
    if getattr(data, "time_varying", False):
        raise ConversionError("bias correction reads still images; this run's dataset is an event stream")
    pick = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))[:samples]
    return data.normalize(data.images[pick])
