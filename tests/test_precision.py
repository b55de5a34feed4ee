"""Inference precision (seenn.runtime.precision): which layers read spikes, int8 convolutions exact to an integer
reference, bf16 / int8 networks close to fp32, the runner on them, and the CLI's --precision."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import mid_threshold, needs_dataset, real_data_dir
from test_engine import random_net
from torch import nn

from seenn.cli import main
from seenn.conversion import convert
from seenn.data import load_dataset
from seenn.errors import ConfigError
from seenn.exits import Confidence
from seenn.models import build_model
from seenn.runs.store import load_run, pretrained_runs
from seenn.runtime.engine import EarlyExitRunner, posthoc_exits, score_matrix
from seenn.runtime.inference import inference_model
from seenn.runtime.precision import Bf16Conv2d, Int8Conv2d, apply_precision, quantize_weight, spike_grids

SHIPPED = {r["name"] for r in pretrained_runs()}


def _convs(body):
    return {n for n, m in body.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize("name,channels,size", [("convnet", 1, 28), ("vgg", 3, 32), ("resnet19", 3, 32),
                                                ("resnet20", 3, 32), ("airbench", 3, 32)])
def test_every_body_convolution_of_seenns_networks_reads_spikes(name, channels, size):
    model = inference_model(random_net(name, channels, size))
    grids = spike_grids(model.body)
    assert set(grids) == _convs(model.body) and grids
    # the convnet's and VGG's convolutions read pooled spikes or spikes; the ResNets' read neurons directly
    assert {g for g in grids.values()} <= {(1.0, 1), (0.25, 4)}


def test_grids_follow_pools_gains_and_sums():
    """A converted residual net: identity shortcuts carry a gain (a scale layer), sums feed neurons; an analog
    path (a conv's output, pooled) is not a spike grid, and a convolution reading it stays out."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 10)).eval()
    snn, _ = convert(ann, input_shape=(3, 16, 16), calibration=torch.randn(16, 3, 16, 16))
    grids = spike_grids(inference_model(snn).body)
    steps = sorted(g[0] for g in grids.values())
    assert len(grids) == 2 and steps[0] == 0.25 and steps[1] == 1.0  # the pooled one and the direct one

    class Analog(nn.Module):  # conv -> pool -> conv without a neuron between: not spikes
        def __init__(self):
            super().__init__()
            self.a, self.p, self.b = nn.Conv2d(2, 2, 3), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.b(self.p(self.a(x)))

    assert spike_grids(Analog()) == {}


def _spike_input(b, c, h, grid, seed=0):
    g = torch.Generator().manual_seed(seed)
    step, count = grid
    return torch.randint(0, count + 1, (b, c, h, h), generator=g).float() * step


@pytest.mark.parametrize("grid", [(1.0, 1), (0.25, 4), (1 / 64, 64), (0.37, 2)])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_int8_convolution_equals_the_exact_integer_reference(grid, batch):
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 24, 3, padding=1, stride=1 if batch != 7 else 2)
    layer = Int8Conv2d(conv, *grid)
    x = _spike_input(batch, 16, 12, grid)
    got = layer(x)
    ref = layer.reference(x)  # integers convolved in fp64, then scaled
    assert got.dtype == torch.float32 and got.shape == F.conv2d(x, conv.weight, conv.bias, conv.stride, 1).shape
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
    # and the weight rounding is all that separates it from fp32: each weight moves by at most half its scale
    _, scale = quantize_weight(conv.weight)
    with torch.no_grad():
        fp32 = F.conv2d(x, conv.weight, conv.bias, conv.stride, 1)
        bound = F.conv2d(x.abs(), torch.ones_like(conv.weight), None, conv.stride, 1) * (scale / 2).view(1, -1, 1, 1)
    assert ((got - fp32).abs() <= bound + 1e-4).all()


