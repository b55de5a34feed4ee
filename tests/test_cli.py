import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_dataset, real_data_dir

from seenn.cli import main
from seenn.runs.store import pretrained_runs


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_a_complete_run(tiny_run):
    files = sorted(p.name for p in tiny_run.iterdir())
    assert files == ["config.json", "metrics.json", "model.safetensors", "train_state.safetensors"]
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert cfg["max_timesteps"] == 3 and cfg["model"]["name"] == "convnet"
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2
    # the synthetic task is learnable: far above the 10% of chance
    assert metrics["best_val_accuracy"] > 0.5


def test_train_is_reproducible(tiny_data, tmp_path, capsys):
    args = ["train", "--data-dir", tiny_data, "--width", "0.25", "--timesteps", "2", "--epochs", "1",
            "--limit", "64", "--val-size", "32", "--quiet", "--seed", "3"]
    assert run_cli(capsys, *args, "--out", tmp_path / "a")[0] == 0
    assert run_cli(capsys, *args, "--out", tmp_path / "b")[0] == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_eval_json_schema(tiny_run, tiny_data, capsys):
    code, out, _ = run_cli(capsys, "eval", tiny_run, "--dataset", "fashion-mnist", "--split", "test",
                           "--exit", "confidence", "--threshold", "0.9", "--json", "--data-dir", tiny_data)
    assert code == 0
    r = json.loads(out)
    assert r["dataset"] == "fashion-mnist" and r["split"] == "test" and r["samples"] == 120
    assert r["max_timesteps"] == 3 and len(r["accuracy_per_timestep"]) == 3
    assert all(0 <= a <= 1 for a in r["accuracy_per_timestep"])
    assert 1 <= r["oracle_avg_timesteps"] <= 3
    e = r["exit"]
    assert e["rule"] == "confidence" and e["threshold"] == 0.9
    assert 0 <= e["accuracy"] <= 1 and 1 <= e["avg_timesteps"] <= 3
    assert len(e["exit_histogram"]) == 3 and sum(e["exit_histogram"]) == 120
    hist_avg = sum((i + 1) * c for i, c in enumerate(e["exit_histogram"])) / 120
    assert hist_avg == pytest.approx(e["avg_timesteps"])


@pytest.mark.parametrize("rule_args", [["--exit", "entropy", "--threshold", "0.5"], ["--exit", "fixed", "--timesteps", "2"],
                                       ["--exit", "oracle"]])
def test_eval_other_rules(tiny_run, tiny_data, capsys, rule_args):
    code, out, _ = run_cli(capsys, "eval", tiny_run, "--json", "--data-dir", tiny_data, "--limit", "50", *rule_args)
    assert code == 0
    r = json.loads(out)
    assert r["samples"] == 50
    if rule_args[1] == "fixed":
        assert r["exit"]["exit_histogram"] == [0, 50, 0]
        assert r["exit"]["accuracy"] == pytest.approx(r["accuracy_per_timestep"][1])
    if rule_args[1] == "oracle":
        assert r["exit"]["avg_timesteps"] == pytest.approx(r["oracle_avg_timesteps"])


def test_eval_dump_and_sweep(tiny_run, tiny_data, tmp_path, capsys):
    dump = tmp_path / "d.npz"
    code, out, _ = run_cli(capsys, "eval", tiny_run, "--json", "--sweep", "--dump", dump, "--data-dir", tiny_data,
                           "--threshold", "0.8")
    assert code == 0
    r = json.loads(out)
    d = np.load(dump, allow_pickle=False)
    assert d["step_logits"].shape == (120, 3, 10)
    assert d["labels"].shape == d["prediction"].shape == d["exit_timestep"].shape == (120,)
    assert d["score"].shape == (120, 3)
    assert d["exit_timestep"].min() >= 1 and d["exit_timestep"].max() <= 3
    assert (d["prediction"] == d["labels"]).mean() == pytest.approx(r["exit"]["accuracy"])
    sweep = r["sweep"]
    assert len(sweep) >= 5
    steps = [row["avg_timesteps"] for row in sweep]
    assert steps == sorted(steps)  # a higher threshold never exits earlier
    # the table form
    code, out, _ = run_cli(capsys, "eval", tiny_run, "--sweep", "--data-dir", tiny_data, "--limit", "30")
    assert code == 0 and "threshold" in out and "avg steps" in out


def test_user_mistakes_give_one_line_and_exit_2(tiny_run, tiny_data, tmp_path, capsys):
    cases = [
        ["eval", tmp_path / "nope"],
        ["eval", tiny_run, "--threshold", "1.5", "--data-dir", tiny_data],
        ["eval", tiny_run, "--exit", "fixed", "--data-dir", tiny_data],
        ["eval", tiny_run, "--exit", "fixed", "--timesteps", "9", "--data-dir", tiny_data],
        ["eval", tiny_run, "--data-dir", tmp_path],  # no dataset there
        ["eval", tiny_run, "--limit", "0", "--data-dir", tiny_data],
        ["train", "--data-dir", tiny_data, "--epochs", "0", "--out", tmp_path / "r"],
        ["train", "--data-dir", tiny_data, "--model", "nope", "--out", tmp_path / "r"],
    ]
    for args in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 2, args
        assert err.startswith("seenn: error: ") and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "r").exists()


