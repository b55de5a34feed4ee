"""Users' own networks, each written fresh in its framework's own style, go in with one command (no subclass, no
PYTHONPATH) and run exactly as the framework runs them: a SpikingJelly multi-step conv net (BN, soft-reset LIF,
PLIF, max pooling), an snnTorch tutorial-style MLP (explicit state, Synaptic, learnable-beta Leaky, forward over
num_steps), a bare Norse SequentialState (LIFBoxCell, LIFCell, an LICell readout, max over time), and a plain
PyTorch residual CNN (converted)."""

import json

import pytest
import torch

from seenn.cli import main
from seenn.runs.store import load_run

T = 4

SJ_PY = '''
import torch
from torch import nn
from spikingjelly.activation_based import functional, layer, neuron, surrogate


def build():
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 6, 3, padding=1), layer.BatchNorm2d(6),
                        neuron.LIFNode(tau=2.0, v_reset=None, surrogate_function=surrogate.ATan()),
                        layer.MaxPool2d(2), layer.Conv2d(6, 8, 3, padding=1),
                        neuron.ParametricLIFNode(init_tau=2.0), layer.MaxPool2d(2), layer.Flatten(),
                        layer.Linear(8 * 7 * 7, 10), neuron.IFNode(v_reset=None))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[4].weight.mul_(4)
        net[8].weight.mul_(12)
        net[1].running_var.uniform_(0.5, 1.5)
    functional.set_step_mode(net, "m")
    return net
'''

SNNTORCH_PY = '''
import torch
from torch import nn
import snntorch as snn

num_steps = 4


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.syn1 = snn.Synaptic(alpha=0.7, beta=0.8)
        self.fc2 = nn.Linear(32, 10)
        self.lif2 = snn.Leaky(beta=0.7, learn_beta=True)

    def forward(self, x):
        syn1, mem1 = self.syn1.init_synaptic()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(num_steps):
            spk1, syn1, mem1 = self.syn1(self.fc1(x.flatten(1)), syn1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def build():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.fc1.weight.mul_(6)
    return net


def step(net, x, state):
    if state is None:
        syn1, mem1 = net.syn1.init_synaptic()
        mem2 = net.lif2.init_leaky()
    else:
        syn1, mem1, mem2 = state
    spk1, syn1, mem1 = net.syn1(net.fc1(x.flatten(1)), syn1, mem1)
    spk2, mem2 = net.lif2(net.fc2(spk1), mem2)
    return mem2, (syn1, mem1, mem2)
'''

NORSE_PY = '''
import torch
from torch import nn
import norse.torch as norse


def build():
    torch.manual_seed(0)
    net = norse.SequentialState(nn.Conv2d(1, 4, 5, stride=2), norse.LIFBoxCell(), nn.Flatten(),
                                nn.Linear(4 * 12 * 12, 32), norse.LIFCell(), nn.Linear(32, 10), norse.LICell())
    with torch.no_grad():
        net[0].weight.mul_(30)
        net[3].weight.mul_(30)
    return net
'''

RESNET_PY = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(Block(8), nn.AvgPool2d(2), Block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def build():
    torch.manual_seed(0)
    return Net()
'''


def _x(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 0.4


def _run(tmp_path, name, source, *flags):
    (tmp_path / f"{name}.py").write_text(source)
    out = tmp_path / name
    assert main(["adapt", str(tmp_path / f"{name}.py"), "--dataset", "mnist", "--timesteps", str(T),
                 "--check-images", "0", *flags, "--out", str(out)]) == 0, name
    model, config = load_run(out)
    return model, config


def _ns(source):
    ns = {}
    exec(source, ns)
    return ns


def test_spikingjelly_multistep_conv_net(tmp_path):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional

    model, _ = _run(tmp_path, "sj", SJ_PY)
    net = _ns(SJ_PY)["build"]().eval()
    x = _x()
    with torch.no_grad():
        functional.reset_net(net)
        want = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1))
        got = model(x, T)
    assert want.abs().sum() > 0 and torch.equal(got, want)


def test_snntorch_tutorial_mlp_with_a_step_function(tmp_path):
    pytest.importorskip("snntorch")
    from seenn.errors import ConfigError
    from seenn.interop import load_peer

    (tmp_path / "tut.py").write_text(SNNTORCH_PY)
    with pytest.raises(ConfigError, match="--step"):  # its forward runs every step at once: it cannot be stepped
        load_peer(tmp_path / "tut.py")
    model, config = _run(tmp_path, "st", SNNTORCH_PY, "--step", "step")
    assert config["model"]["framework"] == "explicit" and config["model"]["step"] == "step"
    net = _ns(SNNTORCH_PY)["build"]()
    x = _x()
    with torch.no_grad():
        want = net(x)[1]  # the membrane record [T, B, K]
        got = model(x, T)
    assert torch.equal(got, want)


def test_bare_norse_sequential_state_with_a_max_readout(tmp_path):
    pytest.importorskip("norse")
    model, config = _run(tmp_path, "norse", NORSE_PY, "--readout", "max")
    assert config["model"]["framework"] == "norse" and config["model"]["readout"] == "max"
    net = _ns(NORSE_PY)["build"]()
    x = _x()
    with torch.no_grad():
        state, outs = None, []
        for _ in range(T):
            out, state = net(x, state)
            outs.append(out)
        want = torch.stack(outs).cummax(0).values  # Norse's max-over-time decoder after each step
        got = model(x, T).cumsum(0)
    assert want.abs().sum() > 0 and torch.allclose(got, want, atol=1e-6)


def test_plain_pytorch_residual_cnn_converts_with_one_command(tiny_data, tmp_path):
    (tmp_path / "resnet.py").write_text(RESNET_PY)
    net = _ns(RESNET_PY)["build"]().eval()
    out = tmp_path / "r"
    assert main(["convert", "--network", str(tmp_path / "resnet.py"), "--dataset", "mnist", "--data-dir",
                 str(tiny_data), "--val-size", "50", "--calibration-samples", "64", "--timesteps", "64",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["name"] == "graph" and config["model"]["num_classes"] == 10
    model, _ = load_run(out)
    x = _x(64)
    with torch.no_grad():
        ann = net(x)
        snn = model(x, 64).mean(0)
    assert torch.corrcoef(torch.stack([ann.flatten(), snn.flatten()]))[0, 1] > 0.95
