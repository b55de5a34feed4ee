"""torchrun with 2 CPU processes (gloo): training matches one process with the same global batch, and a sharded
evaluation gives exactly the single-process report."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from seenn.cli import main

TRAIN = ["train", "--width", "0.25", "--timesteps", "2", "--epochs", "2", "--limit", "192", "--val-size", "40",
         "--batch-size", "32", "--quiet", "--seed", "1"]


def torchrun(args, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                        "-m", "seenn", *args], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    torchrun([*TRAIN, "--data-dir", str(tiny_data), "--out", str(root / "ddp")])
    assert main([*TRAIN, "--data-dir", str(tiny_data), "--out", str(root / "one")]) == 0
    return root / "one", root / "ddp"


def test_two_processes_match_one_with_the_same_global_batch(two_runs):
    one, ddp = (load_file(str(r / "model.safetensors")) for r in two_runs)
    assert one.keys() == ddp.keys()
    for k in one:
        assert torch.allclose(one[k].double(), ddp[k].double(), atol=1e-4, rtol=1e-4), k
    metrics = json.loads((two_runs[1] / "metrics.json").read_text())
    assert metrics["processes"] == 2


def test_sharded_eval_equals_single_process(two_runs, tiny_data, capsys):
    run = two_runs[0]
    common = ["eval", str(run), "--data-dir", str(tiny_data), "--json", "--threshold", "0.5"]
    sharded = json.loads(torchrun(common))
    assert main(common) == 0
    single = json.loads(capsys.readouterr().out)
    sharded.pop("seconds"), single.pop("seconds")
    assert sharded == single


def test_batch_must_split_across_processes(tiny_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "seenn", *[a if a != "32" else "33" for a in TRAIN], "--data-dir", str(tiny_data),
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode != 0 and "multiple of the 2 processes" in p.stderr
