"""The SNN an ANN's operations become (``convert``): IF neurons, amplitudes carried into the next layer's weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models import build_model, check_model_size
from .graph import ConversionError, _fold_bns, _record, _users, read_graph


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
