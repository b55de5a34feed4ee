"""NIR export and import, checked against a small independent NIR interpreter."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

nir = pytest.importorskip("nir")

from conftest import mid_threshold  # noqa: E402

from seenn.cli import main  # noqa: E402
from seenn.data import load_dataset  # noqa: E402
from seenn.errors import ConfigError  # noqa: E402
from seenn.interop.nir import from_nir, import_nir, to_nir  # noqa: E402
from seenn.runs.store import load_run  # noqa: E402


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
            elif kind == "LI":
                p = {a: torch.from_numpy(np.asarray(getattr(n, a), dtype=np.float64)) for a in ("tau", "r", "v_leak")}
                u = v.get(key, torch.zeros_like(h))
                u = u + dt / p["tau"] * (p["v_leak"] - u + p["r"] * h)
                v[key] = u
                h = u
            elif kind == "CubaLIF":
                p = {a: torch.from_numpy(np.asarray(getattr(n, a), dtype=np.float64))
                     for a in ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "w_in")}
                i_syn, u = v.get(key, (torch.zeros_like(h), torch.zeros_like(h)))
                i_syn = i_syn + dt / p["tau_syn"] * (-i_syn + p["w_in"] * h)
                u = u + dt / p["tau_mem"] * (p["v_leak"] - u + p["r"] * i_syn)
                z = (u > p["v_threshold"]).double()
                v[key] = (i_syn, u * (1 - z))
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
    from seenn.nn.neuron import IF

    g = snntorch_style_graph()
    g.nodes["lif"] = nir.Delay(delay=np.ones((4, 6, 6)))  # no seenn counterpart
    with pytest.raises(ConfigError, match="Delay"):
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

    from seenn.runs.store import pretrained_runs

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


def _chain(nodes: dict, metadata=None):
    keys = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(keys, keys[1:])), metadata=metadata or {})


def _write(graph, path):
    nir.write(str(path), graph)
    return path


def _seenn_total(model, x, steps):
    with torch.no_grad():
        return model(torch.from_numpy(x).float(), steps).sum(0).double().numpy()


def test_a_gain_after_a_neuron_is_its_own_layer(tmp_path):
    """Affine -> LIF -> LIF with an input gain of 1.5 on the second: the gain scales the first LIF's spikes, not
    the Affine before it (a reference simulation agrees exactly)."""
    rng = np.random.default_rng(0)
    n = 6
    full = lambda v: np.full(n, v)  # noqa: E731
    g = _chain({"input": nir.Input(input_type={"input": np.array([1, 2, 2])}),
                "flat": nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0),
                "fc": nir.Affine(weight=rng.normal(size=(n, 4)).astype(np.float32), bias=np.zeros(n, np.float32)),
                "lif1": nir.LIF(tau=full(2.0), r=full(2.0), v_leak=full(0.0), v_threshold=full(1.0), v_reset=full(0.0)),
                "lif2": nir.LIF(tau=full(2.0), r=full(3.0), v_leak=full(0.0), v_threshold=full(1.0), v_reset=full(0.0)),
                "out": nir.Affine(weight=rng.normal(size=(3, n)).astype(np.float32), bias=np.zeros(3, np.float32)),
                "output": nir.Output(output_type={"output": np.array([3])})})
    specs = from_nir(g)[0]
    assert [s["type"] for s in specs] == ["flatten", "linear", "neuron", "scale", "neuron", "linear"]
    model, _ = import_nir(_write(g, tmp_path / "g.nir"), dataset="mnist", max_timesteps=8)
    x = (rng.random((64, 1, 2, 2)) * 4).astype(np.float32)
    np.testing.assert_allclose(_seenn_total(model, x, 8), simulate(g, x, 8), atol=1e-4)


def test_flat_inputs_ties_and_output_shapes(tmp_path):
    """An MLP on flat (784,) inputs imports for 28x28 images; a membrane exactly at the threshold does not fire
    (NIR's v > threshold); a graph whose output is a map, not a vector, is refused at import."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(10, 784)).astype(np.float32) * 0.1
    g = _chain({"input": nir.Input(input_type={"input": np.array([784])}),
                "fc": nir.Affine(weight=w, bias=np.zeros(10, np.float32)),
                "lif": nir.IF(r=np.ones(10), v_threshold=np.ones(10), v_reset=np.zeros(10)),
                "output": nir.Output(output_type={"output": np.array([10])})})
    model, cfg = import_nir(_write(g, tmp_path / "mlp.nir"), dataset="mnist", max_timesteps=4)
    assert (cfg["model"]["in_channels"], cfg["model"]["image_size"]) == (1, 28, 28)[:2]
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(_seenn_total(model, x, 4), simulate(g, x.reshape(8, -1), 4), atol=1e-4)
    tie = _chain({"input": nir.Input(input_type={"input": np.array([1, 1, 1])}),
                  "flat": nir.Flatten(input_type={"input": np.array([1, 1, 1])}, start_dim=0),
                  "fc": nir.Affine(weight=np.ones((2, 1), np.float32), bias=np.zeros(2, np.float32)),
                  "lif": nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2)),
                  "output": nir.Output(output_type={"output": np.array([2])})})
    specs, tensors, _, _ = from_nir(tie)
    from seenn.models.sequential import SequentialSNN

    snn = SequentialSNN(layers=specs, in_channels=1, image_size=1, num_classes=2)
    with torch.no_grad():
        snn.stem[1].weight.fill_(1.0)
        snn.stem[1].bias.zero_()
        out = snn(torch.ones(1, 1, 1, 1), 1)  # the membrane is exactly 1.0 = the threshold: no spike in NIR
    assert out.sum().item() == 0.0 and simulate(tie, np.ones((1, 1, 1, 1), np.float32), 1).sum() == 0.0
    conv_out = _chain({"input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
                       "conv": nir.Conv2d(input_shape=np.array([4, 4]), weight=np.ones((10, 1, 4, 4), np.float32),
                                          stride=np.array([1, 1]), padding=np.array([0, 0]),
                                          dilation=np.array([1, 1]), groups=1, bias=np.zeros(10, np.float32)),
                       "lif": nir.IF(r=np.ones((10, 1, 1)), v_threshold=np.ones((10, 1, 1)),
                                     v_reset=np.zeros((10, 1, 1))),
                       "output": nir.Output(output_type={"output": np.array([10, 1, 1])})})
    with pytest.raises(ConfigError, match=r"one vector of class scores.*\[10, 1, 1\]"):
        import_nir(_write(conv_out, tmp_path / "c.nir"), dataset="mnist")