def test_dump_never_half_written(tiny_run, tiny_data, tmp_path, capsys):
    dump = tmp_path / "d.npz"
    dump.write_bytes(b"previous")
    code, _, _ = run_cli(capsys, "eval", tiny_run, "--dump", dump, "--threshold", "7", "--data-dir", tiny_data)
    assert code == 2 and dump.read_bytes() == b"previous"


def test_subprocess_error_has_no_traceback(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "seenn", "eval", str(tmp_path / "missing")], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.startswith("seenn: error:")


def test_pretrained_lists_shipped_runs(capsys):
    code, out, _ = run_cli(capsys, "pretrained", "--json")
    assert code == 0
    runs = json.loads(out)
    assert runs == pretrained_runs()
    for r in runs:
        assert set(r) >= {"name", "dataset", "max_timesteps", "path"}


@needs_dataset("fashion-mnist")
@pytest.mark.skipif(not any(r["dataset"] == "fashion-mnist" for r in pretrained_runs()), reason="no shipped run")
def test_demo_on_shipped_run(capsys):
    code, out, _ = run_cli(capsys, "demo", "--json", "--limit", "1000", "--data-dir", real_data_dir())
    assert code == 0
    r = json.loads(out)
    assert r["samples"] == 1000 and len(r["exits"]) >= 4
    assert r["accuracy_per_timestep"][-1] > 0.85
    code, out, _ = run_cli(capsys, "demo", "--limit", "500", "--data-dir", real_data_dir())
    assert code == 0 and "t=1" in out and "oracle" in out


def test_bench_json(tiny_run, tiny_data, capsys):
    code, out, _ = run_cli(capsys, "bench", tiny_run, "--json", "--data-dir", tiny_data, "--batch-size", "32",
                           "--threshold", "0.5", "--repeats", "1", "--latency-samples", "5", "--limit", "64")
    assert code == 0
    r = json.loads(out)
    for key in ("batch_size", "max_timesteps", "avg_timesteps", "full_seconds", "early_exit_seconds", "speedup",
                "ideal_speedup", "efficiency"):
        assert isinstance(r[key], (int, float)), key
    assert r["batch_size"] == 32 and 1 <= r["avg_timesteps"] <= 3
    assert r["ideal_speedup"] == pytest.approx(3 / r["avg_timesteps"])
    assert set(r["batch1_latency_ms"]) == {"full", "early_exit"}
    paths = r["batch1_full_ms_by_path"]
    assert set(paths) == {"multistep", "step_loop", "runner"}
    assert r["batch1_latency_ms"]["full"] <= min(paths.values())  # per sample the fastest path: a lower median
    assert set(r["samples_per_second"]) == {"full", "early_exit", "streaming"}
    code, _, err = run_cli(capsys, "bench", tiny_run, "--batch-size", "0", "--data-dir", tiny_data)
    assert code == 2 and err.count("\n") == 1


def test_fine_tuning_from_a_run(tiny_run, tiny_data, tmp_path, capsys):
    base = ["train", "--data-dir", tiny_data, "--timesteps", "3", "--epochs", "1", "--limit", "64", "--val-size", "60",
            "--quiet", "--init", tiny_run, "--exit-aware", "0.5"]
    assert run_cli(capsys, *base, "--width", "0.25", "--out", tmp_path / "ft")[0] == 0
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["training"]["init"] == str(tiny_run) and cfg["training"]["exit_aware"] == 0.5
    code, _, err = run_cli(capsys, *base, "--width", "0.5", "--out", tmp_path / "bad")
    assert code == 2 and "another shape" in err


