"""Which layers read spikes: a ``torch.fx`` trace of a network's body, with neurons, pools, gains and sums as leaves,
gives each convolution the grid its input lies on (``step`` times an integer count in [0, count])."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ...models.graph import Add
from ...models.sequential import Scale, SumPool2d
from ...nn.neuron import SpikingNeuron

MAX_COUNT = 128  # the largest input count an int8 layer takes (see the package docstring)


def pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _grid_of_pool(m: nn.Module, grid):
    """The grid after an average pool: a window of k values on ``(step, count)`` gives ``(step / k, count * k)``
    sums; windows that may be cut short (ceil mode, padding left out of the divisor) are not on one grid."""
    if getattr(m, "ceil_mode", False) or getattr(m, "divisor_override", None) is not None:
        return None
    if any(pair(m.padding)) and not m.count_include_pad:
        return None
    k = pair(m.kernel_size)
    n = k[0] * k[1]
    if isinstance(m, SumPool2d):  # NIR's sum pooling: the sum itself, on the same step
        return (grid[0], grid[1] * n)
    return (grid[0] / n, grid[1] * n)


def spike_grids(body: nn.Module) -> dict[str, tuple[float, int]]:
    """``{qualified name: (step, count)}`` of every convolution in ``body`` whose input is known to be ``step``
    times an integer in [0, count]: read from a spiking neuron through pools, flattening, gains and sums only.
    A layer called from several places is listed only if every call has the same grid. Empty if the body does not
    trace (a network built some other way simply stays in fp32)."""
    from torch import fx

    def is_neuron(m):
        return isinstance(m, SpikingNeuron) or type(m).__name__ == "CubaLIF"  # CubaLIF spikes are 0 / 1 too

    leaves = (SpikingNeuron, nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d, Scale, Add, nn.Flatten,
              nn.Identity, nn.Dropout, nn.BatchNorm2d, nn.BatchNorm1d)

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, leaves) or is_neuron(m) or type(m).__module__.startswith("seenn.models.stateful") \
                or super().is_leaf_module(m, name)

    try:
        graph = _Tracer().trace(body)
    except Exception:  # noqa: BLE001 - data-dependent Python in a body: no structure to read, stay fp32
        return {}
    mods = dict(body.named_modules())
    grid: dict = {}
    found: dict[str, object] = {}
    passthrough_fns = {torch.flatten, torch.reshape, F.dropout}
    for node in graph.nodes:
        ins = [a for a in node.args if isinstance(a, fx.Node)]
        g0 = grid.get(ins[0]) if ins else None
        out = None
        if node.op == "call_module":
            m = mods[node.target]
            if is_neuron(m):
                out = (1.0, 1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if isinstance(m, nn.Conv2d):
                    prev = found.get(node.target, "unset")
                    found[node.target] = g0 if prev == "unset" or prev == g0 else None
            elif isinstance(m, nn.AvgPool2d) and g0 is not None:
                out = _grid_of_pool(m, g0)
            elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
                out = g0
            elif isinstance(m, Scale) and g0 is not None and m.factor > 0:
                out = (g0[0] * m.factor, g0[1])
            elif isinstance(m, Add) and ins and all(grid.get(a) is not None for a in ins):
                steps = {grid[a][0] for a in ins}
                if len(steps) == 1 and len(ins) == len(node.args):
                    out = (steps.pop(), sum(grid[a][1] for a in ins))
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(ins) == 2 \
                and len(node.args) == 2 and not node.kwargs and all(grid.get(a) is not None for a in ins) \
                and grid[ins[0]][0] == grid[ins[1]][0]:
            out = (grid[ins[0]][0], grid[ins[0]][1] + grid[ins[1]][1])
        elif node.op == "call_function" and node.target in passthrough_fns:
            out = g0
        elif node.op == "call_method" and node.target in ("view", "reshape", "flatten", "contiguous"):
            out = g0
        if out is not None and out[1] <= MAX_COUNT and out[0] > 0 and math.isfinite(out[0]):
            grid[node] = out
    return {name: g for name, g in found.items() if g is not None}

