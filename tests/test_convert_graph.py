"""Conversion of residual networks (torch.fx graphs): torchvision-style ResNets with basic and bottleneck blocks,
seenn's ResNet-20, exactness of every supported layer, refusals, and the converted graph under the runner."""

import pytest
import torch
import torch.nn.functional as F
from _resnets import randomize_bn, resnet18, resnet34, resnet50
from conftest import mid_threshold
from torch import nn

from seenn.conversion import ConversionError, convert, replace_maxpool
from seenn.exits import Confidence
from seenn.models import build_model
from seenn.nn.qcfs import QCFS
from seenn.runtime.engine import EarlyExitRunner, posthoc_exits, score_matrix
from seenn.runtime.inference import inference_model


def _relative_errors(ann, snn, x, steps):
    with torch.no_grad():
        want = ann(x)
        return [((snn(x, t).mean(0) - want).abs().mean() / want.abs().mean()).item() for t in steps]


@pytest.mark.parametrize("make,adds", [(resnet18, 8), (resnet50, 16)])
def test_torchvision_style_resnets_approach_their_ann(make, adds):
    """Basic and bottleneck blocks, projection and identity shortcuts, BN folded everywhere (also in the
    shortcuts), ReLU thresholds from calibration: the SNN's average output approaches the ANN's as T grows."""
    torch.manual_seed(0)
    ann = randomize_bn(make(width=8)).eval()
    with pytest.raises(ConversionError, match="MaxPool2d at maxpool.*AvgPool2d.*replace_maxpool.*fine-tune"):
        convert(ann, input_shape=(3, 32, 32))
    replace_maxpool(ann)
    x = torch.randn(48, 3, 32, 32)
    snn, cfg = convert(ann, input_shape=(3, 32, 32), calibration=x, percentile=100.0)
    assert cfg["name"] == "graph" and sum(s["type"] == "add" for s in cfg["layers"]) == adds
    assert not any(s["type"] == "batchnorm" for s in cfg["layers"])
    errs = _relative_errors(ann, snn, x, (16, 64, 256))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.02, errs


def test_resnet34_and_the_real_torchvision_when_it_imports():
    ann = replace_maxpool(randomize_bn(resnet34(width=4)).eval())
    x = torch.randn(8, 3, 32, 32)
    snn, cfg = convert(ann, input_shape=(3, 32, 32), calibration=x)
    assert sum(s["type"] == "add" for s in cfg["layers"]) == 16
    try:
        import torchvision
    except Exception as e:  # not installed, or its PyPI build without CUDA-enabled PyTorch
        pytest.skip(f"torchvision does not import here ({type(e).__name__})")
    for make in (torchvision.models.resnet18, torchvision.models.resnet34):
        tv = replace_maxpool(randomize_bn(make(num_classes=10)).eval())
        convert(tv, input_shape=(3, 64, 64), calibration=torch.randn(4, 3, 64, 64))