def test_ann_train_convert_eval_and_refusals(tiny_data, tmp_path, capsys):
    """seenn train --ann writes an ANN run; eval reports its accuracy; convert makes an ordinary SNN run that
    eval (every rule) and bench accept; the mistakes around it are one-line errors."""
    ann, snn = tmp_path / "ann", tmp_path / "snn"
    code, _, _ = run_cli(capsys, "train", "--ann", "--quant-levels", "4", "--data-dir", tiny_data, "--width", "0.25",
                         "--epochs", "2", "--limit", "200", "--val-size", "60", "--quiet", "--out", ann)
    assert code == 0
    cfg = json.loads((ann / "config.json").read_text())
    assert cfg["kind"] == "ann" and cfg["model"]["neuron"] == "qcfs" and cfg["model"]["quant_levels"] == 4
    code, out, _ = run_cli(capsys, "eval", ann, "--json", "--data-dir", tiny_data)
    r = json.loads(out)
    assert code == 0 and r["kind"] == "ann" and r["accuracy"] > 0.5  # the synthetic task is learnable
    assert run_cli(capsys, "convert", ann, "--out", snn, "--timesteps", "16")[0] == 0
    scfg = json.loads((snn / "config.json").read_text())
    assert scfg["max_timesteps"] == 16 and scfg["model"]["name"] == "sequential"
    assert len(scfg["converted_from"]["thresholds"]) == 3
    for rule in (["--exit", "confidence", "--threshold", "0.9"], ["--exit", "fixed", "--timesteps", "16"]):
        code, out, _ = run_cli(capsys, "eval", snn, "--json", "--data-dir", tiny_data, *rule)
        r = json.loads(out)
        assert code == 0 and len(r["accuracy_per_timestep"]) == 16
    assert abs(r["exit"]["accuracy"] - json.loads(run_cli(capsys, "eval", ann, "--json", "--data-dir",
                                                          tiny_data)[1])["accuracy"]) < 0.1
    code, out, _ = run_cli(capsys, "bench", snn, "--json", "--data-dir", tiny_data, "--limit", "40",
                           "--batch-size", "20", "--threshold", "0.9", "--repeats", "1")
    assert code == 0 and json.loads(out)["max_timesteps"] == 16
    for args, msg in [(["convert", snn, "--out", tmp_path / "x"], "spiking run, not an ANN"),
                      (["convert", ann, "--out", tmp_path / "y", "--timesteps", "0"], "--timesteps"),
                      (["bench", ann, "--data-dir", tiny_data], "is an ANN run"),
                      (["export", ann, "--out", tmp_path / "a.nir"], "is an ANN run"),
                      (["train", "--ann", "--model", "sequential", "--out", tmp_path / "r"], "not one of them"),
                      (["train", "--ann", "--clip-init", "0", "--out", tmp_path / "r"], "--clip-init")]:
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)


def test_direct_training_starts_from_an_ann(tiny_data, tmp_path, capsys):
    """The path from an ANN to direct training: a QCFS ANN's weights start an LIF run of the same layout."""
    from safetensors.torch import load_file

    ann, snn = tmp_path / "ann", tmp_path / "snn"
    common = ["--data-dir", tiny_data, "--width", "0.25", "--limit", "200", "--val-size", "60", "--quiet"]
    assert run_cli(capsys, "train", "--ann", "--epochs", "2", *common, "--out", ann)[0] == 0
    assert run_cli(capsys, "train", "--init", ann, "--timesteps", "2", "--epochs", "1", "--lr", "1e-9",
                   *common, "--out", snn)[0] == 0
    a, s = load_file(str(ann / "model.safetensors")), load_file(str(snn / "model.safetensors"))
    assert torch.allclose(a["stem.0.weight"], s["stem.0.weight"], atol=1e-6)  # tiny lr: the ANN's weights
    assert s["body.0.threshold"].item() == 1.0 and a["body.0.threshold"].item() != 1.0
    metrics = json.loads((snn / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] > 0.3  # the ANN's features already work as spikes (chance is 0.1)
    code, _, err = run_cli(capsys, "train", "--init", ann, "--model", "vgg", *common, "--out", tmp_path / "x")
    assert code == 2 and "another shape" in err


PAPER_RECIPE = ("train --dataset cifar10 --model resnet19 --width 1 --timesteps 4 --loss tet --epochs 300 "
                "--batch-size 128 --lr 0.1 --precision bf16 --device cuda --out runs/cifar10-resnet19-t4")


@needs_dataset("cifar10")
def test_the_paper_scale_recipe_runs_a_few_steps_on_cpu(tmp_path):
    """The README's GPU command (ResNet-19 at full width, T = 4, TET, AMP) on CPU for a few steps: only the device,
    the size of the run, the folder and the precision changed (bf16 convolutions are about 8x slower than fp32 on
    CPUs without bf16 arithmetic, as here; bf16 training itself is tested on small nets in test_precision)."""
    from seenn.runs.store import read_config

    args = PAPER_RECIPE.replace("--device cuda", "--device cpu").replace("--epochs 300", "--epochs 1")
    args = args.replace("--precision bf16", "--precision fp32")
    args = args.replace("--batch-size 128", "--batch-size 4").replace("runs/cifar10-resnet19-t4", str(tmp_path / "r"))
    argv = args.split() + ["--limit", "4", "--val-size", "2", "--quiet", "--data-dir", str(real_data_dir())]
    assert main(argv) == 0
    cfg = read_config(tmp_path / "r")
    t = cfg["training"]
    assert (cfg["model"]["name"], cfg["model"]["width"], cfg["max_timesteps"]) == ("resnet19", 1.0, 4)
    assert (t["loss"], t["batch_size"], t["lr"]) == ("tet", 4, 0.1)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"seenn {PAPER_RECIPE}" in readme
