"""Bias correction for converted SNNs: the light calibration of Li et al. (ICML 2021, "A free lunch from ANN").

A converted IF neuron's firing rate over the first few steps falls short of the ANN activation it stands for: the
neurons before it have not settled yet, and the error grows with depth. That is where early exit decides, so the
shortfall costs timesteps. The correction measures it on calibration inputs and moves it into the biases, layer by
layer in execution order:

    for each neuron layer (after the corrections before it are in place):
        shift[c] = mean ANN activation of channel c  -  mean of theta * spikes over steps 1..S
        bias[c] of the conv / linear layer that feeds the neuron += shift[c]

A neuron that reads a residual sum gets the shift in the bias of the sum's convolutional branch (its first
weighted term). A neuron that reads no weighted layer (a sum of spike streams only, or a sign flip) keeps its input
and is counted as skipped. ``S`` trades early steps against late ones: the shift is what steps 1..S lacked on
average, so much larger ``T`` fire slightly above the ANN (measured in docs/benchmarks.md).

With ``potential=True`` (``seenn convert --potential-correction``) the error is split in two, as in the potential
correction of the same paper: a neuron's cumulative output over steps 1..S is fitted per channel as
``C_t = t * rate + offset``; the rate's error goes into the bias as above, and the offset, a count of spikes that
comes early or late once and for all (a bias cannot remove it without over-correcting every later step), into the
neuron's initial membrane potential, one per channel: ``v_init[c] = 1/2 - offset[c] / theta``, clipped to
[0, 1]. That is what the first steps need, and the later ones keep their accuracy (docs/benchmarks.md). Neurons
without a feeding bias get the potential alone.

Entry point: :func:`correct_biases`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.neuron import SpikingNeuron
from .graph import ConversionError, _record, read_graph


class _Stop(Exception):
    """Raised by the measuring hook: the layers after the measured one are not needed."""


def feeders(specs: list[dict]) -> dict[int, int | None]:
    """For each neuron (its index in ``specs``): the weighted layer whose bias is its input current's, or None."""
    out: dict[int, int | None] = {}
    for i, spec in enumerate(specs):
        if spec["type"] != "neuron":
            continue
        j = spec.get("inputs", [i - 1])[0]
        while j >= 0 and specs[j]["type"] == "add":
            terms = [k for k in specs[j]["inputs"] if k >= 0 and specs[k]["type"] in ("conv2d", "linear", "add")]
            weighted = [k for k in terms if specs[k]["type"] != "add"]
            j = weighted[0] if weighted else (terms[0] if terms else -1)
        out[i] = j if j >= 0 and specs[j]["type"] in ("conv2d", "linear") else None
    return out


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    return t.double().mean(dim=(0, *range(2, t.dim())))


def activation_layers(ann: nn.Module, input_shape) -> list[tuple[str, float]]:
    """The ANN's activations in execution order (each becomes one neuron layer of the SNN), with the sign of the
    amplitude its neuron carries (-1 for a QCFS clip value trained below zero)."""
    was_training = ann.training
    ann.eval()
    try:
        ops = read_graph(ann, input_shape)
    finally:
        ann.train(was_training)
    return [(op["name"], -1.0 if op["act"] != "relu" and op["clip"] < 0 else 1.0) for op in ops if op["kind"] == "act"]


def activation_means(ann: nn.Module, names: list[str], calibration, input_shape) -> dict[str, torch.Tensor]:
    """Each named activation's mean per channel (float64) on the calibration inputs, the ANN in eval mode."""
    was_training = ann.training
    ann.eval()
    try:
        seen = _record(ann, set(names), calibration, input_shape, _channel_mean)
    finally:
        ann.train(was_training)
    return {n: seen[n][0] for n in names}


@torch.no_grad()
def _step_rates(snn, neuron: nn.Module, calibration: torch.Tensor, steps: int, batch_size: int) -> torch.Tensor:
    """Mean spikes per channel of ``neuron`` at each of steps 1..``steps`` over the calibration inputs
    (float64, ``[steps, C]``)."""
    total, t = 0.0, 0

    def hook(module, inputs, output):
        nonlocal total, t
        row = torch.zeros(steps, output.shape[1], dtype=torch.float64)
        row[t % steps] = _channel_mean(output) * len(output)
        total, t = total + row, t + 1
        raise _Stop

    handle = neuron.register_forward_hook(hook)
    try:
        for start in range(0, len(calibration), batch_size):
            snn.reset()
            encoded = snn.encode(calibration[start:start + batch_size])
            for _ in range(steps):
                try:
                    snn.step(encoded)
                except _Stop:
                    pass
    finally:
        handle.remove()
        snn.reset()
    return total / len(calibration)


