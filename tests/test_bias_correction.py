"""Bias correction of converted SNNs (seenn.conversion.bias): it closes the gap between each neuron's mean output
over the first steps and the ANN activation it replaces, through residual sums and in chains, and is refused with
a clear message where it cannot apply."""

import json

import pytest
import torch
from _resnets import randomize_bn
from conftest import mid_threshold
from torch import nn

from seenn.conversion import ConversionError, convert
from seenn.conversion.bias import _step_rates, activation_layers, activation_means, correct_biases, feeders
from seenn.errors import ConfigError
from seenn.models import build_model


def _gaps(ann, snn, cfg, x, steps):
    """Per neuron layer: mean |ANN activation - theta * mean spikes over steps 1..steps| / theta, per channel."""
    acts = activation_layers(ann, tuple(x.shape[1:]))
    want = activation_means(ann, [n for n, _ in acts], x, tuple(x.shape[1:]))
    mods = list(snn.stem) + (list(snn.body) if cfg["name"] == "sequential" else list(snn.body.layers))
    neurons = [i for i, s in enumerate(cfg["layers"]) if s["type"] == "neuron"]
    out = []
    for k, (name, sign) in zip(neurons, acts):
        theta = cfg["layers"][k]["threshold"]
        out.append(((sign * want[name] - theta * _step_rates(snn, mods[k], x, steps, 32).mean(0)).abs().mean() / theta).item())
    return out


def test_residual_network_gap_closes():
    torch.manual_seed(0)
    steps = 2
    ann = build_model("resnet20", in_channels=3, image_size=32, num_classes=10, width=0.25, neuron="qcfs",
                      quant_levels=4)
    randomize_bn(ann).eval()
    snn, cfg = convert(ann, input_shape=(3, 32, 32))
    x = torch.randn(32, 3, 32, 32)
    before = sum(_gaps(ann, snn, cfg, x, steps))
    info = correct_biases(ann, snn, cfg, x, steps)
    after = sum(_gaps(ann, snn, cfg, x, steps))
    assert info["layers"] == 19 and info["skipped"] == 0 and info["steps"] == steps and info["samples"] == 32
    assert after < 0.85 * before, (before, after)
    # every neuron after a residual sum is corrected through the sum's convolutional branch
    f = feeders(cfg["layers"])
    assert all(cfg["layers"][j]["type"] == "conv2d" for j in f.values())


def test_chain_without_biases_gets_them_and_reloads():
    """A plain ReLU chain whose convolutions have no bias: the corrected layers get one, recorded in the config,
    and a network rebuilt from that config with the state dict gives the same outputs."""
    torch.manual_seed(1)
    ann = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 14 * 14, 10)).eval()
    x = torch.rand(48, 1, 28, 28)
    snn, cfg = convert(ann, input_shape=(1, 28, 28), calibration=x)
    assert not any(s.get("bias") for s in cfg["layers"] if s["type"] == "conv2d")
    before = sum(_gaps(ann, snn, cfg, x, 2))
    correct_biases(ann, snn, cfg, x, 2)
    assert sum(_gaps(ann, snn, cfg, x, 2)) < before
    assert all(s["bias"] for s in cfg["layers"] if s["type"] == "conv2d")
    again = build_model("sequential", in_channels=1, image_size=28, num_classes=10,
                        layers=json.loads(json.dumps(cfg["layers"])))
    again.load_state_dict(snn.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x[:8], 6), snn(x[:8], 6))


def _cumulative_gaps(ann, snn, cfg, x, steps):
    """Per neuron layer and step t in 1..steps: mean |t * ANN activation - theta * spikes so far| / theta."""
    acts = activation_layers(ann, tuple(x.shape[1:]))
    want = activation_means(ann, [n for n, _ in acts], x, tuple(x.shape[1:]))
    mods = list(snn.stem) + list(snn.body.layers)
    neurons = [i for i, s in enumerate(cfg["layers"]) if s["type"] == "neuron"]
    t = torch.arange(1, steps + 1, dtype=torch.float64).view(-1, 1)
    out = 0.0
    for k, (name, sign) in zip(neurons, acts):
        theta = cfg["layers"][k]["threshold"]
        cum = theta * _step_rates(snn, mods[k], x, steps, 32).cumsum(0)
        out += ((t * sign * want[name] - cum).abs().mean() / theta).item()
    return out


