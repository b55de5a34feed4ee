"""ANN-to-SNN conversion: QCFS, IF equivalence, BN folding, chains from user modules, runs, errors."""

import hashlib

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_dataset, real_data_dir
from torch import nn

from seenn.conversion import ConversionError, convert, convert_run
from seenn.nn.neuron import IF
from seenn.nn.qcfs import QCFS
from seenn.runs.store import pretrained_runs


def test_qcfs_hand_values_and_straight_through_gradient():
    q = QCFS(levels=4, threshold=2.0)  # step 0.5, shift half a step
    x = torch.tensor([-1.0, 0.2, 0.26, 0.74, 1.3, 1.99, 5.0], requires_grad=True)
    y = q(x)
    assert y.tolist() == [0.0, 0.0, 0.5, 0.5, 1.5, 2.0, 2.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # inside the clip range only
    assert q.threshold.grad.item() != 0.0  # the clip value learns


@pytest.mark.parametrize("levels,threshold", [(4, 1.0), (8, 3.5), (16, 0.7)])
def test_if_neuron_reproduces_qcfs_at_t_equals_l(levels, threshold):
    """The QCFS theorem: an IF neuron with threshold lam, reset by subtraction and v0 = lam/2, driven by a constant
    input x for L steps, fires exactly L * qcfs(x) / lam times."""
    x = torch.linspace(-0.5, threshold * 1.3, 997)
    want = QCFS(levels, threshold)(x).detach()
    n = IF(threshold=threshold, v_init=0.5)
    n.reset()
    count = sum(n(x) for _ in range(levels))
    assert torch.allclose(count * threshold / levels, want, atol=1e-5)


def _random_bn(bn):
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return bn


def test_bn_folding_is_exact():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), _random_bn(nn.BatchNorm2d(6)), QCFS(8, 2.0),
                        nn.Flatten(), nn.Linear(6 * 8 * 8, 16), _random_bn(nn.BatchNorm1d(16)), QCFS(8, 2.0),
                        nn.Linear(16, 5)).eval()
    snn, cfg = convert(ann, input_shape=(3, 8, 8))
    x = torch.randn(32, 3, 8, 8)
    assert torch.allclose(snn.stem(x), ann[1](ann[0](x)), atol=1e-5)  # conv + BN = one conv with a bias
    lin = snn.body[2]  # after the neuron and flatten; its weights carry the first threshold (2.0)
    h = torch.randn(32, 6 * 8 * 8)
    assert torch.allclose(lin(h / 2.0), ann[5](ann[4](h)), atol=1e-5)
    assert [s["type"] for s in cfg["layers"]] == ["conv2d", "neuron", "flatten", "linear", "neuron", "linear"]


def test_relu_ann_from_a_user_module_converges_to_the_ann():
    """A plain PyTorch module (functional ReLU, view-flatten) traced with torch.fx; ReLU thresholds from
    calibration data; the SNN's average output approaches the ANN's as T grows."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), _random_bn(nn.BatchNorm2d(8))
            self.pool = nn.AvgPool2d(2)
            self.fc = nn.Linear(8 * 7 * 7, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.b1(self.c1(x))))
            return self.fc(x.view(x.size(0), -1))

    ann = Net().eval()
    x = torch.rand(64, 1, 14, 14)
    snn, _ = convert(ann, input_shape=(1, 14, 14), calibration=x, percentile=100.0)
    with torch.no_grad():
        want = ann(x)
        errs = [(snn(x, t).mean(0) - want).abs().mean().item() for t in (8, 64, 256)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.01 * want.abs().mean().item() + 1e-3


def test_refusals_name_the_layer():
    with pytest.raises(ConversionError, match="MaxPool2d at 2 .*AvgPool2d"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 3), QCFS(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(72, 10)),
                input_shape=(1, 14, 14))
    with pytest.raises(ConversionError, match="unsupported layer GELU at 1"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.Flatten(), nn.Linear(288, 10)),
                input_shape=(1, 14, 14))
    with pytest.raises(ConversionError, match="calibration"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 10)),
                input_shape=(1, 14, 14))
    with pytest.raises(ConversionError, match="BatchNorm2d at 2 does not follow"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 3), QCFS(), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(288, 10)),
                input_shape=(1, 14, 14))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.c(x) + x

    with pytest.raises(ConversionError, match="no ReLU or QCFS"):  # residual sums convert; this has no neuron
        convert(Residual(), input_shape=(1, 4, 4))

    class MaxF(nn.Module):
        def forward(self, x):
            return F.max_pool2d(x, 2)

    with pytest.raises(ConversionError, match="max_pool2d.*AvgPool2d.*replace_maxpool"):
        convert(MaxF(), input_shape=(1, 4, 4))


@needs_dataset("mnist")
def test_converted_mnist_snn_approaches_the_ann(tmp_path):
    """A QCFS ANN trained briefly on real MNIST, converted: the SNN's accuracy rises with T and is within 1 point
    of the ANN's at T=64 (on 1,000 test images)."""
    from seenn.data import load_dataset
    from seenn.training.run import TrainConfig, train

    data_dir = real_data_dir()
    cfg = TrainConfig(dataset="mnist", model="convnet", width=0.5, epochs=1, batch_size=64, limit=6000,
                      val_size=1000, ann=True, quant_levels=8, lr=0.05)
    train(cfg, tmp_path / "ann", data_dir=data_dir, progress=False, log=lambda *a: None)
    config = convert_run(tmp_path / "ann", tmp_path / "snn", timesteps=64)
    assert config["max_timesteps"] == 64 and config["converted_from"]["run"] == "ann"
    assert config["converted_from"]["sha256"] == hashlib.sha256((tmp_path / "ann/model.safetensors").read_bytes()
                                                                ).hexdigest()  # which weights, where paths differ
    from seenn.runs.store import load_run

    ann, _ = load_run(tmp_path / "ann")
    snn, _ = load_run(tmp_path / "snn")
    test = load_dataset("mnist", "test", data_dir=data_dir, limit=1000)
    with torch.no_grad():
        ann_acc = (ann.ann_forward(test.normalize(test.images)).argmax(1) == test.labels).float().mean().item()
        summed = snn(test.normalize(test.images), 64).cumsum(0)
    acc = [(summed[t - 1].argmax(1) == test.labels).float().mean().item() for t in (4, 16, 64)]
    assert ann_acc > 0.9
    assert acc[0] < acc[2] and abs(acc[2] - ann_acc) <= 0.01, (ann_acc, acc)


