import json

import pytest
import torch
from torch import nn

from seenn.analysis.energy import conv_macs, count_operations, energy_report
from seenn.cli import main
from seenn.models.base import SpikingNetwork
from seenn.nn.neuron import LIF


class Tiny(SpikingNetwork):
    """stem: 3x3 conv 1->2 on 4x4 copying the image into channel 0; body: LIF, flatten, linear 32->3."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        conv.weight.data.zero_()
        conv.weight.data[0, 0, 1, 1] = 1.0
        self.stem = nn.Sequential(conv)
        self.body = nn.Sequential(LIF(), nn.Flatten(), nn.Linear(32, 3, bias=False))


class Batches:
    def __init__(self, x):
        self.x = x

    def normalize(self, images):
        return images

    @property
    def images(self):
        return self.x

    def batches(self, batch_size):
        for i in range(0, len(self.x), batch_size):
            yield self.x[i:i + batch_size], None


def test_counts_match_hand_computation():
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0, 0] = 1.5  # spikes at every step
    x[0, 0, 2, 3] = 0.6  # LIF: 0.6, 0.9, 1.05 -> spike at step 3 only
    x[1, 0, 1, 1] = 0.6  # sample 1: one spike at step 3
    c = count_operations(Tiny(), Batches(x), 4)
    assert c.stem_macs == 2 * 4 * 4 * 9  # 288, paid once
    assert c.ann_macs == 288 + 32 * 3
    # each spike reaches the 3 outputs of the linear readout
    assert c.step_acs.tolist() == [[3, 3, 6, 3], [0, 0, 3, 0]]
    assert c.spike_rates["body.0"] == pytest.approx([1 / 64, 1 / 64, 3 / 64, 1 / 64])
    rep = energy_report(c, torch.tensor([2, 4]), pj_per_ac=1.0, pj_per_mac=10.0)
    early = rep["per_sample"]["early_exit"]
    assert early["acs"] == pytest.approx((6 + 3) / 2)  # sample 0 stops after step 2, sample 1 runs all 4
    assert early["energy_uj"] == pytest.approx((288 * 10 + 4.5) * 1e-6)
    assert rep["per_sample"]["full"]["acs"] == pytest.approx((15 + 3) / 2)
    assert rep["per_sample"]["ann"]["energy_uj"] == pytest.approx(384 * 10 * 1e-6)


def test_conv_fanout_is_exact_at_borders():
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=True)
    from seenn.analysis.energy import _event_acs

    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 0] = 1  # a corner spike reaches 2x2 output positions
    x[0, 0, 2, 2] = 1  # a centre spike reaches 3x3
    assert _event_acs(conv, x).item() == (4 + 9) * 4 + 25 * 4  # plus one bias add per output
    assert conv_macs(conv, (1, 5, 5)) == 4 * 25 * 9


def test_energy_cli(tiny_run, tiny_data, capsys):
    code = main(["energy", str(tiny_run), "--data-dir", str(tiny_data), "--json", "--threshold", "0.6", "--limit", "40"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0
    ps = r["per_sample"]
    assert ps["early_exit"]["acs"] <= ps["full"]["acs"]
    assert ps["early_exit"]["macs"] == ps["full"]["macs"] < ps["ann"]["macs"]
    assert 0 < r["early_exit_vs_full"] <= 1
    assert main(["energy", str(tiny_run), "--data-dir", str(tiny_data), "--pj-per-ac", "-1"]) == 2


def test_an_adapted_networks_analog_first_layer_is_macs_once():
    """An snnTorch MLP (no stem of seenn's): its first Linear reads the image, so it costs MACs once, not
    accumulates every step; the layer after its neurons costs one AC per spike per synapse."""
    snn = pytest.importorskip("snntorch")
    from seenn.interop import adapt

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6, bias=False), snn.Leaky(beta=0.5, init_hidden=True),
                        nn.Linear(6, 3, bias=False), snn.Leaky(beta=0.5, init_hidden=True, output=True))
    with torch.no_grad():
        net[1].weight.mul_(3)
    peer = adapt(net, output=1)
    x = torch.rand(4, 1, 4, 4)
    c = count_operations(peer, Batches(x), 3)
    assert c.stem_macs == 16 * 6 and c.ann_macs == 16 * 6 + 6 * 3
    spikes = []
    from snntorch import utils

    utils.reset(net)
    with torch.no_grad():
        h = net[1](net[0](x))
        for _ in range(3):
            spikes.append(net[2](h))
    want = torch.stack([s.sum(1) * 3 for s in spikes], 1)  # each spike of layer 1 reaches 3 outputs
    assert want.sum() > 0 and torch.equal(c.step_acs, want.double())
