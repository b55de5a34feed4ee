"""Runs that survive: an interrupted run, resumed, ends with exactly the weights of an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from seenn.cli import main


def args(data, out, epochs=3):
    return ["train", "--data-dir", str(data), "--width", "0.25", "--timesteps", "2", "--epochs", str(epochs),
            "--limit", "256", "--val-size", "40", "--batch-size", "32", "--quiet", "--seed", "5", "--out", str(out)]


def interrupted_at_second_epoch(monkeypatch, data, out, epochs: int) -> None:
    """Train with Ctrl-C arriving as the second epoch starts (a clean stop), then undo the patch."""
    import seenn.training.run as tr

    real = tr._epoch_starts
    calls = {"n": 0}

    def interrupt_second_epoch(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(tr, "_epoch_starts", interrupt_second_epoch)
    assert main(args(data, out, epochs=epochs)) == 130  # Ctrl-C: a clean stop, not a traceback
    monkeypatch.setattr(tr, "_epoch_starts", real)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert main(args(tiny_data, out)) == 0
    return out


def test_resume_after_sigkill_gives_the_same_weights(tiny_data, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS=str(__import__("torch").get_num_threads()))
    proc = subprocess.Popen([sys.executable, "-m", "seenn", *args(tiny_data, out, epochs=3)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "train_state.safetensors"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # mid-run: after at least one epoch's state, before the end
    proc.wait()
    assert state.exists()
    assert main(["train", "--resume", str(out), "--data-dir", str(tiny_data), "--quiet"]) == 0
    capsys.readouterr()
    assert (out / "model.safetensors").read_bytes() == (uninterrupted / "model.safetensors").read_bytes()


def test_ctrl_c_stops_cleanly_and_resumes_exactly(tiny_data, uninterrupted, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    interrupted_at_second_epoch(monkeypatch, tiny_data, out, epochs=3)
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err
    assert (out / "model.safetensors").exists()  # a usable run (the best epoch so far) is left behind
    assert main(["train", "--resume", str(out), "--data-dir", str(tiny_data), "--quiet"]) == 0
    assert (out / "model.safetensors").read_bytes() == (uninterrupted / "model.safetensors").read_bytes()


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    (tmp_path / "train_state.safetensors").write_bytes(b"garbage")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "seenn: error:" in capsys.readouterr().err


def test_resume_with_a_new_length_for_the_schedule(tiny_data, tmp_path, capsys, monkeypatch):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    interrupted_at_second_epoch(monkeypatch, tiny_data, out, epochs=4)
    state = out / "train_state.safetensors"
    with safe_open(str(state), "pt") as f:
        meta = f.metadata()
    assert float(meta["train_seconds"]) > 0  # the time so far travels with the state
    resume = ["train", "--resume", str(out), "--data-dir", str(tiny_data), "--quiet"]
    tensors = load_file(state)
    save_file(tensors, state, metadata={**meta, "train_seconds": "nan"})
    capsys.readouterr()
    assert main(resume) == 2 and "train_seconds nan" in capsys.readouterr().err
    save_file(tensors, state, metadata={**meta, "train_seconds": "1000.0"})  # say it was 1000 s
    assert main([*resume, "--epochs", "2"]) == 0  # shortened from 4: the schedule now ends after epoch 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert 1000 < metrics["train_seconds"] < 1000 + 600  # the resumed run's total counts the part before it
    config = json.loads((out / "config.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][0]["lr"] > 0.05 and metrics["epochs"][1]["lr"] < 1e-9
    assert config["training"]["epochs"] == 2
    assert config["training"]["extra"]["schedule_changes"] == [{"after_epoch": 1, "epochs_before": 4, "epochs": 2}]
    capsys.readouterr()
    assert main([*resume, "--epochs", "1"]) == 2  # below what has run
    assert "below the 2 epochs" in capsys.readouterr().err
    before = load_file(out / "train_state.safetensors")
    assert main([*resume, "--epochs", "3"]) == 0  # a finished run extended by one epoch, at the 3-epoch schedule's
    metrics = json.loads((out / "metrics.json").read_text())  # learning rate (not the 2-epoch one's zero)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    after = load_file(out / "train_state.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.") and "weight" in k)