def test_export_dt_round_trips_and_matches_the_simulator_at_that_dt(tiny_run, tiny_data, tmp_path):
    model, config = load_run(tiny_run)
    g = to_nir(model, config, dt=1e-4)
    assert g.metadata["dt"] == 1e-4 and "input_normalisation" in g.metadata
    lif = next(n for n in g.nodes.values() if type(n).__name__ == "LIF")
    np.testing.assert_allclose(np.asarray(lif.r), np.asarray(lif.tau) / 1e-4, rtol=1e-6)  # unit input gain
    test = load_dataset("fashion-mnist", "test", data_dir=tiny_data, limit=16)
    x = test.normalize(test.images).numpy()
    t = config["max_timesteps"]
    ref = simulate(g, x, t, dt=1e-4)
    np.testing.assert_allclose(_seenn_total(model, x, t), ref, atol=1e-3)
    back, cfg = import_nir(_write(g, tmp_path / "m.nir"), dataset="fashion-mnist")  # dt read from the metadata
    assert cfg["imported_from"]["dt"] == 1e-4 and not cfg["imported_from"]["input_normalisation"]
    np.testing.assert_allclose(_seenn_total(back, x, t), ref, atol=1e-3)


def test_recorded_input_normalisation_is_applied(tmp_path):
    """A graph trained on [0, 1] pixels (its metadata says so) sees [0, 1] pixels through seenn's pipeline."""
    from seenn.data import DATASETS

    rng = np.random.default_rng(2)
    g = _chain({"input": nir.Input(input_type={"input": np.array([784])}),
                "fc": nir.Affine(weight=rng.normal(size=(10, 784)).astype(np.float32) * 0.2,
                                 bias=np.zeros(10, np.float32)),
                "lif": nir.IF(r=np.ones(10), v_threshold=np.ones(10), v_reset=np.zeros(10)),
                "output": nir.Output(output_type={"output": np.array([10])})},
               metadata={"input_normalisation": json.dumps({"pixel_scale": 1 / 255, "mean": [0.0], "std": [1.0]})})
    model, cfg = import_nir(_write(g, tmp_path / "n.nir"), dataset="mnist", max_timesteps=4)
    assert cfg["imported_from"]["input_normalisation"]
    pixels = rng.integers(0, 256, (8, 1, 28, 28)).astype(np.float32)
    info = DATASETS["mnist"]
    seenn_x = ((pixels / 255 - info.mean[0]) / info.std[0]).astype(np.float32)
    np.testing.assert_allclose(_seenn_total(model, seenn_x, 4), simulate(g, (pixels / 255).reshape(8, -1), 4),
                               atol=1e-3)


