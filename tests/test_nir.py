"""NIR export and import, checked against a small independent NIR interpreter."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

nir = pytest.importorskip("nir")

from seenn.checkpoint import load_run  # noqa: E402
from seenn.cli import main  # noqa: E402
from seenn.data import load_dataset  # noqa: E402
from seenn.errors import ConfigError  # noqa: E402
from seenn.nir_io import from_nir, import_nir, to_nir  # noqa: E402


def simulate(graph, x: np.ndarray, steps: int, dt: float = 1.0) -> np.ndarray:
    """Reference interpreter: forward-Euler NIR semantics, written from the NIR node definitions only."""
    preds = {}
    for a, b in graph.edges:
        preds.setdefault(b, []).append(a)
    order, done = [], {k for k, n in graph.nodes.items() if type(n).__name__ == "Input"}
    while len(done) < len(graph.nodes):  # topological order
        ready = [k for k in graph.nodes if k not in done and all(p in done for p in preds.get(k, []))]
        order += ready
        done |= set(ready)
    v = {}
    total = 0
    for _ in range(steps):
        outs = {k: torch.from_numpy(x).double() for k in done - set(order)}
        for key in order:
            h = sum(outs[p] for p in preds[key])  # NIR sums a node's inputs
            n = graph.nodes[key]
            kind = type(n).__name__
            if kind == "Conv2d":
                h = F.conv2d(h, torch.from_numpy(np.asarray(n.weight)).double(),
                             torch.from_numpy(np.asarray(n.bias)).double(), tuple(np.atleast_1d(n.stride)),
                             tuple(np.atleast_1d(n.padding)), tuple(np.atleast_1d(n.dilation)), int(n.groups))
            elif kind == "Affine":
                h = h @ torch.from_numpy(np.asarray(n.weight)).double().T + torch.from_numpy(np.asarray(n.bias)).double()
            elif kind == "Linear":
                h = h @ torch.from_numpy(np.asarray(n.weight)).double().T
            elif kind in ("LIF", "IF"):
                p = {a: torch.from_numpy(np.asarray(getattr(n, a), dtype=np.float64))
                     for a in ("tau", "r", "v_leak", "v_threshold", "v_reset") if hasattr(n, a)}
                u = v.get(key, torch.zeros_like(h))
                if kind == "LIF":
                    u = u + dt / p["tau"] * (p["v_leak"] - u + p["r"] * h)
                else:
                    u = u + dt * p["r"] * h
                z = (u > p["v_threshold"]).double()
                v[key] = torch.where(z.bool(), p["v_reset"].expand_as(u), u)
                h = z
            elif kind == "AvgPool2d":
                h = F.avg_pool2d(h, tuple(np.atleast_1d(n.kernel_size)), tuple(np.atleast_1d(n.stride)))
            elif kind == "SumPool2d":
                k = tuple(np.atleast_1d(n.kernel_size))
                h = F.avg_pool2d(h, k, tuple(np.atleast_1d(n.stride))) * (k[0] * k[-1])
            elif kind == "Flatten":
                h = h.reshape(h.shape[0], -1)
            outs[key] = h
        total = total + outs[next(k for k, n in graph.nodes.items() if type(n).__name__ == "Output")]
    return total.numpy()


def test_export_matches_an_independent_simulator(tiny_run, tiny_data, tmp_path):
    model, config = load_run(tiny_run)
    path = tmp_path / "m.nir"
    assert main(["export", str(tiny_run), "--out", str(path), "--threshold", "0.7"]) == 0
    graph = nir.read(str(path))
    assert graph.metadata["exit_rule"] == "confidence" and graph.metadata["exit_threshold"] == pytest.approx(0.7)
    assert graph.metadata["max_timesteps"] == 3
    data = load_dataset("fashion-mnist", "test", data_dir=tiny_data)
    x = data.normalize(data.images)
    ref = simulate(graph, x.numpy().astype(np.float64), 3).argmax(1)
    with torch.no_grad():
        ours = model(x, 3).sum(0).argmax(1).numpy()
    assert (ref == ours).mean() >= 0.99


def test_import_round_trip(tiny_run, tiny_data, tmp_path, capsys):
    path = tmp_path / "m.nir"
    assert main(["export", str(tiny_run), "--out", str(path)]) == 0
    out = tmp_path / "imported"
    assert main(["import", str(path), "--out", str(out), "--dataset", "fashion-mnist"]) == 0
    capsys.readouterr()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["name"] == "sequential" and cfg["max_timesteps"] == 3
    a, b = load_run(tiny_run)[0], load_run(out)[0]
    x = torch.randn(32, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(a(x, 3), b(x, 3), atol=1e-4)
    assert main(["eval", str(out), "--data-dir", str(tiny_data), "--json", "--limit", "20"]) == 0


def snntorch_style_graph(dt=1e-4, beta=0.5):
    """A graph in the conventions of snnTorch's exporter: tau = dt / (1 - beta), r = tau / dt, dt = 1e-4."""
    rng = np.random.default_rng(0)
    tau = dt / (1 - beta)
    shape = np.array([4, 6, 6])
    conv = nir.Conv2d(input_shape=np.array([6, 6]), weight=rng.normal(0, 0.6, (4, 1, 3, 3)).astype(np.float32),
                      stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1,
                      bias=rng.normal(0.3, 0.1, 4).astype(np.float32))
    full = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    lif = nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0.0), v_threshold=full(1.0), v_reset=full(0.0))
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    flat = nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0, end_dim=-1)
    fc = nir.Affine(weight=rng.normal(0, 0.3, (5, 36)).astype(np.float32), bias=np.zeros(5, np.float32))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 6, 6])}), "conv": conv, "lif": lif,
             "pool": pool, "flat": flat, "fc": fc, "output": nir.Output(output_type={"output": np.array([5])})}
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order, order[1:])), metadata={})


