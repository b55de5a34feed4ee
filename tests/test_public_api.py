"""The public face: a notebook's session using only names from ``import seenn``."""

import json

import pytest
import torch
from torch import nn

import seenn


def _loader(n, seed, batch=32):
    """A DataLoader-like list of (x, y): class k is a bright bar in row band k of a 28 x 28 image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for i, k in enumerate(y.tolist()):
        x[i, 0, 2 + 2 * k:5 + 2 * k, 4:24] = 2.0
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def test_every_public_name_resolves():
    for name in seenn.__all__:
        assert getattr(seenn, name) is not None
    with pytest.raises(AttributeError):
        seenn.no_such_name  # noqa: B018
    assert "convnet" in seenn.list_models()


def test_a_notebook_session_with_only_import_seenn(tmp_path):
    # fit a small seenn network on a DataLoader, calibrate it, run the rule it returns
    torch.manual_seed(0)
    net = seenn.build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25)
    train, val = _loader(320, 0), _loader(400, 1)
    fitted = seenn.fit(net, train, timesteps=3, epochs=2, lr=0.05, val_data=val[:4])
    assert len(fitted.history) == 2 and fitted.best_val_accuracy > 0.5
    cal = seenn.calibrate(net, val, timesteps=3, max_accuracy_drop=0.05)
    assert isinstance(cal, seenn.Calibration)
    rule = cal.rule()
    x, y = val[0]
    result = seenn.EarlyExitRunner(net, rule, 3).predict(x)
    assert isinstance(result, seenn.ExitResult) and result.exit_timestep.max() <= 3
    # save a run, load it back: the same outputs
    config = {"dataset": "mnist", "max_timesteps": 3, "model": {"name": "convnet", "in_channels": 1,
                                                                "image_size": 28, "num_classes": 10, "width": 0.25}}
    seenn.save_run(tmp_path / "run", net, config)
    run = seenn.load_run(tmp_path / "run")
    assert isinstance(run, seenn.Run)
    with torch.no_grad():
        assert torch.equal(run.model(x, 3), net(x, 3))
    model, cfg = run  # unpacks as before
    assert cfg["max_timesteps"] == 3
    # a shipped run and its own certified rule
    shipped = seenn.load_run("fashion-mnist-convnet-t4")
    out = shipped.runner().predict(torch.zeros(2, 1, 28, 28))
    assert out.prediction.shape == (2,)
    # convert a small plain-PyTorch ANN
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 14 * 14, 10)).eval()
    snn, model_config = seenn.convert(ann, input_shape=(1, 28, 28), calibration=x)
    assert isinstance(snn, seenn.SpikingNetwork) and model_config["num_classes"] == 10
    with pytest.raises(seenn.SeennError):
        seenn.fit(net, [], timesteps=3)


def test_adapt_a_spikingjelly_net_and_early_exit_a_batch():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(), layer.AvgPool2d(2), layer.Flatten(),
                        layer.Linear(4 * 14 * 14, 10), neuron.IFNode())
    peer = seenn.adapt(net)
    result = seenn.EarlyExitRunner(peer, seenn.Confidence(0.5), 4).predict(torch.rand(6, 1, 28, 28))
    assert result.prediction.shape == (6,) and (result.exit_timestep >= 1).all()


def test_library_errors_name_parameters_and_the_cli_names_flags(capsys):
    """From Python an impossible argument is named as the parameter; the command line names the flag."""
    from seenn.cli import main

    with pytest.raises(seenn.SeennError, match=r"^max_accuracy_drop must be in \(0, 1\)") as e:
        seenn.calibrate(seenn.build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25),
                        _loader(8, 0), timesteps=2, max_accuracy_drop=2.0)
    assert e.value.param == "max_accuracy_drop" and e.value.for_cli().startswith("--max-accuracy-drop must")
    with pytest.raises(seenn.SeennError, match="^threshold must be in"):
        seenn.Confidence(1.5)
    assert main(["eval", "fashion-mnist-convnet-t4", "--data-dir", "embedded", "--threshold", "1.5",
                 "--limit", "4"]) == 2
    assert capsys.readouterr().err.strip().startswith("seenn: error: --threshold must be in [0, 1]")


def test_seenn_train_runs_the_public_fit_loop(tiny_data, tmp_path, monkeypatch):
    """``seenn train`` is built on ``seenn.fit``: every epoch it trains goes through that one loop."""
    import seenn.training.run as tr
    from seenn.cli import main

    calls = []
    real = tr.fit

    def spy(model, train_data, **kw):
        calls.append(kw["epochs"])
        return real(model, train_data, **kw)

    monkeypatch.setattr(tr, "fit", spy)
    assert main(["train", "--data-dir", str(tiny_data), "--width", "0.25", "--timesteps", "2", "--epochs", "2",
                 "--limit", "64", "--val-size", "16", "--batch-size", "32", "--quiet", "--out",
                 str(tmp_path / "run")]) == 0
    assert calls == [2]
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]) == 2