def test_exact_exponential_discretisation():
    n = 3
    g = _chain({"input": nir.Input(input_type={"input": np.array([1, 1, 3])}),
                "flat": nir.Flatten(input_type={"input": np.array([1, 1, 3])}, start_dim=0),
                "fc": nir.Affine(weight=np.eye(n, dtype=np.float32), bias=np.zeros(n, np.float32)),
                "lif": nir.LIF(tau=np.full(n, 0.02), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                               v_reset=np.zeros(n)),
                "output": nir.Output(output_type={"output": np.array([n])})})
    specs, tensors, _, _ = from_nir(g, dt=0.001, discretisation="exp")
    neuron = next(s for s in specs if s["type"] == "neuron")
    assert neuron["decay"] == pytest.approx(np.exp(-0.001 / 0.02))
    lin = tensors[[s["type"] for s in specs].index("linear")]["weight"]
    np.testing.assert_allclose(np.diag(lin), 1 - np.exp(-0.001 / 0.02), rtol=1e-6)
    with pytest.raises(ConfigError, match="--dt"):
        from_nir(g, dt=1.0)  # decay 1 - 1/0.02 < 0: the hint names --dt


def test_cubalif_and_li_readout_match_the_simulator_and_the_runner(tmp_path):
    from seenn.exits import Confidence
    from seenn.runtime.engine import EarlyExitRunner, posthoc_exits

    rng = np.random.default_rng(3)
    n = 12
    full = lambda v: np.full(n, v)  # noqa: E731
    g = _chain({"input": nir.Input(input_type={"input": np.array([1, 3, 3])}),
                "flat": nir.Flatten(input_type={"input": np.array([1, 3, 3])}, start_dim=0),
                "fc": nir.Affine(weight=rng.normal(size=(n, 9)).astype(np.float32) * 2, bias=np.zeros(n, np.float32)),
                "cuba": nir.CubaLIF(tau_syn=full(2.0), tau_mem=full(4.0), r=full(2.0), v_leak=full(0.0),
                                    v_threshold=full(0.5), v_reset=full(0.0), w_in=full(1.5)),
                "fc2": nir.Affine(weight=rng.normal(size=(4, n)).astype(np.float32), bias=np.zeros(4, np.float32)),
                "li": nir.LI(tau=np.full(4, 3.0), r=np.full(4, 3.0), v_leak=np.zeros(4)),
                "output": nir.Output(output_type={"output": np.array([4])})})
    specs = from_nir(g)[0]
    assert [s["type"] for s in specs] == ["flatten", "linear", "cubalif", "linear", "li"]
    model, _ = import_nir(_write(g, tmp_path / "cuba.nir"), dataset="mnist", max_timesteps=10)
    x = (rng.random((40, 1, 3, 3)) * 2).astype(np.float32)
    np.testing.assert_allclose(_seenn_total(model, x, 10), simulate(g, x, 10), atol=1e-4)
    with torch.no_grad():
        logits = model(torch.from_numpy(x), 10).transpose(0, 1)
    scores = torch.softmax(logits.cumsum(1), -1).amax(-1)
    rule = Confidence(mid_threshold(scores[:, 2]))
    want = posthoc_exits(logits, rule)
    assert len(set(want.exit_timestep.tolist())) > 1
    runner = EarlyExitRunner(model, rule, 10)
    for got in (runner.predict(torch.from_numpy(x)), runner.stream([torch.from_numpy(x)], slots=16)):
        assert torch.equal(got.exit_timestep, want.exit_timestep) and torch.equal(got.prediction, want.prediction)


