"""Rewrites of an exported NIR graph for a peer's importer that reads only part of NIR (``seenn export --for``).

Each rewrite gives the same network in NIR's semantics, only in node types and parameters the peer maps:

- ``unit_gain``: every LIF node gets ``r = 1``. A LIF with ``v_leak = v_reset = 0`` fed ``r I`` spikes exactly
  when one fed ``I`` crosses ``v_threshold / r`` (its membrane is the other's divided by ``r``), so the threshold
  is divided by ``r`` instead of the weights multiplied: no node is added and the graph keeps its shape.
- ``pools_as_convs``: every AvgPool2d becomes a Conv2d that averages each channel over the pool's window (a
  [C, C, kh, kw] weight of ``1 / (kh kw)`` on the diagonal, zeros elsewhere, which add exactly nothing), same stride
  and padding, no bias.

``for_peer(graph, "norse", shapes)`` applies both for Norse 1.1's ``norse.torch.from_nir``: it ignores a LIF's ``r``
(it assumes 1, with a warning) and maps no AvgPool2d (the node is dropped and loading fails with a KeyError). Its
IAF cell adds the input to the membrane whatever ``r`` and dt are, which is NIR's IF with ``r dt = 1``, what seenn
writes, so IF nodes stay as they are. Its executor (nirtorch 2.6) runs the nodes in depth-first order from the
input, so in a residual block whose shortcut has a layer of its own the sum would read that layer one step late;
such graphs are refused (an identity shortcut runs in the right order).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import ConfigError

PEERS = ("nir", "norse", "snntorch", "spikingjelly")
# the dt each peer's importer assumes unless told otherwise (Norse: the default of from_nir's dt argument)
PEER_DT = {"nir": 1.0, "norse": 1e-3, "snntorch": 1e-4, "spikingjelly": 1e-4}


def unit_gain(graph):
    """``graph`` with ``r = 1`` on every LIF node and its threshold divided by the old ``r``."""
    nir = __import__("nir")
    nodes = dict(graph.nodes)
    for key, node in graph.nodes.items():
        if not isinstance(node, nir.LIF):
            continue
        r = np.asarray(node.r, np.float32)
        for what in ("v_leak", "v_reset"):
            v = getattr(node, what, None)
            if v is not None and np.any(np.asarray(v) != 0):
                raise ConfigError(f"node {key!r}: a nonzero {what} does not scale with the threshold")
        nodes[key] = nir.LIF(tau=node.tau, r=np.ones_like(r), v_leak=np.zeros_like(r),
                             v_threshold=(np.asarray(node.v_threshold, np.float32) / r).astype(np.float32),
                             v_reset=np.zeros_like(r))
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata))


def pools_as_convs(graph, shapes: dict[str, tuple]):
    """``graph`` with every AvgPool2d node as a channel-wise averaging Conv2d; ``shapes[key]``: its [C, H, W] input."""
    nir = __import__("nir")
    pair = lambda v: np.broadcast_to(np.asarray(v), (2,)).astype(int).copy()  # noqa: E731
    nodes = dict(graph.nodes)
    for key, node in graph.nodes.items():
        if not isinstance(node, nir.AvgPool2d):
            continue
        c, h, w = shapes[key]
        kh, kw = pair(node.kernel_size)
        weight = np.zeros((c, c, kh, kw), np.float32)
        weight[np.arange(c), np.arange(c)] = np.float32(1.0 / (kh * kw))
        nodes[key] = nir.Conv2d(input_shape=np.array((h, w)), weight=weight, stride=pair(node.stride),
                                padding=pair(node.padding), dilation=np.array((1, 1)), groups=1,
                                bias=np.zeros(c, np.float32))
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata))


def _refuse_late_branches(nir, graph, peer: str) -> None:
    """Refuse a node that sums a branch of its own (a shortcut layer) besides the main chain. Depth first from the
    input, the main chain (the first edge out of a block's input, as seenn writes) runs to the sum before the
    shortcut layer is reached; an identity shortcut is the block's input itself, already computed."""
    sources: dict[str, list[str]] = {}
    for src, dst in graph.edges:
        sources.setdefault(dst, []).append(src)
    for dst, srcs in sources.items():
        late = [s for s in srcs[1:] if not isinstance(graph.nodes[s], (nir.LIF, nir.IF, nir.Input))]
        if late:
            raise ConfigError(f"{peer}'s importer runs a graph depth first, so node {dst!r} would read its shortcut "
                              f"layer {late[0]!r} one step late; for {peer} export chains or identity shortcuts only")


def for_peer(graph, peer: str, shapes: dict[str, tuple]):
    """``graph`` in the form ``peer``'s importer reads (unchanged for ``nir``, ``snntorch``, ``spikingjelly``)."""
    if peer not in PEERS:
        raise ConfigError(f"unknown peer {peer!r}; choose one of {', '.join(PEERS)}")
    if peer != "norse":
        return graph
    nir = __import__("nir")
    _refuse_late_branches(nir, graph, peer)
    graph = unit_gain(pools_as_convs(graph, shapes))
    graph.metadata["written_for"] = peer
    return graph


def snntorch_for_export(net, example):
    """A copy of an snnTorch network that snnTorch 1.0's own ``export_to_nir`` writes as a valid NIR graph for
    seenn to import (``seenn import``): every ``Leaky``'s ``beta`` and ``threshold`` as per-neuron tensors of its
    output shape (its exporter writes them as stored, and ``nir.LIF`` wants every parameter of one shape). Export
    the copy with ``export_to_nir(copy, example, ignore_dims=[0])`` (without ``ignore_dims`` the batch enters the
    graph's types). Only ``reset_mechanism="zero"`` is exported faithfully (the exporter writes ``v_reset = 0``
    whatever the reset), so other resets are refused. The network given is not changed.

    What NIR cannot carry: snnTorch applies a reset to zero one step *late* (the step after a spike it adds that
    step's input, then clears the whole membrane), where NIR and seenn clear it at the spike and keep the next
    input. The imported network therefore follows snnTorch exactly only where the step after each spike does not
    matter: a sparsely firing network matches spike for spike (tested), one that fires often drifts."""
    try:
        import snntorch as snn
        from snntorch import utils
    except ImportError:
        raise ConfigError("snntorch_for_export needs snnTorch: pip install snntorch") from None
    net = copy.deepcopy(net)
    leaky = [m for m in net.modules() if isinstance(m, snn.Leaky)]
    for m in leaky:
        if m.reset_mechanism != "zero":
            raise ConfigError(f"a Leaky neuron resets by {m.reset_mechanism!r}; snnTorch's exporter writes a reset to "
                              "zero whatever the neuron does, so only reset_mechanism='zero' exports faithfully")
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: shapes.__setitem__(
        mod, tuple((o[0] if isinstance(o, tuple) else o).shape[1:]))) for m in leaky]
    try:
        utils.reset(net)
        with torch.no_grad():
            net(example)
        utils.reset(net)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for m in leaky:
            for name in ("beta", "threshold"):
                value = getattr(m, name)
                full = torch.as_tensor(value, dtype=torch.float32).expand(shapes[m]).clone()
                setattr(m, name, torch.nn.Parameter(full) if isinstance(value, torch.nn.Parameter) else full)
    return net