def test_int8_fallback_path_is_the_same_arithmetic():
    """Where oneDNN's int8 kernel is not used (another device, a failed call) the integers are convolved in fp32:
    the same numbers within rounding."""
    torch.manual_seed(2)
    layer = Int8Conv2d(nn.Conv2d(8, 8, 3, padding=1), 0.25, 4)
    x = _spike_input(5, 8, 9, (0.25, 4))
    fast = layer(x)
    layer.__dict__["_packed"] = None  # the fallback
    slow = layer(x)
    assert torch.allclose(fast, slow, rtol=0, atol=1e-5 * slow.abs().max().item())


def test_bf16_convolution_is_within_bf16_rounding():
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = _spike_input(4, 8, 10, (1.0, 1))
    with torch.no_grad():
        want = conv(x)
    got = Bf16Conv2d(conv)(x)
    assert got.dtype == torch.float32
    assert (got - want).abs().max() <= 0.02 * want.abs().max()


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_runner_on_a_low_precision_network_equals_its_posthoc_path(precision):
    model = random_net("convnet")
    x = torch.randn(40, 1, 28, 28) * 2
    inf = inference_model(model, precision)
    assert inf.precision == precision and not any(type(m) is nn.Conv2d for m in inf.body.modules())
    with torch.no_grad():
        logits = inf(x, 4).transpose(0, 1)
    rule = Confidence(mid_threshold(score_matrix(logits, Confidence(0.5))[:, 0]))
    expected = posthoc_exits(logits, rule)
    got = EarlyExitRunner(model, rule, 4, precision=precision).predict(x)
    assert torch.equal(got.exit_timestep, expected.exit_timestep)
    assert torch.equal(got.prediction, expected.prediction)
    assert len(set(got.exit_timestep.tolist())) > 1
    # an inference copy handed to the runner keeps its precision
    assert EarlyExitRunner(inf, rule, 4).precision == precision


@needs_dataset("fashion-mnist")
@pytest.mark.skipif("fashion-mnist-convnet-t4" not in SHIPPED, reason="shipped run missing")
@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_shipped_run_keeps_its_predictions_in_low_precision(precision):
    model, cfg = load_run("fashion-mnist-convnet-t4")
    data = load_dataset("fashion-mnist", "test", limit=256, data_dir=real_data_dir())
    x = data.normalize(data.images)
    with torch.no_grad():
        fp32 = inference_model(model)(x, 4).sum(0)
        low = inference_model(model, precision)(x, 4).sum(0)
    agree = (fp32.argmax(1) == low.argmax(1)).float().mean().item()
    assert agree >= 0.98, agree
    acc = [(o.argmax(1) == data.labels).float().mean().item() for o in (fp32, low)]
    assert abs(acc[0] - acc[1]) <= 0.02, acc


def test_precision_is_refused_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="precision must be one of"):
        inference_model(random_net("convnet"), "fp16")
    from seenn.interop import adapt

    class Peer(nn.Module):
        def forward(self, x, state):
            return x.flatten(1)[:, :10], state

    with pytest.raises(ConfigError, match="runs in fp32"):
        inference_model(adapt(Peer(), "explicit"), "int8")
    with pytest.raises(ConfigError, match="batch norm folded"):
        apply_precision(build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25), "int8")


