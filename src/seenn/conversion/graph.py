"""Reading an ANN: its ``torch.fx`` trace as a list of operations (``read_graph``), batch norms folded, and the
activations recorded on calibration inputs (``_record``); ``replace_maxpool``."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.base import SpikingNetwork
from ..nn.fold import FastAvgPool2d, fold_bn
from ..nn.qcfs import QCFS

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

    return _SeennANN(ann) if isinstance(ann, SpikingNetwork) else ann


def _tracer():
    import torch.fx as fx


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