SHIPPED = {"cifar10-resnet20-qcfs4-t64": ("graph", 100, 32), "cifar10-airbench-qcfs4-t32": ("sequential", 60, 12)}


@needs_dataset("cifar10")
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_converted_run(name):
    """The shipped converted CIFAR-10 runs (a chain, a residual network, and that residual network fine-tuned with
    BPTT, and the airbench network): strong at full T, and the runner with the calibrated rule exits exactly where
    the post-hoc evaluation says, in far fewer than T steps."""
    from seenn.data import load_dataset
    from seenn.exits import Confidence
    from seenn.runs.store import load_run
    from seenn.runtime.engine import EarlyExitRunner, posthoc_exits, step_logits
    from seenn.runtime.inference import inference_model

    if not any(r["name"] == name for r in pretrained_runs()):
        pytest.skip(f"{name} is not shipped")
    kind, limit, max_avg = SHIPPED[name]
    model, config = load_run(name)
    t_max = config["max_timesteps"]
    assert t_max in (32, 64) and config["model"]["name"] == kind
    data = load_dataset("cifar10", "test", data_dir=real_data_dir(), limit=limit)
    logits = step_logits(inference_model(model), data, t_max)  # what seenn eval runs
    assert (logits.sum(1).argmax(1) == data.labels).float().mean() > 0.8
    stored = config["exit"]["confidence"]
    rule = Confidence(stored["threshold"], temperature=stored["temperature"])
    expected = posthoc_exits(logits, rule)
    got = EarlyExitRunner(model, rule, t_max).predict_dataset(data, batch_size=50)
    assert torch.equal(got.prediction, expected.prediction)
    assert torch.equal(got.exit_timestep, expected.exit_timestep)
    assert got.exit_timestep.float().mean() < max_avg


def test_a_shipped_ann_is_found_by_name_and_converts(tiny_data, tmp_path, monkeypatch, capsys):
    """An ANN under pretrained/ann/ is no spiking run (seenn pretrained lists it apart) but seenn convert and
    seenn train --init take its name; a name that is neither says what is shipped."""
    import json

    from seenn.cli import main
    from seenn.errors import CheckpointError
    from seenn.runs import store
    from seenn.training.run import TrainConfig, train

    anns = tmp_path / "pretrained" / "ann"
    cfg = TrainConfig(dataset="mnist", model="convnet", width=0.25, epochs=1, batch_size=32, lr=0.05, val_size=60,
                      ann=True, quant_levels=4, seed=0)
    train(cfg, anns / "tiny-qcfs4", data_dir=tiny_data, progress=False, log=lambda m: None)
    monkeypatch.setattr(store, "PRETRAINED_ANN_DIR", anns)
    assert store.resolve_run("tiny-qcfs4") == anns / "tiny-qcfs4"
    assert [r["name"] for r in store.pretrained_anns()] == ["tiny-qcfs4"]
    assert "tiny-qcfs4" not in [r["name"] for r in store.pretrained_runs()]
    assert main(["pretrained", "--ann", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"name": "tiny-qcfs4", "dataset": "mnist", "kind": "ann", "quant_levels": 4,
                       "path": str(anns / "tiny-qcfs4")}]
    config = convert_run("tiny-qcfs4", tmp_path / "snn", timesteps=8)
    assert config["max_timesteps"] == 8
    with pytest.raises(CheckpointError, match="tiny-qcfs4"):
        store.resolve_run("no-such-run")


