"""NIR written by the peers' own exporters, read by ``seenn import``: the imported network gives the peer's own
output spikes, step for step and spike for spike. Each peer's exporter bug is worked around here and named in the
README ("NIR both ways")."""

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from seenn.interop.nir import import_nir  # noqa: E402

T = 8
CG1, LG1, CG2, LG2, CG3, LG3 = 2.0, 8.0, 4.0, 8.0, 32.0, 64.0  # conv / linear gains per peer: rates 0.2-0.3


def _weights(net: torch.nn.Module, conv_gain: float, linear_gain: float) -> torch.nn.Module:
    """Weights that keep both layers' neurons off saturation, so a wrong gain or decay changes the spikes."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.uniform_(m.weight, -1.0, 1.0)
            gain = conv_gain if isinstance(m, torch.nn.Conv2d) else linear_gain
            m.weight.data.mul_(gain / m.weight[0].numel() ** 0.5)
            if m.bias is not None:
                m.bias.data.zero_()
    return net.eval()


def _inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 28, 28, generator=g) * 2


def _seenn_run(graph_or_path, tmp_path, dt: float) -> torch.Tensor:
    path = tmp_path / "peer.nir"
    if not isinstance(graph_or_path, type(path)):
        nir.write(str(path), graph_or_path)
    else:
        path = graph_or_path
    model, config = import_nir(path, dataset="fashion-mnist", dt=dt, max_timesteps=T)
    assert config["max_timesteps"] == T
    with torch.no_grad():
        return model(_inputs(), T)


def _check(own: torch.Tensor, ours: torch.Tensor) -> None:
    assert own.shape == ours.shape == (T, 8, 10)
    assert own.sum() > 20 and (own.sum(0) > 0).any(1).float().mean() > 0.5  # the output neurons do spike
    assert torch.equal(ours, own)


def test_spikingjelly_export_imports_spike_for_spike(tmp_path):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    net = _weights(torch.nn.Sequential(
        layer.Conv2d(1, 4, 5, stride=4, padding=2), neuron.LIFNode(tau=2.0, decay_input=False),
        layer.AvgPool2d(7), layer.Flatten(), layer.Linear(4, 10), neuron.LIFNode(tau=2.0, decay_input=False)), CG1, LG1)
    functional.set_step_mode(net, "m")
    functional.reset_net(net)
    with torch.no_grad():
        own = net(_inputs().unsqueeze(0).repeat(T, 1, 1, 1, 1))
    functional.reset_net(net)
    path = tmp_path / "sj.nir"
    export_to_nir(net, torch.zeros(T, 1, 1, 28, 28), save_path=path)  # its dt: 1e-4
    _check(own, _seenn_run(path, tmp_path, 1e-4))


def test_snntorch_export_imports_spike_for_spike(tmp_path):
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    from seenn.errors import ConfigError
    from seenn.interop.nir_compat import snntorch_for_export

    # the user's network as written: scalar beta and threshold (snntorch_for_export makes them per neuron, as
    # nir.LIF wants); its exporter writes v_reset = 0 whatever the reset, so the net resets to zero
    leaky = lambda: snn.Leaky(beta=0.8, threshold=1.0, init_hidden=True, reset_mechanism="zero")  # noqa: E731
    net = _weights(torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5, stride=4, padding=2), leaky(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 7 * 7, 10), leaky()), CG2, LG2)
    utils.reset(net)
    with torch.no_grad():
        own = torch.stack([net(_inputs()) for _ in range(T)])
    ready = snntorch_for_export(net, torch.zeros(1, 1, 28, 28))
    assert net[1].beta.dim() == 0 and ready[1].beta.shape == (4, 7, 7)  # the user's net unchanged
    # ignore_dims=[0]: without it the batch dimension enters the graph's types and type inference fails
    graph = export_to_nir(ready, torch.zeros(1, 1, 28, 28), ignore_dims=[0])  # its dt: 1e-4
    _check(own, _seenn_run(graph, tmp_path, 1e-4))
    with pytest.raises(ConfigError, match="reset_mechanism='zero'"):
        snntorch_for_export(torch.nn.Sequential(torch.nn.Linear(3, 2), snn.Leaky(beta=0.5, init_hidden=True)),
                            torch.zeros(1, 3))


def test_norse_export_imports_spike_for_spike(tmp_path):
    norse = pytest.importorskip("norse.torch")

    net = _weights(norse.SequentialState(
        torch.nn.Conv2d(1, 4, 5, stride=4, padding=2), norse.LIFBoxCell(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 7 * 7, 10), norse.LIFBoxCell()), CG3, LG3)
    with torch.no_grad():
        state, own = None, []
        for _ in range(T):
            out, state = net(_inputs(), state)
            own.append(out)
    own = torch.stack(own)
    # Norse 1.1's to_nir writes tau = dt / tau_mem_inv (the time constant only for dt = 1: export with dt=1.0, then
    # import with the dt the network ran at, from_nir's default 1e-3); it writes no node for Flatten, the batch
    # dimension into the Input / Output types, scalar neuron parameters (nir.write cannot store them with its
    # compression) and torch tensors with no Conv2d input shape.
    graph = norse.to_nir(net, torch.zeros(1, 1, 28, 28), dt=1.0)
    shapes = {"1": (4, 7, 7), "4": (10,)}
    nodes = {}
    for key, node in graph.nodes.items():
        if node is None:
            node = nir.Flatten(input_type={"input": np.array([4, 7, 7])}, start_dim=0, end_dim=-1)
        for attr, value in list(vars(node).items()):
            if torch.is_tensor(value):
                setattr(node, attr, value.detach().numpy())
        if isinstance(node, nir.Conv2d):
            node.input_shape = np.array([28, 28])
        if isinstance(node, nir.LIF):
            node = nir.LIF(**{a: np.full(shapes[key], np.asarray(getattr(node, a)), np.float32)
                              for a in ("tau", "r", "v_leak", "v_threshold", "v_reset")})
        nodes[key] = node
    nodes["input"] = nir.Input(input_type={"input": np.array([1, 28, 28])})
    nodes["output"] = nir.Output(output_type={"output": np.array([10])})
    _check(own, _seenn_run(nir.NIRGraph(nodes=nodes, edges=graph.edges), tmp_path, 1e-3))