def test_import_of_a_peer_style_graph_matches_the_simulator(tmp_path):
    graph = snntorch_style_graph()
    path = tmp_path / "peer.nir"
    nir.write(str(path), graph)
    model, config = import_nir(path, dataset="mnist", max_timesteps=5, dt=1e-4)
    assert config["model"]["layers"][1]["decay"] == pytest.approx(0.5)
    x = torch.randn(64, 1, 6, 6) * 2
    ref = simulate(graph, x.numpy().astype(np.float64), 5, dt=1e-4)
    with torch.no_grad():
        ours = model(x, 5).sum(0).numpy()
    assert np.abs(ref - ours).max() < 1e-3


def test_unsupported_graphs_are_refused(tmp_path):
    from seenn.models import build_model
    from seenn.neuron import IF

    g = snntorch_style_graph()
    g.nodes["lif"] = nir.CubaLIF(tau_syn=np.ones((4, 6, 6)), tau_mem=np.ones((4, 6, 6)), r=np.ones((4, 6, 6)),
                                 v_leak=np.zeros((4, 6, 6)), v_threshold=np.ones((4, 6, 6)))
    with pytest.raises(ConfigError, match="CubaLIF"):
        from_nir(g)
    # a converted network's soft-reset IF neurons have no faithful NIR form
    m = build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25)
    m.body[0] = IF()
    cfg = {"dataset": "mnist", "max_timesteps": 4, "model": {"in_channels": 1, "image_size": 28, "num_classes": 10}}
    with pytest.raises(ConfigError, match="subtraction"):
        to_nir(m, cfg)
    (tmp_path / "bad.nir").write_bytes(b"not hdf5")
    assert main(["import", str(tmp_path / "bad.nir"), "--out", str(tmp_path / "r"), "--dataset", "mnist"]) == 2


def test_resnet_export_with_residual_edges_matches_the_simulator():
    from seenn.models import build_model

    torch.manual_seed(0)
    r = build_model("resnet19", in_channels=3, image_size=32, num_classes=10, width=0.0625)
    for mod in r.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(0.2, 1.0)
            mod.running_var.uniform_(0.5, 1.5)
    r.eval()
    graph = to_nir(r, {"dataset": "cifar10", "max_timesteps": 3,
                       "model": {"in_channels": 3, "image_size": 32, "num_classes": 10}})
    assert sum(1 for a, b in graph.edges if b.endswith("lif2")) == 16  # 8 blocks, two inputs each
    x = torch.randn(16, 3, 32, 32)
    ref = simulate(graph, x.numpy().astype(np.float64), 3)
    with torch.no_grad():
        ours = r(x, 3).sum(0).numpy()
    assert (ref.argmax(1) == ours.argmax(1)).mean() >= 0.9
    assert np.abs(ref - ours).mean() < 0.05 * (np.abs(ours).mean() + 1e-6) + 1e-3
    with pytest.raises(ConfigError, match="branches"):
        from_nir(graph)


def test_shipped_run_export_matches_the_simulator_on_real_images(tmp_path):
    from conftest import real_data_dir
    from seenn.checkpoint import pretrained_runs

    root = real_data_dir()
    if root is None or not (root / "fashion-mnist").is_dir() or not any(
            r["name"] == "fashion-mnist-convnet-t4" for r in pretrained_runs()):
        pytest.skip("needs Fashion-MNIST and the shipped run")
    model, config = load_run("fashion-mnist-convnet-t4")
    graph = to_nir(model, config)
    path = tmp_path / "fm.nir"
    nir.write(str(path), graph)
    graph = nir.read(str(path))
    data = load_dataset("fashion-mnist", "test", data_dir=root, limit=500)
    x = data.normalize(data.images)
    ref = simulate(graph, x.numpy().astype(np.float64), 4).argmax(1)
    with torch.no_grad():
        ours = model(x, 4).sum(0).argmax(1).numpy()
    assert (ref == ours).mean() >= 0.99