def test_cli_precision_for_eval_bench_and_calibrate(tiny_run, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEENN_DATA", str(tiny_data))
    assert main(["eval", str(tiny_run), "--precision", "int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and 0.0 <= report["exit"]["accuracy"] <= 1.0
    assert main(["bench", str(tiny_run), "--precision", "int8", "--json", "--repeats", "1", "--latency-samples", "2",
                 "--limit", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "int8"
    out = tmp_path / "cal"
    assert main(["calibrate", str(tiny_run), "--precision", "int8", "--out", str(out), "--max-accuracy-drop", "0.2",
                 "--allow-no-early-exit"]) == 0
    capsys.readouterr()
    entry = json.loads((out / "config.json").read_text())["exit"]["confidence"]
    assert entry["precision"] == "int8" and entry["calibration"]["precision"] == "int8"
    # eval runs the certified precision by default, and says so when asked for another one
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "int8"
    assert main(["eval", str(out), "--precision", "fp32"]) == 0
    assert "certified for int8; running fp32" in capsys.readouterr().err
    # a config naming an unknown precision is refused by the schema, in one line
    cfg = json.loads((out / "config.json").read_text())
    cfg["exit"]["confidence"]["precision"] = "fp16"
    (out / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", str(out)]) == 2
    assert "precision" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--precision", "fp16"]) == 2


@pytest.mark.parametrize("name,channels,size", [("convnet", 1, 28), ("resnet20", 3, 32)])
@pytest.mark.parametrize("fuse", [True, False])
def test_bf16_autocast_training_keeps_membranes_fp32_and_matches_fp32_gradients(name, channels, size, fuse,
                                                                                 monkeypatch):
    """Under --precision bf16 the convolutions and the readout run in bf16; every neuron is charged in fp32 (module
    by module and in the fused pass) and every parameter gets a finite gradient. (The gradients themselves differ
    from fp32's: at random initialisation a 0.4% change of a current flips spikes near threshold, which cascades
    through the layers; whether training reaches the same accuracy is measured in docs/benchmarks.md.)"""
    import seenn.models.base as base

    model = random_net(name, channels, size, fold=False).train()
    model.fuse = fuse
    x = torch.randn(8, channels, size, size)
    y = torch.randint(0, 10, (8,))
    seen = []
    hooks = [n.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for n in model.neurons()]
    fused = base.neuron_multistep_fused

    def spy(x, *a, **k):
        seen.append(x.dtype)
        return fused(x, *a, **k)

    monkeypatch.setattr(base, "neuron_multistep_fused", spy)
    grads = []
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x, 2)
        F.cross_entropy(out.float().mean(0), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    for h in hooks:
        h.remove()
    assert set(seen) == {torch.float32}
    assert len(grads[0]) == len(grads[1]) == sum(p.numel() for p in model.parameters())
    assert torch.isfinite(grads[1]).all() and grads[1].abs().sum() > 0


def test_train_precision_bf16_is_recorded_and_learns(tiny_data, tmp_path):
    from seenn.training.run import TrainConfig, train

    cfg = TrainConfig(dataset="fashion-mnist", model="convnet", width=0.25, timesteps=2, epochs=2, batch_size=32,
                      lr=0.05, val_size=60, seed=0, precision="bf16")
    metrics = train(cfg, tmp_path / "bf16", data_dir=tiny_data, progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["training"]["precision"] == "bf16"
    assert metrics["best_val_accuracy"] > 0.5
    with pytest.raises(ConfigError, match="fp32, bf16, auto"):
        TrainConfig(precision="int8").validate()


@pytest.mark.parametrize("native", [False, True])
def test_train_precision_auto_takes_bf16_only_where_it_is_native(tiny_data, tmp_path, monkeypatch, native):
    """``auto`` (the fast recipe's default) is resolved when the run starts; the run records the precision it trained
    in, so that its command with that precision reproduces it on any machine."""
    import seenn.training.run as training_run
    from seenn.training.run import TrainConfig, train

    monkeypatch.setattr(training_run, "native_bf16", lambda device: native)
    cfg = TrainConfig(dataset="fashion-mnist", model="convnet", width=0.25, timesteps=2, epochs=1, batch_size=32,
                      lr=0.05, val_size=60, limit=64, seed=0, precision="auto")
    train(cfg, tmp_path / "r", data_dir=tiny_data, progress=False, log=lambda m: None)
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["training"]
    assert recorded["precision"] == ("bf16" if native else "fp32")
    assert recorded["extra"]["precision_requested"] == "auto"


def test_the_fast_recipe_trains_in_auto_precision_unless_told(tmp_path):
    from seenn.cli.parser import build_parser
    from seenn.cli.train import _train_config

    common = ["train", "--recipe", "fast", "--dataset", "cifar10", "--out", str(tmp_path / "r")]
    parse = build_parser().parse_args
    assert _train_config(parse(common)).precision == "auto"
    assert _train_config(parse(common + ["--precision", "fp32"])).precision == "fp32"
    assert _train_config(parse(common[:1] + common[3:])).precision == "fp32"  # no recipe: fp32


def test_native_bf16_is_false_for_devices_it_cannot_vouch_for():
    from seenn.runtime.precision import native_bf16

    assert native_bf16("meta") is False
    assert isinstance(native_bf16("cpu"), bool)


def _eager_counts(x, v, decay, th, soft, k):
    h = x if v is None else x + decay * v
    s = (h >= th).float()
    v_new = h - s * th if soft else h - h * s
    c = F.avg_pool2d(s, k) * k * k if k > 1 else s
    return c.round().to(torch.uint8), v_new


@pytest.mark.parametrize("shape", [(7, 8, 12, 12), (3, 16, 7, 9), (1, 32, 28, 28)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("soft,k", [(False, 2), (True, 2), (False, 1), (True, 3)])
def test_native_kernel_equals_the_eager_neuron_and_pool(shape, channels_last, soft, k):
    from seenn.runtime.precision.native import kernel

    fn = kernel()
    if fn is None:
        pytest.skip("the native kernel cannot be built here (no compiler)")
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(shape, generator=g) * 2, torch.randn(shape, generator=g)
    if channels_last:
        x, v = x.contiguous(memory_format=torch.channels_last), v.contiguous(memory_format=torch.channels_last)
    for vin in (v, None):
        counts, v_new = fn(x, vin, 0.5, 1.0, soft, k)
        want_c, want_v = _eager_counts(x, vin, 0.5, 1.0, soft, k)
        assert torch.equal(counts, want_c)
        assert torch.allclose(v_new, want_v, rtol=0, atol=1e-6)
        assert v_new.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_counting_neurons_replace_neuron_and_pool_and_keep_every_decision(monkeypatch):
    """int8 copies of the convnet hand their int8 convolutions uint8 counts from the native kernel; with
    SEENN_NATIVE=0 the eager neuron and pool stay. Both give the same exits (IF neurons with v0 = theta / 2 too),
    also under continuous batching (rows joining at rest)."""
    from seenn.runtime.precision import CountingNeuron
    from seenn.runtime.precision.native import kernel

    if kernel() is None:
        pytest.skip("the native kernel cannot be built here (no compiler)")
    model = random_net("convnet")
    for n in model.neurons():  # IF with a soft reset and v0 = theta / 2 in the middle layer
        n.decay, n.soft_reset, n.v_init = (1.0, True, 0.5) if n is model.neurons()[1] else (n.decay, False, 0.0)
    x = torch.randn(40, 1, 28, 28) * 2
    fused = inference_model(model, "int8")
    assert sum(isinstance(m, CountingNeuron) for m in fused.modules()) == 2
    monkeypatch.setenv("SEENN_NATIVE", "0")
    plain = inference_model(model, "int8")
    assert not any(isinstance(m, CountingNeuron) for m in plain.modules())
    monkeypatch.delenv("SEENN_NATIVE")
    with torch.no_grad():
        logits = plain(x, 4).transpose(0, 1)
    rule = Confidence(mid_threshold(score_matrix(logits, Confidence(0.5))[:, 0]))
    want = posthoc_exits(logits, rule)
    got = EarlyExitRunner(fused, rule, 4).predict(x)
    assert torch.equal(got.exit_timestep, want.exit_timestep) and torch.equal(got.prediction, want.prediction)
    streamed = EarlyExitRunner(fused, rule, 4).stream([x[:13], x[13:29], x[29:]], slots=16)
    assert torch.equal(streamed.exit_timestep, want.exit_timestep)
    assert torch.equal(streamed.prediction, want.prediction)


def test_sum_pooling_keeps_the_step_and_multiplies_the_count():
    from seenn.models.sequential import SumPool2d
    from seenn.nn.neuron import LIF

    body = nn.Sequential(LIF(), SumPool2d(2), nn.Conv2d(4, 4, 3), LIF(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3))
    assert spike_grids(body) == {"2": (1.0, 4), "5": (0.25, 4)}