def test_every_stateless_layer_converts_exactly():
    """Only one layer of neurons, fed a constant current by the stem: at T = L the SNN's average output equals
    the ANN's exactly, through BN folded into both branches of a residual sum (a projection shortcut and an
    identity one carrying the spike amplitude), average and adaptive pooling and flatten."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.bn0 = nn.Conv2d(2, 4, 3, padding=1, bias=False), randomize_bn(nn.BatchNorm2d(4))
            self.q = QCFS(4, 1.7)
            self.conv, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), randomize_bn(nn.BatchNorm2d(4))
            self.proj = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), randomize_bn(nn.BatchNorm2d(4)))
            self.pool, self.gap = nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2)
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            s = self.q(self.bn0(self.stem(x)))
            y = self.bn1(self.conv(s)) + self.proj(s) + s  # two sums: projection and identity shortcut
            y = self.gap(self.pool(y))
            return self.fc(self.drop(torch.flatten(y, 1)))

    ann = Net().eval()
    snn, cfg = convert(ann, input_shape=(2, 8, 8))
    kinds = [s["type"] for s in cfg["layers"]]
    assert kinds.count("add") == 2 and kinds.count("scale") == 1 and kinds.count("neuron") == 1
    x = torch.randn(16, 2, 8, 8) * 2
    with torch.no_grad():
        assert torch.allclose(snn(x, 4).mean(0), ann(x), atol=1e-5)


def test_relu6_and_clamp_map_onto_their_clip():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            x = F.relu6(self.a(torch.flatten(x, 1)))
            return self.c(torch.clamp(self.b(x), 0, 2.5))

    _, cfg = convert(Net(), input_shape=(1, 2, 2))
    assert [s["threshold"] for s in cfg["layers"] if s["type"] == "neuron"] == [6.0, 2.5]


def test_refusals_name_the_layer_and_the_way_out():
    class BnAfterSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.bn, self.fc = nn.Conv2d(1, 1, 3, padding=1), nn.BatchNorm2d(1), nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.bn(self.c(x) + x)), 1))

    with pytest.raises(ConversionError, match="BatchNorm2d at bn does not follow"):
        convert(BnAfterSum(), input_shape=(1, 4, 4), calibration=torch.randn(4, 1, 4, 4))

    class Clamped(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.clamp(torch.flatten(x, 1), -1, 1))

    with pytest.raises(ConversionError, match=r"clamp\(x, 0, c\)"):
        convert(Clamped(), input_shape=(1, 2, 2))

    class ConvOut(nn.Module):  # logits as a [K, 1, 1] map: refused with the shape found
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(4, 10, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    with pytest.raises(ConversionError, match=r"vector of class logits.*\[10, 1, 1\]"):
        convert(ConvOut(), input_shape=(1, 2, 2), calibration=torch.randn(4, 1, 2, 2))


def test_converted_resnet20_under_the_runner():
    """seenn's own QCFS ResNet-20, converted: the runner's exits equal the post-hoc exits on the same copy, and
    dropping samples never changes the survivors' outputs (batch compaction through the residual graph)."""
    torch.manual_seed(0)
    ann = build_model("resnet20", in_channels=3, image_size=32, num_classes=10, width=0.5, neuron="qcfs",
                      quant_levels=4)
    randomize_bn(ann).eval()
    snn, cfg = convert(ann, input_shape=(3, 32, 32))
    assert cfg["name"] == "graph" and len(snn.stem) == 1  # the first convolution runs once per input
    x = torch.randn(24, 3, 32, 32)
    t_max = 8
    with torch.no_grad():
        logits = inference_model(snn)(x, t_max).transpose(0, 1)
        one_by_one = torch.stack([inference_model(snn)(x[i:i + 1], t_max)[:, 0] for i in range(3)], 1)
    assert torch.allclose(logits[:3], one_by_one.transpose(0, 1), atol=1e-4)
    scores = score_matrix(logits, Confidence(0.5))
    rule = Confidence(mid_threshold(scores[:, 1]))
    expected = posthoc_exits(logits, rule)
    got = EarlyExitRunner(snn, rule, t_max).predict(x)
    assert len(set(got.exit_timestep.tolist())) > 1
    assert torch.equal(got.exit_timestep, expected.exit_timestep)
    assert torch.equal(got.prediction, expected.prediction)


def test_resnet20_ann_trains_converts_and_evaluates_from_the_cli(tiny_data, tmp_path, capsys):
    import json

    from seenn.cli import main

    ann, snn = tmp_path / "ann", tmp_path / "snn"
    assert main(["train", "--ann", "--model", "resnet20", "--quant-levels", "4", "--width", "0.25", "--epochs", "1",
                 "--limit", "96", "--val-size", "32", "--batch-size", "32", "--data-dir", str(tiny_data), "--quiet",
                 "--out", str(ann)]) == 0
    assert main(["convert", str(ann), "--out", str(snn), "--timesteps", "8"]) == 0
    capsys.readouterr()
    cfg = json.loads((snn / "config.json").read_text())
    assert cfg["model"]["name"] == "graph" and cfg["converted_from"]["model"]["name"] == "resnet20"
    assert main(["eval", str(snn), "--data-dir", str(tiny_data), "--threshold", "0.9", "--json", "--limit", "40"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["accuracy_per_timestep"]) == 8 and 1 <= r["exit"]["avg_timesteps"] <= 8
    assert main(["energy", str(snn), "--data-dir", str(tiny_data), "--threshold", "0.9", "--limit", "20"]) == 0
    assert main(["report", str(snn), "--data-dir", str(tiny_data), "--threshold", "0.9", "--limit", "20",
                 "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").is_file()