def test_potential_correction_moves_the_offset_into_the_initial_potential_and_reloads(tmp_path):
    """The cumulative output over steps 1..S is fitted as rate x t + offset: with the offset in per-channel
    initial potentials the cumulative gap to the ANN closes further than with biases alone; the potentials are
    weights (saved and read back through safetensors), and the runner's early exits, continuous batching
    included, equal the post-hoc exits of the full-T outputs."""
    from seenn.exits import Confidence
    from seenn.runs.store import load_run, save_run
    from seenn.runtime.engine import EarlyExitRunner, posthoc_exits, score_matrix

    torch.manual_seed(0)
    steps = 4
    ann = build_model("resnet20", in_channels=3, image_size=32, num_classes=10, width=0.25, neuron="qcfs",
                      quant_levels=4)
    randomize_bn(ann).eval()
    x = torch.randn(32, 3, 32, 32)
    gaps = {}
    for potential in (False, True):
        snn, cfg = convert(ann, input_shape=(3, 32, 32))
        info = correct_biases(ann, snn, cfg, x, steps, potential=potential)
        gaps[potential] = _cumulative_gaps(ann, snn, cfg, x, steps)
    assert gaps[True] < 0.8 * gaps[False], gaps
    assert info["potential"] and len(info["mean_offset_over_threshold"]) == 19
    neurons = [s for s in cfg["layers"] if s["type"] == "neuron"]
    assert all(s["v_init_channels"] >= 4 for s in neurons)
    maps = [m.v_init_map for m in snn.neurons()]
    assert all(((v >= 0) & (v <= 1)).all() for v in maps) and any((v != 0.5).any() for v in maps)
    config = {"seenn_version": "0", "dataset": "cifar10", "max_timesteps": 6, "model": cfg}
    save_run(tmp_path / "run", snn, config, {})
    again, _ = load_run(tmp_path / "run")
    with torch.no_grad():
        full = snn(x[:12], 6)
        assert torch.equal(again(x[:12], 6), full)
        grad_free = full.transpose(0, 1)
    rule = Confidence(mid_threshold(score_matrix(grad_free, Confidence(0.5))[:, 0]))
    expected = posthoc_exits(grad_free, rule)
    for got in (EarlyExitRunner(again, rule, 6).predict(x[:12]),
                EarlyExitRunner(again, rule, 6).stream([x[:5], x[5:12]], slots=3)):
        assert torch.equal(got.prediction, expected.prediction)
        assert torch.equal(got.exit_timestep, expected.exit_timestep)
    with pytest.raises(ConfigError, match="step by step"):
        again(x[:2], 2, multistep=True)
    x.requires_grad_(True)  # with gradients (fine-tuning) it also steps, through the same potentials
    assert torch.allclose(again(x[:12], 6).detach(), full, atol=1e-4)


def test_refusals():
    torch.manual_seed(0)
    ann = build_model("resnet20", in_channels=3, image_size=32, num_classes=10, width=0.25, neuron="qcfs",
                      quant_levels=4).eval()
    snn, cfg = convert(ann, input_shape=(3, 32, 32))
    x = torch.randn(8, 3, 32, 32)
    with pytest.raises(ConversionError, match="at least 1 step"):
        correct_biases(ann, snn, cfg, x, 0)
    with pytest.raises(ConversionError, match="at least 2 steps"):
        correct_biases(ann, snn, cfg, x, 1, potential=True)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ConversionError, match="NaN"):
        correct_biases(ann, snn, cfg, bad, 2)
    with pytest.raises(ConversionError, match=r"\[N, C, H, W\]"):
        correct_biases(ann, snn, cfg, x[0], 2)
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)).eval()
    with pytest.raises(ConversionError, match="not converted from this ANN"):
        correct_biases(other, snn, cfg, x, 2)


def test_cli_convert_with_bias_correction(tiny_data, tmp_path, capsys):
    from seenn.cli import main

    ann, snn = tmp_path / "ann", tmp_path / "snn"
    assert main(["train", "--ann", "--model", "convnet", "--quant-levels", "4", "--width", "0.25", "--epochs", "1",
                 "--limit", "96", "--val-size", "32", "--batch-size", "32", "--data-dir", str(tiny_data), "--quiet",
                 "--out", str(ann)]) == 0
    assert main(["convert", str(ann), "--out", str(snn), "--timesteps", "8", "--bias-correction", "9",
                 "--data-dir", str(tiny_data)]) == 2
    assert "--bias-correction 9 is more than the run's 8 timesteps" in capsys.readouterr().err
    assert not snn.exists()
    assert main(["convert", str(ann), "--out", str(snn), "--bias-correction", "4", "--data-dir",
                 str(tmp_path / "nowhere")]) == 2  # no training images to calibrate on: one line, nothing written
    assert "fashion-mnist" in capsys.readouterr().err and not snn.exists()
    assert main(["convert", str(ann), "--out", str(snn), "--potential-correction"]) == 2
    assert "--potential-correction goes with --bias-correction" in capsys.readouterr().err and not snn.exists()
    assert main(["convert", str(ann), "--out", str(snn), "--timesteps", "8", "--bias-correction", "4",
                 "--potential-correction", "--calibration-samples", "40", "--data-dir", str(tiny_data)]) == 0
    err = capsys.readouterr().err
    assert "biases corrected for steps 1..4 on 40 training images" in err and "initial potentials of" in err
    bc = json.loads((snn / "config.json").read_text())["converted_from"]["bias_correction"]
    assert bc["steps"] == 4 and bc["samples"] == 40 and bc["split"] == "train" and bc["layers"] >= 3
    assert bc["potential"] is True
    assert main(["eval", str(snn), "--data-dir", str(tiny_data), "--threshold", "0.9", "--json", "--limit", "20"]) == 0
    assert len(json.loads(capsys.readouterr().out)["accuracy_per_timestep"]) == 8
