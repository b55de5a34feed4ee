"""Runs that survive: an interrupted run, resumed, ends with exactly the weights of an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest

from seenn.cli import main


def args(data, out, epochs=3):
    return ["train", "--data-dir", str(data), "--width", "0.25", "--timesteps", "2", "--epochs", str(epochs),
            "--limit", "256", "--val-size", "40", "--batch-size", "32", "--quiet", "--seed", "5", "--out", str(out)]


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
    import seenn.train as tr

    real = tr._train_epoch
    calls = {"n": 0}

    def interrupt_second_epoch(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    out = tmp_path / "run"
    monkeypatch.setattr(tr, "_train_epoch", interrupt_second_epoch)
    assert main(args(tiny_data, out, epochs=3)) == 130  # Ctrl-C: a clean stop, not a traceback
    monkeypatch.setattr(tr, "_train_epoch", real)
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