def test_peer_importers_read_seenn_exports():
    """seenn's export at the peers' dt (1e-4) read by their own importers: SpikingJelly reproduces the network
    exactly; snnTorch mostly agrees on the predictions (95.4% of 500 test images, measured; 7.5% before export
    took a dt). Its importer flattens the batch dimension too, so it runs one image at a time here, and its spike
    trains are not identical to the reference's."""
    model, cfg = load_run("fashion-mnist-convnet-t4")
    test = load_dataset("fashion-mnist", "test", data_dir="embedded", limit=24)
    x = test.normalize(test.images)
    with torch.no_grad():
        ref = model(x, 4)
    g = to_nir(model, cfg, dt=1e-4)
    try:
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based.nir_exchange import import_from_nir
    except ImportError:
        pass
    else:
        net = import_from_nir(g, dt=1e-4)
        functional.reset_net(net)
        functional.set_step_mode(net, "m")
        with torch.no_grad():
            out = net(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
        out = out[0] if isinstance(out, (tuple, list)) else out
        assert torch.equal(out, ref)
    try:
        from snntorch import import_nir as snntorch_nir
    except ImportError:  # snnTorch without nirtorch
        return
    net = snntorch_nir.import_from_nir(g)
    agree = 0
    with torch.no_grad():
        for i in range(len(x)):
            state, total = None, 0
            for _ in range(4):
                o, state = net(x[i:i + 1]) if state is None else net(x[i:i + 1], state)
                total = total + o
            agree += int(total.argmax() == ref[:, i].sum(0).argmax())
    assert agree >= 0.8 * len(x)


def _norse_run(net, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-step outputs [T, B, C] of a network Norse's from_nir built, one image at a time (Norse maps NIR's
    per-sample Flatten(start_dim=0) to torch's Flatten(0, -1), which flattens the batch too)."""
    outs = []
    with torch.no_grad():
        for i in range(len(x)):
            state, per_step = None, []
            for _ in range(steps):
                o, state = net(x[i:i + 1], state)
                per_step.append(o.reshape(1, -1))
            outs.append(torch.stack(per_step))
    return torch.cat(outs, 1)


def test_export_for_norse_runs_in_norse_as_in_seenn(tmp_path, caplog):
    """`seenn export --for norse`: LIF thresholds in units of r = 1 and average pools as channel-wise convolutions,
    the same network in NIR's semantics (the independent simulator gives the plain export's outputs), which Norse's
    own importer reads without a warning and runs as seenn does (float rounding apart). The plain export does not
    load in Norse (no AvgPool2d mapping)."""
    norse = pytest.importorskip("norse.torch")
    model, cfg = load_run("fashion-mnist-convnet-t4")
    test = load_dataset("fashion-mnist", "test", data_dir="embedded", limit=12)
    x = test.normalize(test.images)
    with torch.no_grad():
        ref = model(x, 4)
    path = tmp_path / "norse.nir"
    assert main(["export", "fashion-mnist-convnet-t4", "--for", "norse", "--out", str(path)]) == 0
    g = nir.read(str(path))
    assert g.metadata["dt"] == pytest.approx(1e-3) and g.metadata["written_for"] == "norse"
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert "AvgPool2d" not in kinds and "Conv2d" in kinds
    assert all(np.all(np.asarray(n.r) == 1) for n in g.nodes.values() if type(n).__name__ == "LIF")
    plain = to_nir(model, cfg, dt=1e-3)
    xs = x.numpy().astype(np.float64)
    np.testing.assert_allclose(simulate(g, xs, 4, dt=1e-3), simulate(plain, xs, 4, dt=1e-3), atol=1e-3)
    with caplog.at_level("WARNING"):
        net = norse.from_nir(g, dt=1e-3)
    assert not [r for r in caplog.records if "diverge" in r.getMessage()]
    out = _norse_run(net, x, 4)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-4
    assert torch.equal(out.sum(0).argmax(1), ref.sum(0).argmax(1))
    with pytest.raises(Exception):
        norse.from_nir(plain, dt=1e-3, ignore_warnings=True)
    # seenn's own importer reads the Norse form back as the same network
    specs_model, _ = import_nir(path, dataset="fashion-mnist")
    with torch.no_grad():
        back = specs_model(x, 4)
    assert (back - ref).abs().max() < 1e-4


def test_export_for_norse_takes_identity_shortcuts_and_refuses_shortcut_layers():
    norse = pytest.importorskip("norse.torch")
    from seenn.models import build_model
    from seenn.models.resnet import _ResNet

    torch.manual_seed(0)
    net = _ResNet(8, ((8, 2, 1),), None, in_channels=3, num_classes=10, width=1.0, surrogate="tanh").eval()
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.bias.data.uniform_(0.3, 1.0)
    cfg = {"dataset": "cifar10", "max_timesteps": 4, "model": {"in_channels": 3, "image_size": 8, "num_classes": 10}}
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        ref = net(x, 4)
    assert ref.abs().sum() > 0
    out = _norse_run(norse.from_nir(to_nir(net, cfg, dt=1e-3, peer="norse"), dt=1e-3), x, 4)
    assert (out - ref).abs().max() < 1e-4
    r19 = build_model("resnet19", in_channels=3, image_size=32, num_classes=10, width=0.0625).eval()
    cfg["model"]["image_size"] = 32
    with pytest.raises(ConfigError, match="one step late"):
        to_nir(r19, cfg, peer="norse")


def test_a_membrane_readout_exports_as_li_and_round_trips(tmp_path):
    """An imported graph with a leaky-integrator readout exports it as nir.LI (not a spiking LIF) and reads back to
    the same outputs."""
    from seenn.interop.nir import export_nir

    rng = np.random.default_rng(5)
    n = 8
    g = _chain({"input": nir.Input(input_type={"input": np.array([1, 3, 3])}),
                "flat": nir.Flatten(input_type={"input": np.array([1, 3, 3])}, start_dim=0),
                "fc": nir.Affine(weight=rng.normal(size=(n, 9)).astype(np.float32) * 2, bias=np.zeros(n, np.float32)),
                "lif": nir.LIF(tau=np.full(n, 2.0), r=np.full(n, 2.0), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5),
                               v_reset=np.zeros(n)),
                "fc2": nir.Affine(weight=rng.normal(size=(4, n)).astype(np.float32), bias=np.zeros(4, np.float32)),
                "li": nir.LI(tau=np.full(4, 3.0), r=np.full(4, 3.0), v_leak=np.zeros(4)),
                "output": nir.Output(output_type={"output": np.array([4])})})
    model, config = import_nir(_write(g, tmp_path / "li.nir"), dataset="mnist", max_timesteps=6)
    export_nir(model, config, tmp_path / "again.nir")
    again = nir.read(str(tmp_path / "again.nir"))
    kinds = sorted(type(v).__name__ for v in again.nodes.values())
    assert "LI" in kinds and kinds.count("LIF") == 1
    model2, _ = import_nir(tmp_path / "again.nir", dataset="mnist", max_timesteps=6)
    x = torch.from_numpy((rng.random((10, 1, 3, 3)) * 2).astype(np.float32))
    with torch.no_grad():
        a, b = model(x, 6), model2(x, 6)
    assert a.abs().sum() > 0 and torch.allclose(a, b, atol=1e-5)
