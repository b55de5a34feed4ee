"""Live early exit on other frameworks' networks: SpikingJelly, snnTorch and Norse (and any module that threads its
state explicitly). Per framework: full-T outputs through the adapter equal the framework's own run spike for
spike; the runner's exits equal the post-hoc exits on the framework's outputs; dropping samples (and continuous
batching's newcomers) never changes the survivors' outputs."""

import copy
import json

import pytest
import torch
from conftest import mid_threshold
from torch import nn

from seenn.exits import Confidence
from seenn.interop import adapt
from seenn.runtime.engine import EarlyExitRunner, posthoc_exits, score_matrix

T = 6


def _x(n=20, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g) * 3


def _snntorch_net():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), snn.Leaky(beta=0.6, init_hidden=True), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 16, 5), snn.Synaptic(alpha=0.7, beta=0.8, init_hidden=True,
                                                                           output=True)).eval()


def _snntorch_own(net, x):
    from snntorch import utils

    utils.reset(net)
    return torch.stack([net(x)[1] for _ in range(T)])  # its membrane readout, (spk, mem)[1]


def _spikingjelly_net():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 6, 3, padding=1), layer.BatchNorm2d(6),
                        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()), layer.AvgPool2d(2),
                        layer.Flatten(), layer.Linear(6 * 16, 5), neuron.IFNode(v_reset=None))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    functional.set_step_mode(net, "m")  # the user's network as trained: multi-step
    return net.eval()


def _spikingjelly_own(net, x):
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    out = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1))  # [T, B, K] spikes of the last IF layer
    functional.reset_net(net)
    return out


class _NorseNet(nn.Module):
    def __init__(self):
        super().__init__()
        import norse.torch as norse

        self.seq = norse.SequentialState(nn.Conv2d(1, 6, 3, padding=1), norse.LIFCell(), nn.AvgPool2d(2),
                                         nn.Flatten(), nn.Linear(6 * 16, 5), norse.LICell())

    def forward(self, x, state=None):
        return self.seq(x, state)


def _norse_net():
    pytest.importorskip("norse")
    torch.manual_seed(0)
    net = _NorseNet().eval()
    with torch.no_grad():  # Norse's cells integrate with dt = 1 ms: currents large enough to fire within T steps
        net.seq[0].weight.mul_(20)
        net.seq[4].weight.mul_(20)
    return net


def _norse_own(net, x):
    state, outs = None, []
    for _ in range(T):
        out, state = net(x, state)
        outs.append(out)
    return torch.stack(outs)


FRAMEWORKS = {"snntorch": (_snntorch_net, _snntorch_own, 1), "spikingjelly": (_spikingjelly_net, _spikingjelly_own, 0),
              "norse": (_norse_net, _norse_own, 0)}


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_adapter_steps_the_peer_exactly(framework):
    make, own, output = FRAMEWORKS[framework]
    net = make()
    x = _x()
    with torch.no_grad():
        want = own(copy.deepcopy(net), x)  # [T, B, K], the framework's own full-T run
        peer = adapt(copy.deepcopy(net), output=output)
        assert peer.framework == framework
        got = peer(x, T)
    assert got.shape == want.shape and torch.equal(got, want.reshape(got.shape))
    logits = want.transpose(0, 1).reshape(len(x), T, -1)
    scores = score_matrix(logits, Confidence(0.5))
    for t in range(T - 1):  # a threshold at which samples leave at several steps (rows are dropped)
        rule = Confidence(mid_threshold(scores[:, t]))
        expected = posthoc_exits(logits, rule)
        if len(set(expected.exit_timestep.tolist())) > 1:
            break
    assert len(set(expected.exit_timestep.tolist())) > 1
    runner = EarlyExitRunner(peer, rule, T)
    for result in (runner.predict(x), runner.stream([x[:7], x[7:13], x[13:]], slots=5)):  # compaction, newcomers
        assert torch.equal(result.exit_timestep, expected.exit_timestep)
        assert torch.equal(result.prediction, expected.prediction)
        assert torch.allclose(result.logits, expected.logits, atol=1e-5)


