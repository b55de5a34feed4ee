import json
import math

import pytest
import torch

from seenn.analysis.calibration import (binomial_cdf, calibrate, exit_steps, expected_calibration_error,
                                        fit_temperature, fixed_sequence_test)
from seenn.cli import main
from seenn.errors import ConfigError


def test_binomial_cdf_matches_direct_sum():
    for n, p, k in [(10, 0.3, 0), (10, 0.3, 4), (25, 0.05, 2), (7, 0.9, 6), (5, 0.5, 5)]:
        direct = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
        assert binomial_cdf(k, n, p) == pytest.approx(direct, rel=1e-9)
    assert binomial_cdf(-1, 10, 0.2) == 0.0


def test_fixed_sequence_stops_at_first_failure():
    # n = 1000, alpha = 0.01: 0 or 2 false exits are rejected at delta 0.05, 20 is not
    assert fixed_sequence_test([0, 2, 20, 0], 1000, 0.01, 0.05) == 1
    assert fixed_sequence_test([30], 1000, 0.01, 0.05) == -1


def synthetic(n=6000, t=3, seed=0):
    """Step logits where confident samples are right and unconfident ones are coin flips at step 1."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    easy = torch.rand(n, generator=g) < 0.7
    logits = torch.randn(n, t, 10, generator=g) * 0.3
    idx = torch.arange(n)
    logits[idx, 0, labels] += torch.where(easy, 6.0, 0.2)
    for step in range(1, t):
        logits[idx, step, labels] += 2.0  # later steps make everyone right
    return logits, labels


@pytest.mark.parametrize("per_step", [False, True])
def test_calibration_keeps_its_promise_on_fresh_data(per_step):
    val_logits, val_labels = synthetic(seed=1)
    res = calibrate(val_logits, val_labels, max_accuracy_drop=0.01, confidence_level=0.95, per_step=per_step)
    assert res["validation_false_exits"] / res["certified_samples"] <= 0.01
    assert res["validation_avg_timesteps"] < 1.6  # the easy 70% leave at step 1
    test_logits, test_labels = synthetic(seed=2)
    th = torch.tensor(res["thresholds"] if per_step else [res["threshold"]] * 3, dtype=torch.double)
    summed = test_logits.cumsum(1)
    scores = torch.softmax(summed.double(), -1).amax(-1)
    t = exit_steps(scores, th)
    right_exit = summed[torch.arange(len(t)), t].argmax(1) == test_labels
    right_full = summed[:, -1].argmax(1) == test_labels
    assert right_full.double().mean() - right_exit.double().mean() <= 0.01


def test_too_few_samples_certify_nothing():
    logits, labels = synthetic(n=100)
    res = calibrate(logits, labels, max_accuracy_drop=0.001, confidence_level=0.95)
    assert res["threshold"] == 1.0 and "note" in res and res["validation_avg_timesteps"] == 3


def test_temperature_fit_recovers_known_temperature():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 1, 5, generator=g) * 3
    labels = torch.multinomial(torch.softmax(z[:, 0] / 2.0, -1), 1, generator=g).squeeze(1)
    assert fit_temperature(z, labels) == pytest.approx(2.0, rel=0.1)


def test_ece():
    conf = torch.tensor([0.9] * 10)
    assert expected_calibration_error(conf, torch.tensor([True] * 9 + [False])) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(conf, torch.tensor([False] * 10)) == pytest.approx(0.9)


def test_bad_arguments():
    logits, labels = synthetic(n=50)
    with pytest.raises(ConfigError):
        calibrate(logits, labels, max_accuracy_drop=0.0)
    with pytest.raises(ConfigError):
        calibrate(logits, labels, max_accuracy_drop=0.01, confidence_level=1.0)


def test_calibrate_cli_writes_config_and_eval_uses_it(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "calibrated"
    code = main(["calibrate", str(tiny_run), "--data-dir", str(tiny_data), "--max-accuracy-drop", "0.2",
                 "--confidence-level", "0.9", "--out", str(out), "--json", "--temperature"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    stored = cfg["exit"]["confidence"]
    assert stored["threshold"] == res["threshold"] and stored["temperature"] == res["temperature"]
    assert (out / "model.safetensors").read_bytes() == (tiny_run / "model.safetensors").read_bytes()
    assert main(["eval", str(out), "--data-dir", str(tiny_data), "--json", "--limit", "20"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["exit"]["threshold"] == pytest.approx(res["threshold"])
    # the test split is refused
    assert main(["calibrate", str(tiny_run), "--split", "test", "--data-dir", str(tiny_data)]) == 2


def test_calibrated_threshold_keeps_its_promise_on_the_real_test_split():
    from conftest import real_data_dir

    from seenn.analysis.evaluate import Evaluation
    from seenn.data import load_dataset
    from seenn.exits import Confidence
    from seenn.runs.store import load_run, pretrained_runs

    root = real_data_dir()
    if root is None or not (root / "fashion-mnist").is_dir() or not any(
            r["name"] == "fashion-mnist-convnet-t4" for r in pretrained_runs()):
        pytest.skip("needs Fashion-MNIST and the shipped run")
    model, config = load_run("fashion-mnist-convnet-t4")
    val = Evaluation(model, load_dataset("fashion-mnist", "val", data_dir=root), 4)
    test = Evaluation(model, load_dataset("fashion-mnist", "test", data_dir=root), 4)
    target = 0.005
    c = calibrate(val.step_logits, val.labels, max_accuracy_drop=target, confidence_level=0.95)
    assert c["threshold"] < 1.0  # something was certified
    e = test.summarize({}, test.run(Confidence(c["threshold"])))
    full = test.header()["accuracy_per_timestep"][-1]
    assert full - e["accuracy"] <= target
    assert e["false_exits"] / 10000 <= target
    assert e["avg_timesteps"] < 2.0  # and it buys real savings


def test_the_disagreement_bound_a_live_audit_tests():
    from seenn.analysis.calibration import binomial_cdf, binomial_upper_bound, calibrate

    b = binomial_upper_bound(0, 100, 0.05)
    assert abs(b - (1 - 0.05 ** (1 / 100))) < 1e-9  # k = 0: 1 - delta^(1/n), about 3/n
    b = binomial_upper_bound(7, 1000, 0.05)
    assert 0.007 < b < 0.02 and abs(binomial_cdf(7, 1000, b) - 0.05) < 1e-6
    assert binomial_upper_bound(5, 5, 0.05) == 1.0
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(600, 4, 5, generator=g)
    labels = torch.randint(0, 5, (600,), generator=g)
    logits[torch.arange(600), :, labels] += 1.5
    out = calibrate(logits, labels, max_accuracy_drop=0.05)
    assert out["validation_disagreements"] >= out["validation_false_exits"]
    assert out["disagreement_bound"] >= out["validation_disagreements"] / 600


def test_temperature_is_chosen_on_one_half_and_the_threshold_certified_on_the_other():
    val_logits, val_labels = synthetic(seed=3)
    res = calibrate(val_logits * 4.0, val_labels, max_accuracy_drop=0.01, confidence_level=0.95, temperature=True)
    n = len(val_labels)
    assert res["path_fit_samples"] == n // 2 and res["certified_samples"] == n - n // 2
    assert "temperature_nll" in res and res["temperature"] > 0
    assert res["validation_false_exits"] / res["certified_samples"] <= 0.01
    test_logits, test_labels = synthetic(seed=4)
    summed = test_logits.cumsum(1) * 4.0
    scores = torch.softmax(summed.double() / res["temperature"], -1).amax(-1)
    t = exit_steps(scores, torch.tensor([res["threshold"]] * 3, dtype=torch.double))
    right_exit = summed[torch.arange(len(t)), t].argmax(1) == test_labels
    right_full = summed[:, -1].argmax(1) == test_labels
    assert right_full.double().mean() - right_exit.double().mean() <= 0.01
