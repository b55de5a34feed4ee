"""Conversion, then direct training: a converted network fine-tuned with BPTT as it is (`seenn train --init
CONVERTED`): its layers, IF neurons, thresholds and per-channel initial potentials are kept, its weights learn."""

import json

import pytest
from safetensors.torch import load_file

from seenn.cli import main


@pytest.fixture(scope="module")
def converted(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    ann, snn = root / "ann", root / "snn"
    assert main(["train", "--ann", "--model", "resnet20", "--quant-levels", "4", "--width", "0.25", "--epochs", "1",
                 "--limit", "96", "--val-size", "32", "--batch-size", "32", "--data-dir", str(tiny_data), "--quiet",
                 "--out", str(ann)]) == 0
    assert main(["convert", str(ann), "--out", str(snn), "--timesteps", "8", "--bias-correction", "2",
                 "--potential-correction", "--data-dir", str(tiny_data)]) == 0
    return snn


def test_a_converted_network_fine_tunes_as_it_is_and_resumes(converted, tiny_data, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["--data-dir", str(tiny_data), "--quiet"]
    assert main(["train", "--init", str(converted), "--timesteps", "3", "--epochs", "1", "--limit", "64",
                 "--val-size", "32", "--batch-size", "32", "--lr", "0.001", "--out", str(out), *args]) == 0
    src_cfg = json.loads((converted / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["layers"] == src_cfg["model"]["layers"]  # thresholds, resets, initial potentials: as converted
    assert cfg["training"]["model"] == "graph" and cfg["training"]["init"] == str(converted)
    assert cfg["max_timesteps"] == 8  # the converted network's own horizon, not the 3 steps it was tuned on
    assert cfg["converted_from"] == src_cfg["converted_from"]
    before, after = load_file(str(converted / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    maps = [k for k in before if k.endswith("v_init_map")]
    assert maps and all((before[k] == after[k]).all() for k in maps)  # buffers are not trained
    assert any(not (before[k] == after[k]).all() for k in before if k.endswith("weight"))  # the weights learned
    # continued for another epoch: the graph is rebuilt from the --init run, the weights from the saved state
    assert main(["train", "--resume", str(out), "--epochs", "2", *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    capsys.readouterr()
    assert main(["eval", str(out), "--data-dir", str(tiny_data), "--threshold", "0.9", "--json", "--limit", "40"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["accuracy_per_timestep"]) == 8 and 1 <= r["exit"]["avg_timesteps"] <= 8


def test_fine_tuning_refusals(converted, tiny_data, tmp_path, capsys):
    base = ["train", "--data-dir", str(tiny_data), "--quiet", "--epochs", "1", "--limit", "64", "--val-size", "32"]
    for extra, words in [(["--model", "graph"], "--init RUN"),
                         (["--init", str(converted), "--ann"], "--ann trains a QCFS ANN"),
                         (["--init", str(converted), "--dataset", "mnist"], "give --dataset fashion-mnist")]:
        out = tmp_path / f"r{len(words)}"
        assert main([*base, *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists() or not any(out.iterdir())


def test_a_hybrid_run_resumes_without_the_ann_it_started_from(converted, tiny_data, tmp_path):
    """Only a layered network needs its --init run again on --resume (for its layers); a hybrid run does not."""
    import shutil

    ann, out = tmp_path / "ann", tmp_path / "lif"
    shutil.copytree(converted.parent / "ann", ann)
    args = ["--data-dir", str(tiny_data), "--quiet"]
    assert main(["train", "--init", str(ann), "--model", "resnet20", "--width", "0.25", "--timesteps", "2",
                 "--epochs", "1", "--limit", "64", "--val-size", "32", "--batch-size", "32", "--out", str(out),
                 *args]) == 0
    shutil.rmtree(ann)
    assert main(["train", "--resume", str(out), "--epochs", "2", *args]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 2