def test_snntorch_explicit_state_needs_the_explicit_adapter():
    snn = pytest.importorskip("snntorch")
    from seenn.errors import ConfigError

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), snn.Leaky(beta=0.5))
    with pytest.raises(ConfigError, match="init_hidden=False.*--step"):
        adapt(net)

    class Explicit(nn.Module):  # the same network, threading its membrane itself
        def __init__(self):
            super().__init__()
            self.fc, self.lif = net[1], net[2]

        def forward(self, x, state=None):
            if state is None:  # at rest: snnTorch's own zero membrane
                state = self.lif.reset_mem()
            spk, mem = self.lif(self.fc(x.flatten(1)), state)
            return spk, mem

    peer = adapt(Explicit())  # forward(x, state) over init_hidden=False neurons: detected as explicit
    assert peer.framework == "explicit"
    x = _x()
    outs = []
    with torch.no_grad():
        mem = net[2].reset_mem()
        for _ in range(T):
            spk, mem = net[2](net[1](x.flatten(1)), mem)
            outs.append(spk)
        assert torch.equal(peer(x, T), torch.stack(outs))


EXPLICIT_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x, state=None):
        v = self.fc(x.flatten(1)) + (0 if state is None else 0.5 * state)
        return v, v


def build():
    return Net()
'''


NETWORK_PY = '''
import torch
from torch import nn
import snntorch as snn


def build():
    return nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), snn.Leaky(beta=0.5, init_hidden=True), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 10), snn.Leaky(beta=0.5, init_hidden=True, output=True))