def _fit(cumulative: torch.Tensor):
    """Least-squares ``C_t = t * rate + offset`` per channel of cumulative outputs ``[S, C]`` (S >= 2)."""
    t = torch.arange(1, len(cumulative) + 1, dtype=cumulative.dtype).view(-1, 1)
    tc, cc = t - t.mean(), cumulative - cumulative.mean(0)
    rate = (tc * cc).sum(0) / (tc * tc).sum()
    return rate, cumulative.mean(0) - rate * t.mean()


@torch.no_grad()
def correct_biases(ann: nn.Module, snn, model_cfg: dict, calibration: torch.Tensor, steps: int, *,
                   batch_size: int = 128, potential: bool = False) -> dict:
    """Correct the biases of ``snn`` (converted from ``ann`` by :func:`seenn.conversion.convert`, with its
    ``model_cfg``) so that each neuron's mean output over steps 1..``steps`` on ``calibration`` matches the ANN
    activation it replaces; with ``potential``, the fitted rate's error only, the offset going into per-channel
    initial potentials (module docstring). Changes ``snn`` in place (and ``model_cfg``: biases a feeding layer
    lacked, neurons given per-channel potentials). Returns what was done: the steps, the samples, the layers
    corrected and skipped, each shift's mean size relative to the neuron's threshold (and each offset's)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConversionError(f"bias correction needs at least 1 step, got {steps!r}")
    if potential and steps < 2:
        raise ConversionError("potential correction fits a rate and an offset: it needs at least 2 steps")
    if calibration.dim() != 4 or len(calibration) == 0:
        raise ConversionError(f"bias correction needs a batch of calibration images [N, C, H, W], got "
                              f"{list(calibration.shape)}")
    if not torch.isfinite(calibration).all():
        raise ConversionError("the calibration images hold NaN or infinite values")
    specs = model_cfg["layers"]
    input_shape = tuple(calibration.shape[1:])
    acts = activation_layers(ann, input_shape)
    neurons = [i for i, s in enumerate(specs) if s["type"] == "neuron"]
    if len(acts) != len(neurons):
        raise ConversionError(f"the SNN has {len(neurons)} neuron layers but the ANN {len(acts)} activations: "
                              "it was not converted from this ANN")
    targets = activation_means(ann, [name for name, _ in acts], calibration, input_shape)
    chain = model_cfg["name"] == "sequential"
    mods = list(snn.stem) + (list(snn.body) if chain else list(snn.body.layers))
    if len(mods) != len(specs) or any(not isinstance(mods[i], SpikingNeuron) for i in neurons):
        raise ConversionError("the SNN's layers do not match its config")
    was_training = snn.training
    snn.eval()
    feed = feeders(specs)
    shifts, offsets, skipped = [], [], 0
    try:
        for k, (name, sign) in zip(neurons, acts):
            f = feed[k]
            theta = float(specs[k]["threshold"])
            want = sign * targets[name]  # a negative clip value: the neuron fires for the negated activation
            if f is None and not potential:
                skipped += 1
                continue
            out = theta * _step_rates(snn, mods[k], calibration, steps, batch_size)  # [S, C]
            if potential:
                rate, offset = _fit(out.cumsum(0))
                nrn = mods[k]
                start = (nrn.v_init - offset / theta).clamp(0.0, 1.0).to(nrn.threshold.dtype)
                nrn.v_init_map = start  # a registered (None) buffer: set, it is saved with the weights
                specs[k]["v_init_channels"] = len(start)
                offsets.append((offset.abs().mean() / theta).item())
            else:
                rate = out.mean(0)
            if f is None:
                skipped += 1
                continue
            layer = mods[f]
            if layer.bias is None:  # a layer without a bias gets a zero one to correct
                out = layer.weight.shape[0]
                layer.bias = nn.Parameter(torch.zeros(out, dtype=layer.weight.dtype))
                specs[f]["bias"] = True
            shift = want - rate
            layer.bias += shift.to(layer.bias.dtype)
            shifts.append((shift.abs().mean() / theta).item())
    finally:
        snn.reset()
        snn.train(was_training)
    done = {"method": "bias correction (Li et al. 2021): per-channel mean ANN activation minus the SNN's mean "
                      "output over the first steps, added to the feeding layer's bias, layer by layer",
            "steps": steps, "samples": len(calibration), "layers": len(shifts), "skipped": skipped,
            "mean_shift_over_threshold": shifts}
    if potential:
        done["method"] = ("bias and potential correction (Li et al. 2021): per channel, the cumulative output over "
                          "the first steps fitted as t * rate + offset; the rate's error moved into the feeding "
                          "layer's bias, the offset into the initial membrane potential, layer by layer")
        done["potential"] = True
        done["mean_offset_over_threshold"] = offsets
    return done
