"""Synaptic operations and energy per sample, counted from the spikes of real runs.

- The stem (the layers before the first neuron) sees the analog image: its convolution costs multiply-accumulates
  (MACs). With direct encoding the image is the same at every step, and seenn computes the stem once per input,
  so its MACs are paid once, not T times.
- Every later synaptic layer (Conv2d, Linear) sees spikes (or average-pooled spikes, which a chip folds into the
  weights): each nonzero input costs one accumulate (AC) per synapse it reaches (its fan-out, counted exactly at
  the borders with a ones-kernel convolution of the nonzero mask), plus one AC per output for the bias.
- Energy = MACs x pJ/MAC + ACs x pJ/AC (defaults 4.6 pJ and 0.9 pJ, 45 nm CMOS, Horowitz 2014).
- The equivalent ANN runs every layer once with MACs.
- A network without a stem of its own (another framework's, ``seenn adapt``): the first synaptic layer a step
  calls reads the analog image and is priced as the stem (MACs once; with frames, accumulates per event), as a
  chip would run it, although the peer's own forward recomputes it every step.

Event streams (frames ``[B, T, 2, H, W]`` of event counts) have no analog image: the first layer is driven by
the sensor's events, each costing one accumulate per synapse it reaches (an event count of 3 costs three), at
every step the sample runs; any further stem layer before the first neuron pays its MACs every step.

Counts are taken per sample and per step in one full-T pass; a sample that exits at step t is charged for steps
1..t (the runner computes exactly those steps, and the tests hold the runner to the full pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import SpikingNetwork
from ..nn.fold import fold_batchnorm
from ..nn.neuron import SpikingNeuron

PJ_PER_AC = 0.9
PJ_PER_MAC = 4.6


def conv_macs(conv: nn.Conv2d, in_shape) -> int:
    """MACs of one dense pass of ``conv`` on one sample of shape ``[C, H, W]`` (bias adds not counted)."""
    c, h, w = in_shape
    kh, kw = conv.kernel_size
    ho = (h + 2 * conv.padding[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
    wo = (w + 2 * conv.padding[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
    return conv.out_channels * ho * wo * (c // conv.groups) * kh * kw


def _event_acs(layer: nn.Module, inp: torch.Tensor, counts: bool = False) -> torch.Tensor:
    """Per-row accumulates caused by the nonzero entries of ``inp`` (plus bias adds); ``counts``: each entry is a
    number of events, each an accumulate per synapse."""
    nz = inp.to(torch.float32) if counts else (inp != 0).to(torch.float32)
    if isinstance(layer, nn.Conv2d):
        ones = torch.ones(1, layer.in_channels // layer.groups, *layer.kernel_size, dtype=torch.float32,
                          device=inp.device)
        if layer.groups != 1:
            raise NotImplementedError("grouped convolutions are not counted")
        reach = F.conv2d(nz, ones, stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
        acs = reach.flatten(1).sum(1) * layer.out_channels
        if layer.bias is not None:
            acs = acs + reach[0].numel() * layer.out_channels
        return acs
    acs = nz.flatten(1).sum(1) * layer.out_features
    if layer.bias is not None:
        acs = acs + layer.out_features
    return acs


@dataclass
class EnergyCounts:
    stem_macs: int  # per sample, once
    ann_macs: int  # the equivalent ANN, per sample
    step_acs: torch.Tensor  # [N, T] accumulates of each sample at each step
    layer_names: list[str]
    layer_acs: torch.Tensor  # [L, T] summed over samples
    spike_rates: dict[str, list[float]]  # neuron layer -> mean spike rate per step
    step_macs: int = 0  # per sample and step: a time-varying input's stem layers after the event-driven first one


@torch.inference_mode()
def count_operations(model: SpikingNetwork, data, max_timesteps: int, batch_size: int = 250) -> EnergyCounts:
    model = fold_batchnorm(model)
    x0 = data.normalize(data.images[:1])
    frames = x0.dim() == 5  # a time-varying input: the stem runs every step, its first layer on events
    if frames:
        x0 = x0[:, 0]
    stem_macs, ann_macs, step_macs = 0, 0, 0
    shapes = {}

    order = []  # synaptic layers in the order a step calls them

    def shape_hook(mod, inp, out):
        shapes[mod] = tuple(inp[0].shape[1:])
        order.append(mod)

    syn = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    stem_ids = {id(m) for m in model.stem.modules()}
    hooks = [m.register_forward_hook(shape_hook) for _, m in syn]
    model.reset()
    with torch.no_grad():
        model.step(model.encode(x0))
    model.reset()
    for h in hooks:
        h.remove()
    if order and not any(id(m) in stem_ids for _, m in syn):
        # a network with no stem of its own (another framework's, seenn adapt): the first layer a step calls reads
        # the analog input, a stem layer (MACs once for a static image; event-driven with frames)
        stem_ids.add(id(order[0]))
    stem_syn = [m for _, m in syn if id(m) in stem_ids]
    for _, m in syn:
        macs = conv_macs(m, shapes[m]) if isinstance(m, nn.Conv2d) else m.in_features * m.out_features
        ann_macs += macs
        if id(m) in stem_ids:
            if not frames:
                stem_macs += macs
            elif m is not stem_syn[0]:
                step_macs += macs
    # layers counted in accumulates per step: the body's (spikes), and with frames the first one (events)
    body_syn = [(n, m) for n, m in syn if id(m) not in stem_ids or (frames and m is stem_syn[0])]
    first = stem_syn[0] if frames and stem_syn else None
    neurons = [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]

    per_sample, per_layer = [], torch.zeros(len(body_syn), max_timesteps, dtype=torch.float64)
    rates = {n: torch.zeros(max_timesteps, dtype=torch.float64) for n, _ in neurons}
    total = 0
    step = {"t": 0}
    for x, _ in data.batches(batch_size):
        b = len(x)
        acs = torch.zeros(b, max_timesteps, dtype=torch.float64)
        hooks = []
        for li, (_, m) in enumerate(body_syn):
            def hook(mod, inp, out, li=li):
                a = _event_acs(mod, inp[0], counts=mod is first).double()
                acs[:, step["t"]] += a
                per_layer[li, step["t"]] += a.sum()
            hooks.append(m.register_forward_hook(hook))
        for name, m in neurons:
            def nhook(mod, inp, out, name=name):
                rates[name][step["t"]] += out.double().flatten(1).mean(1).sum()
            hooks.append(m.register_forward_hook(nhook))
        try:  # step by step, as the runner runs it
            model.reset()
            e = None if frames else model.encode(x)
            for t in range(max_timesteps):
                step["t"] = t
                model.step(model.encode(x[:, t]) if frames else e)
        finally:
            model.reset()
            for h in hooks:
                h.remove()
        per_sample.append(acs)
        total += b
    return EnergyCounts(stem_macs, ann_macs, torch.cat(per_sample), [n for n, _ in body_syn], per_layer,
                        {n: (r / total).tolist() for n, r in rates.items()}, step_macs)


def energy_report(counts: EnergyCounts, exit_timestep: torch.Tensor, *, pj_per_ac: float = PJ_PER_AC,
                  pj_per_mac: float = PJ_PER_MAC) -> dict:
    """Per-sample averages for early exit (steps 1..exit), full T and the equivalent ANN."""
    for name, v in (("pJ per AC", pj_per_ac), ("pJ per MAC", pj_per_mac)):
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a non-negative number, got {v}")
    n, t_max = counts.step_acs.shape
    steps = torch.arange(1, t_max + 1)
    ran = (steps[None, :] <= exit_timestep[:, None]).double()
    early_acs = (counts.step_acs * ran).sum(1).mean().item()
    full_acs = counts.step_acs.sum(1).mean().item()

    def entry(macs, acs):
        return {"macs": macs, "acs": acs, "energy_uj": (macs * pj_per_mac + acs * pj_per_ac) * 1e-6}

    early = entry(counts.stem_macs + counts.step_macs * exit_timestep.double().mean().item(), early_acs)
    full = entry(counts.stem_macs + counts.step_macs * t_max, full_acs)
    ann = entry(counts.ann_macs, 0.0)
    return {
        "pj_per_ac": pj_per_ac, "pj_per_mac": pj_per_mac, "samples": n, "max_timesteps": t_max,
        "avg_timesteps": exit_timestep.double().mean().item(),
        "per_sample": {"early_exit": early, "full": full, "ann": ann},
        "early_exit_vs_full": early["energy_uj"] / full["energy_uj"] if full["energy_uj"] else None,
        "early_exit_vs_ann": early["energy_uj"] / ann["energy_uj"] if ann["energy_uj"] else None,
        "layers": [{"name": name, "acs_per_sample_per_step": (counts.layer_acs[i] / n).tolist()}
                   for i, name in enumerate(counts.layer_names)],
        "spike_rates": counts.spike_rates,
    }