'''


def test_seenn_adapt_from_the_cli(tiny_data, tmp_path, capsys):
    """A user's snnTorch file and a torch.save'd state_dict: one command makes a run folder; eval, calibrate,
    energy and bench then work on it. Nothing but tensors is ever unpickled."""
    pytest.importorskip("snntorch")
    import pickle

    from seenn.cli import main

    src = tmp_path / "network.py"
    src.write_text(NETWORK_PY)
    ns = {}
    exec(NETWORK_PY, ns)
    torch.manual_seed(0)
    net = ns["build"]()
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    run = tmp_path / "run"
    argv = ["adapt", str(src), "--weights", str(tmp_path / "weights.pt"), "--dataset", "mnist", "--timesteps", "4",
            "--output", "1", "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["name"] == "peer" and cfg["model"]["framework"] == "snntorch"
    cfg["training"] = {"val_size": 100}  # the tiny dataset's validation split (a peer run's default is 5,000)
    (run / "config.json").write_text(json.dumps(cfg))
    d = ["--data-dir", str(tiny_data)]
    assert main(["eval", str(run), *d, "--threshold", "0.5", "--json", "--limit", "30"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["accuracy_per_timestep"]) == 4 and 1 <= r["exit"]["avg_timesteps"] <= 4
    assert main(["calibrate", str(run), *d, "--out", str(tmp_path / "cal"), "--json"]) == 0
    assert main(["energy", str(run), *d, "--threshold", "0.5", "--limit", "20", "--json"]) == 0
    assert main(["bench", str(run), *d, "--threshold", "0.5", "--limit", "16", "--batch-size", "8",
                 "--repeats", "1", "--latency-samples", "2", "--json"]) == 0
    assert main(["report", str(run), *d, "--threshold", "0.5", "--limit", "16", "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    capsys.readouterr()
    # a pickled object is refused (weights_only), and so is a changed network file
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Evil()}))
    assert main([*argv[:2], "--weights", str(tmp_path / "evil.pt"), *argv[4:-1], str(tmp_path / "r2")]) == 2
    assert "pwned" not in capsys.readouterr().out
    src.write_text(NETWORK_PY + "\n# edited\n")
    assert main(["eval", str(run), *d, "--limit", "5"]) == 2
    assert "changed" in capsys.readouterr().err


def test_a_run_folder_never_runs_code_it_was_not_trusted_with(tmp_path, capsys, monkeypatch):
    """A shared folder holding a network file and a run naming it (with the right hash) runs nothing until the
    user trusts that file; a relative path is refused outright; `seenn trust` then lets it run."""
    from seenn.cli import main
    from seenn.interop.trust import file_digest

    monkeypatch.setenv("SEENN_TRUST_STORE", str(tmp_path / "trust.json"))
    shared = tmp_path / "shared"
    shared.mkdir()
    marker = tmp_path / "ran"
    src = shared / "net.py"
    src.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n" + EXPLICIT_PY)
    cfg = {"seenn_version": "0", "dataset": "mnist", "max_timesteps": 2,
           "model": {"name": "peer", "framework": "explicit", "source": str(src), "sha256": file_digest(src),
                     "factory": "build", "output": 0, "in_channels": 1, "image_size": 28, "num_classes": 10}}
    run = shared / "run"
    from seenn.interop import adapt
    from seenn.runs.store import save_run

    ns = {}
    exec(EXPLICIT_PY, ns)  # (without the marker line)
    save_run(run, adapt(ns["build"](), "explicit"), cfg)
    assert main(["energy", str(run), "--limit", "2", "--json"]) == 2
    err = capsys.readouterr().err
    assert "seenn trust" in err and not marker.exists()
    monkeypatch.chdir(shared)
    (run / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "source": "net.py"}}))
    assert main(["energy", str(run), "--limit", "2", "--json"]) == 2
    assert "relative" in capsys.readouterr().err and not marker.exists()
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["trust", str(src)]) == 0
    from seenn.runs.store import load_run

    load_run(run)
    assert marker.exists()


def test_adapt_refuses_integer_weights_and_nan_scores(tmp_path, capsys):
    from safetensors.torch import save_file

    from seenn.cli import main

    src = tmp_path / "net.py"
    src.write_text(EXPLICIT_PY)
    ns = {}
    exec(EXPLICIT_PY, ns)
    state = ns["build"]().state_dict()
    save_file({k: v.round().to(torch.int64) for k, v in state.items()}, str(tmp_path / "int.safetensors"))
    base = ["adapt", str(src), "--dataset", "mnist", "--timesteps", "2", "--framework", "explicit"]
    assert main([*base, "--weights", str(tmp_path / "int.safetensors"), "--out", str(tmp_path / "a")]) == 2
    assert "int64" in capsys.readouterr().err
    src.write_text(EXPLICIT_PY.replace("return v, v", "return v * float('nan'), v"))
    assert main([*base, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "Traceback" not in err and not (tmp_path / "b").exists()


def test_user_code_that_exits_or_raises_is_one_line(tmp_path, capsys):
    from seenn.cli import main

    for i, body in enumerate(("import sys\nsys.exit(3)\n", EXPLICIT_PY.replace("return Net()", "raise SystemExit(4)"),
                              EXPLICIT_PY.replace("return v, v", "return {}['missing'], v"))):
        src = tmp_path / f"net{i}.py"
        src.write_text(body)
        rc = main(["adapt", str(src), "--dataset", "mnist", "--timesteps", "2", "--framework", "explicit",
                   "--out", str(tmp_path / f"r{i}")])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_network_file_imports_its_siblings_and_the_hash_covers_them(tmp_path, capsys):
    from seenn.cli import main

    (tmp_path / "layers.py").write_text("from torch import nn\n\n\ndef readout():\n    return nn.Linear(784, 10)\n")
    src = tmp_path / "net.py"
    src.write_text(EXPLICIT_PY.replace("self.fc = nn.Linear(784, 10)", "self.fc = layers.readout()")
                   .replace("from torch import nn\n", "from torch import nn\n\nimport layers\n", 1))
    run = tmp_path / "run"
    assert main(["adapt", str(src), "--dataset", "mnist", "--timesteps", "2", "--framework", "explicit",
                 "--out", str(run)]) == 0  # no PYTHONPATH needed
    capsys.readouterr()
    from seenn.runs.store import load_run

    load_run(run)
    (tmp_path / "layers.py").write_text((tmp_path / "layers.py").read_text() + "\n# edited\n")
    assert main(["energy", str(run), "--limit", "2"]) == 2
    assert "changed" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- users' own networks

WINDOW_PY = '''
import torch
from torch import nn


class Window(nn.Module):
    """Trained on [0, 1] pixels: class k is a bright bar in row band k; counts pixels in (0.8, 1] per band."""

    def forward(self, x, state=None):
        bright = ((x > 0.8) & (x <= 1.0)).float()[:, 0]
        scores = torch.stack([bright[:, 2 + 2 * k:5 + 2 * k, 4:24].mean((1, 2)) for k in range(10)], 1)
        return scores, state