@needs_dataset("cifar10")
def test_shipped_anns_are_strong_and_convert(tmp_path):
    """Each shipped QCFS ANN loads by name, is strong on real test images, and converts (by name) into an SNN
    that is strong too after a few steps."""
    from seenn.data import load_dataset
    from seenn.runs.store import load_run, pretrained_anns

    anns = pretrained_anns()
    if not anns:
        pytest.skip("no ANN is shipped")
    data = load_dataset("cifar10", "test", data_dir=real_data_dir(), limit=200)
    for r in anns:
        model, config = load_run(r["name"])
        assert config["training"]["ann"] and config["max_timesteps"] is None
        with torch.no_grad():
            acc = (model.ann_forward(data.normalize(data.images)).argmax(1) == data.labels).float().mean().item()
        assert acc > 0.85, (r["name"], acc)
        convert_run(r["name"], tmp_path / r["name"], timesteps=8)
        snn, _ = load_run(tmp_path / r["name"])
        with torch.no_grad():
            snn_acc = (snn(data.normalize(data.images), 8).sum(0).argmax(1) == data.labels).float().mean().item()
        assert snn_acc > 0.8, (r["name"], snn_acc)


@pytest.mark.parametrize("lam", [1.5, -1.5])
def test_one_hidden_layer_is_exact_at_t_equals_l(lam):
    """Linear -> QCFS -> Linear: the stem feeds the IF layer a constant input, so after L steps the SNN's average
    output equals the ANN's exactly, also for a clip value trained below zero (qcfs(x) = -qcfs_|lam|(-x))."""
    torch.manual_seed(1)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), QCFS(4, lam), nn.Linear(8, 3)).eval()
    snn, cfg = convert(ann, input_shape=(1, 4, 4))
    assert [s["threshold"] for s in cfg["layers"] if s["type"] == "neuron"] == [abs(lam)]
    x = torch.randn(64, 1, 4, 4) * 2
    with torch.no_grad():
        assert torch.allclose(snn(x, 4).mean(0), ann(x), atol=1e-5)



OWN_ANN_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    """A user's ANN with attributes named as seenn's own: stem, body and head (the head must not be lost)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(),
                                  nn.Linear(8 * 7 * 7, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def build():
    torch.manual_seed(0)
    return Net()
'''


def test_a_users_own_ann_converts_from_its_file_by_its_traced_graph(tiny_data, tmp_path, capsys):
    """An ANN whose attributes are called stem / body / head is traced through its forward (its head kept: a
    10-class SNN); `seenn convert --network FILE --weights W` makes a run whose SNN agrees with the ANN; an ANN
    trained on [0, 1] pixels goes in with --input-scale unit."""
    import json

    from seenn.cli import main
    from seenn.data import load_dataset
    from seenn.runs.store import load_run

    ns = {}
    exec(OWN_ANN_PY, ns)
    ann = ns["build"]()
    train = load_dataset("mnist", "train", data_dir=tiny_data, val_size=50)
    opt = torch.optim.SGD(ann.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):  # trained on unit inputs, x / 255
        for x, y in train.batches(32, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
            loss = F.cross_entropy(ann(x * train.info.std[0] + train.info.mean[0]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    ann.eval()
    snn, cfg = convert(ann, input_shape=(1, 28, 28), calibration=torch.rand(16, 1, 28, 28))
    assert cfg["num_classes"] == 10 and cfg["layers"][-1]["type"] == "linear"
    (tmp_path / "ann.py").write_text(OWN_ANN_PY)
    torch.save(ann.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "snn"
    assert main(["convert", "--network", str(tmp_path / "ann.py"), "--weights", str(tmp_path / "w.pt"), "--dataset",
                 "mnist", "--input-scale", "unit", "--data-dir", str(tiny_data), "--timesteps", "32",
                 "--calibration-samples", "64", "--val-size", "50", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "input: unit" in err
    config = json.loads((out / "config.json").read_text())
    assert config["converted_from"]["input"]["scale"] == "unit" and len(config["converted_from"]["sha256"]) == 64
    model, _ = load_run(out)
    test = load_dataset("mnist", "test", data_dir=tiny_data)
    x = test.normalize(test.images)
    with torch.no_grad():
        want = ann(x * test.info.std[0] + test.info.mean[0]).argmax(1)
        got = model(x, 32).sum(0).argmax(1)
    assert (want == test.labels).float().mean() > 0.9
    assert (got == want).float().mean() > 0.9
    # one of run / --network; --weights only with --network
    assert main(["convert", "--out", str(tmp_path / "x")]) == 2
    assert main(["convert", str(out), "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "y")]) == 2
