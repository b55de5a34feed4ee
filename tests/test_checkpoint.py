import json

import pytest
import torch

from seenn.errors import CheckpointError
from seenn.io.files import read_json
from seenn.models import build_model
from seenn.runs.store import load_run, resolve_run, save_run


def config_for(model_name="convnet", width=0.25):
    return {"dataset": "fashion-mnist", "max_timesteps": 2,
            "model": {"name": model_name, "in_channels": 1, "image_size": 28, "num_classes": 10, "width": width,
                      "surrogate": "tanh"}}


def test_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    m = build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25)
    m.neurons()[1].threshold.fill_(0.7)  # per-layer thresholds travel with the weights
    save_run(tmp_path / "run", m, config_for(), {"epochs": []})
    m2, cfg = load_run(tmp_path / "run")
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert cfg["max_timesteps"] == 2
    assert float(m2.neurons()[1].threshold) == pytest.approx(0.7)
    assert read_json(tmp_path / "run" / "metrics.json") == {"epochs": []}
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    m = build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25)
    save_run(tmp_path / "run", m, config_for())
    w = tmp_path / "run" / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_run(tmp_path / "run")
    w.write_bytes(good)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config_for(width=0.5)))
    with pytest.raises(CheckpointError, match="does not match"):
        load_run(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match="neither"):
        resolve_run(tmp_path / "missing")


def test_pickle_is_never_loaded(tmp_path):
    m = build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25)
    save_run(tmp_path / "run", m, config_for())
    torch.save(m.state_dict(), tmp_path / "run" / "model.safetensors")  # a pickle under the expected name
    with pytest.raises(CheckpointError):
        load_run(tmp_path / "run")