def build():
    return Window()
'''


def test_the_input_scale_is_explicit_recorded_and_checked(tiny_data, tmp_path, capsys):
    """A network trained on [0, 1] pixels, adapted with seenn's default normalised input, is near chance: adapt says
    so and names the fix; with --input-scale unit it is right, the run records it and eval prints it."""
    from seenn.cli import main

    src = tmp_path / "window.py"
    src.write_text(WINDOW_PY)
    base = ["adapt", str(src), "--framework", "explicit", "--output", "0", "--dataset", "mnist", "--timesteps", "2",
            "--data-dir", str(tiny_data), "--check-images", "100"]
    assert main([*base, "--out", str(tmp_path / "wrong")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "--input-scale unit" in err
    assert main([*base, "--input-scale", "unit", "--out", str(tmp_path / "right")]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "input: unit" in err
    cfg = json.loads((tmp_path / "right" / "config.json").read_text())
    assert cfg["model"]["input"]["scale"] == "unit" and cfg["model"]["input"]["mean"] == [0.0]
    accuracy = {}
    for name in ("wrong", "right"):
        c = json.loads((tmp_path / name / "config.json").read_text())
        c["training"] = {"val_size": 100}
        (tmp_path / name / "config.json").write_text(json.dumps(c))
        assert main(["eval", str(tmp_path / name), "--data-dir", str(tiny_data), "--threshold", "0.9"]) == 0
        out = capsys.readouterr().out
        assert ("input: unit: x / 255" in out) == (name == "right")
        assert main(["eval", str(tmp_path / name), "--data-dir", str(tiny_data), "--json"]) == 0
        accuracy[name] = json.loads(capsys.readouterr().out)["accuracy_per_timestep"][-1]
    assert accuracy["right"] > 0.95 and accuracy["wrong"] < 0.3
    # custom constants, one per channel
    assert main([*base, "--mean", "0.5", "--std", "0.25", "--out", str(tmp_path / "custom")]) == 0
    capsys.readouterr()
    cfg = json.loads((tmp_path / "custom" / "config.json").read_text())
    assert cfg["model"]["input"] == {**cfg["model"]["input"], "scale": "custom", "mean": [0.5], "std": [0.25]}
    assert main([*base, "--mean", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert main([*base, "--mean", "0.5", "--std", "nan", "--out", str(tmp_path / "bad")]) == 2  # bounded as the schema
    assert main([*base, "--mean", "1e9", "--std", "1", "--out", str(tmp_path / "bad")]) == 2


class _Wavy(nn.Module):
    """Explicit-state net whose per-step outputs rise and fall: the readouts differ."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(64, 5)

    def forward(self, x, state=None):
        t = torch.zeros(x.shape[0], 1) if state is None else state
        out = self.fc(x.flatten(1)) * torch.cos(t * 1.3 + torch.arange(5) * 0.7)
        return out, t + 1


@pytest.mark.parametrize("readout", ["max", "last", "mean"])
def test_readouts_are_exact_under_compaction_and_newcomers(readout):
    """The runner's summed scores are the readout of the steps so far, per sample, as samples leave and join."""
    x = _x()
    with torch.no_grad():
        raw = adapt(_Wavy(), "explicit")(x, T)  # [T, B, K] the per-step outputs
        want = {"max": raw.cummax(0).values, "last": raw,
                "mean": raw.cumsum(0) / torch.arange(1, T + 1).view(-1, 1, 1)}[readout]
        peer = adapt(_Wavy(), "explicit", readout=readout)
        got = peer(x, T).cumsum(0)
    assert torch.allclose(got, want, atol=1e-5)
    logits = want.transpose(0, 1)  # [B, T, K] the readout after each step
    increments = torch.cat([logits[:, :1], logits.diff(dim=1)], 1)
    scores = score_matrix(increments, Confidence(0.5))
    rule = Confidence(mid_threshold(scores[:, 1]))
    expected = posthoc_exits(increments, rule)
    assert len(set(expected.exit_timestep.tolist())) > 1
    runner = EarlyExitRunner(peer, rule, T)
    for result in (runner.predict(x), runner.stream([x[:7], x[7:13], x[13:]], slots=5)):
        assert torch.equal(result.exit_timestep, expected.exit_timestep)
        assert torch.equal(result.prediction, expected.prediction)


def test_a_tuple_output_is_never_guessed():
    snn = pytest.importorskip("snntorch")
    from seenn.errors import ConfigError

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), snn.Leaky(beta=0.5, init_hidden=True, output=True))
    with pytest.raises(ConfigError, match=r"returns 2 outputs \(0: \[20, 5\], 1: \[20, 5\]\).*--output"):
        adapt(net)(_x(), T)
    with torch.no_grad():
        assert adapt(net, output=1)(_x(), T).shape == (T, 20, 5)


def test_spikingjelly_multistep_nets_run_as_written_and_are_given_back_unchanged():
    """A multi-step net with a SeqToANNContainer head and a v_seq readout, in training mode: stepped in its own
    step mode ([1, B, ...] a step), equal to its own T-step run, and left in multi-step and training mode."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = layer.SeqToANNContainer(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6))
            self.lif = neuron.LIFNode(tau=2.0, step_mode="m")
            self.fc = layer.SeqToANNContainer(nn.Flatten(), nn.Linear(6 * 64, 5))
            self.out = neuron.LIFNode(tau=2.0, step_mode="m", store_v_seq=True, v_threshold=1e9)

        def forward(self, x):
            self.out(self.fc(self.lif(self.conv(x))))
            return self.out.v_seq  # the membrane of a non-firing readout, [T, B, K]

    net = Net()
    with torch.no_grad():
        net.conv[1].running_var.uniform_(0.5, 1.5)
    net.train()
    x = _x()
    with torch.no_grad():
        ref = copy.deepcopy(net).eval()
        functional.reset_net(ref)
        want = ref(x.unsqueeze(0).repeat(T, 1, 1, 1, 1))
        peer = adapt(net, readout="last")
        got = peer(x, T).cumsum(0)
    assert torch.allclose(got, want, atol=1e-5)
    assert net.training and all(m.training for m in net.modules())  # the user's mode, given back
    assert net.lif.step_mode == "m" and net.out.step_mode == "m"
    functional.reset_net(net)
    net.eval()
    with torch.no_grad():
        assert net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).shape == (T, 20, 5)  # the user's next multi-step call


def test_snntorch_state_buffers_in_a_checkpoint_load_either_way(tmp_path):
    """A state_dict that holds snnTorch's membrane buffers (as init_hidden=True nets saved them) loads into the same
    network built either way: state at rest is not a weight."""
    pytest.importorskip("snntorch")
    from seenn.interop import load_peer

    (tmp_path / "net.py").write_text(NETWORK_PY)
    ns = {}
    exec(NETWORK_PY, ns)
    torch.manual_seed(0)
    net = ns["build"]()
    state = dict(net.state_dict())
    state["1.mem"] = torch.zeros(1, 4, 12, 12)
    state["5.mem"] = torch.zeros(1, 10)
    torch.save(state, tmp_path / "w.pt")
    peer = load_peer(tmp_path / "net.py", weights=tmp_path / "w.pt", output=1)
    assert torch.equal(peer.body.peer[0].weight, net[0].weight)


def test_a_time_major_tensor_is_refused_not_read_as_frames():
    """[T, B, C, H, W] given to the runner for an image network would be read as frames [B, T, ...] (4 answers for
    8 images): refused in one line; frames=True takes the documented batch-first frame layout."""
    from seenn.errors import DataError

    x = _x(8)
    peer = adapt(_Wavy(), "explicit")
    runner = EarlyExitRunner(peer, Confidence(0.99), 4)
    with pytest.raises(DataError, match="takes images"):
        runner.predict(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    assert runner.predict(x).prediction.shape == (8,)
    frames = EarlyExitRunner(adapt(_Wavy(), "explicit", frames=True), Confidence(0.99), 4)
    assert frames.predict(x.unsqueeze(1).repeat(1, 4, 1, 1, 1)).prediction.shape == (8,)
