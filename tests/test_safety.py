"""The main job runs offline, no command destroys a run, every size is bounded, every file is read through one
typed schema: each class of mistake is tried (families of inputs with hypothesis), and must end in one line on
stderr and exit code 2 with nothing already written changed."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from seenn.cli import main
from seenn.io.schema import LIMITS

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line_error(capsys, argv) -> str:
    t0 = time.perf_counter()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.startswith("seenn: error: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert time.perf_counter() - t0 < 30, argv
    return err


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def copy_run(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


# ------------------------------------------------------------------------------------------- offline demo


def test_demo_runs_offline_on_the_embedded_test_split(tmp_path):
    """A clone-like run: empty HOME, empty SEENN_DATA, no dataset anywhere the search looks; the demo still runs."""
    (tmp_path / "home").mkdir()
    (tmp_path / "data").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "SEENN_DATA")}
    env.update(HOME=str(tmp_path / "home"), SEENN_DATA=str(tmp_path / "data"), no_proxy="*",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")  # any download would fail
    proc = subprocess.run([sys.executable, "-m", "seenn", "demo", "--limit", "300", "--json"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["samples"] == 300 and report["dataset"] == "fashion-mnist"
    assert report["accuracy_per_timestep"][-1] > 0.85  # the real test images, not a stand-in
    assert not any((tmp_path / "data").iterdir()) and not any((tmp_path / "home").iterdir())


def test_embedded_split_is_checked_against_its_checksums(tmp_path, monkeypatch):
    import seenn.data as data

    copy = tmp_path / "embedded"
    shutil.copytree(data.EMBEDDED_DIR, copy)
    monkeypatch.setattr(data, "EMBEDDED_DIR", copy)
    assert len(data.load_dataset("fashion-mnist", "test", data_dir="embedded")) == 10_000
    lic = (copy / "fashion-mnist" / "LICENSE").read_text()
    assert "MIT" in lic and "Zalando" in lic
    f = copy / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="corrupt"):
        data.load_dataset("fashion-mnist", "test", data_dir="embedded")
    with pytest.raises(data.DataError, match="only the test split"):
        data.load_dataset("fashion-mnist", "train", data_dir="embedded")


# ------------------------------------------------------------------------------------------- never lose a run


@pytest.fixture
def occupied(tmp_path):
    d = tmp_path / "occupied"
    (d / "policies" / "p").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"a 29-minute model")
    (d / "policies" / "p" / "policy.json").write_text("{}")
    return d


def test_no_command_writes_into_a_non_empty_folder_without_overwrite(tiny_run, tiny_data, occupied, capsys):
    before = snapshot(occupied)
    d = ["--data-dir", tiny_data]
    for argv in (["train", *d, "--epochs", "1", "--limit", "40", "--val-size", "10", "--out", occupied],
                 ["import", "graph.nir", "--dataset", "mnist", "--out", occupied],
                 ["convert", tiny_run, "--out", occupied],
                 ["calibrate", tiny_run, *d, "--out", occupied],
                 ["policy", "train", tiny_run, *d, "--out", occupied],
                 ["report", tiny_run, *d, "--out", occupied],
                 ["demo", "--train", *d, "--epochs", "1", "--out", occupied]):
        err = one_line_error(capsys, argv)
        assert "--overwrite" in err, (argv, err)
    assert snapshot(occupied) == before


def test_overwrite_replaces_the_whole_run(tiny_data, occupied, capsys):
    assert main(["train", "--data-dir", str(tiny_data), "--epochs", "1", "--limit", "64", "--val-size", "16",
                 "--width", "0.25", "--timesteps", "2", "--quiet", "--overwrite", "--out", str(occupied)]) == 0
    capsys.readouterr()
    assert not (occupied / "policies").exists()  # no stale policies beside new weights
    assert (occupied / "config.json").is_file() and (occupied / "model.safetensors").stat().st_size > 100


def test_convert_never_writes_onto_its_source(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    before = snapshot(run)
    for extra in ([], ["--overwrite"]):
        assert "being read" in one_line_error(capsys, ["convert", run, "--out", run, *extra])
    assert snapshot(run) == before


def test_resume_of_a_finished_run_changes_nothing(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["exit"] = {"confidence": {"threshold": 0.64, "thresholds": None, "temperature": 1.0}}  # calibrated
    (run / "config.json").write_text(json.dumps(cfg))
    before = snapshot(run)
    assert main(["train", "--resume", str(run)]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert snapshot(run) == before
    assert "no --out" in one_line_error(capsys, ["train", "--resume", run, "--out", tmp_path / "other"])
    assert not (tmp_path / "other").exists()


def _rewrite_state(run: Path, tensors=None, **meta_changes):
    from safetensors import safe_open

    path = run / "train_state.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_changes)
    state.update(tensors or {})
    save_file(state, str(path), metadata=meta)
    return state


@SETTINGS
@given(epoch=st.one_of(st.integers(-10**6, 0), st.integers(3, 10**6), st.sampled_from(["x", "1.5", "null", ""])))
def test_an_impossible_epoch_counter_is_refused(tiny_run, tmp_path_factory, capsys, epoch):
    run = copy_run(tiny_run, tmp_path_factory.mktemp("s") / "run")  # tiny_run: 2 epochs
    _rewrite_state(run, epoch=str(epoch))
    before = snapshot(run)
    one_line_error(capsys, ["train", "--resume", run])
    assert snapshot(run) == before


@SETTINGS
@given(which=st.sampled_from(["model.", "best.", "optim."]), bad=st.sampled_from([float("nan"), float("inf")]))
def test_a_state_holding_nan_is_refused_before_anything_is_written(tiny_run, tmp_path_factory, capsys, which, bad):
    run = copy_run(tiny_run, tmp_path_factory.mktemp("s") / "run")
    state = _rewrite_state(run)
    key = next(k for k in state if k.startswith(which) and state[k].is_floating_point() and state[k].numel() > 1)
    t = state[key].clone()
    t.view(-1)[0] = bad
    _rewrite_state(run, {key: t})
    before = snapshot(run)
    assert "NaN" in one_line_error(capsys, ["train", "--resume", run])
    assert snapshot(run) == before


def test_calibrate_keeps_a_working_threshold_and_copies_everything(tiny_run, tiny_data, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "policies" / "mine").mkdir(parents=True)
    (run / "policies" / "mine" / "policy.json").write_text("{}")
    cfg = json.loads((run / "config.json").read_text())
    cfg["exit"] = {"confidence": {"threshold": 0.64, "thresholds": None, "temperature": 1.0}}
    (run / "config.json").write_text(json.dumps(cfg))
    # 5 samples certify nothing at 0.5 points: the working threshold stays
    assert main(["calibrate", str(run), "--data-dir", str(tiny_data), "--limit", "5"]) == 0
    assert "kept the run's threshold 0.64" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["exit"]["confidence"]["threshold"] == 0.64
    # the copy holds everything, policies included; a staging folder left by a killed run does not block it
    (tmp_path / ".copy.staging-killed").mkdir()
    assert main(["calibrate", str(run), "--data-dir", str(tiny_data), "--out", str(tmp_path / "copy")]) == 0
    capsys.readouterr()
    assert (tmp_path / "copy" / "policies" / "mine" / "policy.json").is_file()
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    # only with the explicit flag does "never exit early" replace it
    assert main(["calibrate", str(run), "--data-dir", str(tiny_data), "--limit", "5", "--allow-no-early-exit"]) == 0
    capsys.readouterr()
    assert json.loads((run / "config.json").read_text())["exit"]["confidence"]["threshold"] == 1.0
    for split in ("train", "test"):
        assert "--split val" in one_line_error(capsys, ["calibrate", run, "--data-dir", tiny_data, "--split", split])


def test_a_killed_calibrate_leaves_no_partial_folder(tiny_run, tiny_data, tmp_path, monkeypatch, capsys):
    import seenn.cli.analysis as cli  # where seenn calibrate writes its JSON

    def boom(*a, **k):
        raise OSError(28, "No space left on device", "x")

    monkeypatch.setattr(cli, "_emit_json", boom)
    monkeypatch.setattr("seenn.analysis.calibration.write_json", boom)  # where store_in_run writes the config
    one_line_error(capsys, ["calibrate", tiny_run, "--data-dir", tiny_data, "--json", "--out", tmp_path / "c"])
    assert not (tmp_path / "c").exists() and not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- bounded sizes


@SETTINGS
@given(flag=st.sampled_from(["--timesteps", "--epochs", "--batch-size", "--quant-levels"]),
       extra=st.integers(1, 10**12))
def test_every_size_flag_of_train_is_bounded(capsys, tmp_path_factory, flag, extra):
    name = {"--timesteps": "timesteps", "--epochs": "epochs", "--batch-size": "batch_size",
            "--quant-levels": "quant_levels"}[flag]
    out = tmp_path_factory.mktemp("o") / "run"
    err = one_line_error(capsys, ["train", flag, LIMITS[name] + extra, "--out", out])
    assert str(LIMITS[name]) in err and not out.exists()


@SETTINGS
@given(width=st.one_of(st.floats(16.0001, 1e300), st.floats(-1e300, 0), st.just(float("nan"))))
def test_width_is_bounded(capsys, width):
    one_line_error(capsys, ["train", f"--width={width!r}", "--out", "never"])


@SETTINGS
@given(flag=st.sampled_from(["--max-timesteps", "--batch-size", "--limit"]), value=st.integers(10**9 + 1, 10**30))
def test_eval_sizes_are_bounded(tiny_run, capsys, flag, value):
    one_line_error(capsys, ["eval", tiny_run, flag, value])


# ------------------------------------------------------------------------------------------- one schema


CONFIG_MUTATIONS = [
    ("max_timesteps", st.sampled_from(["4", None, 2.5, 2.7, 0, -1, 10**9, True, [4]])),
    ("dataset", st.sampled_from([7, None, "imagenet", ["mnist"]])),
    ("exit", st.sampled_from([[1], "x", 3, {"confidence": {"threshold": "0.9"}},
                              {"confidence": {"threshold": 0.9, "temperature": "hot"}},
                              {"confidence": {"threshold": 0.9, "temperature": 0}},
                              {"confidence": {"thresholds": [0.5, 0.6, 0.7, 0.8, 0.9], "threshold": None}},
                              {"confidence": {"threshold": 1.5}}])),
    ("training", st.sampled_from(["x", 5, [1], {"val_size": "5"}, {"val_size": -2}])),
    ("model", st.sampled_from(["convnet", None, 1])),
    ("model.num_classes", st.sampled_from([10**12, 0, "10", 10.0, None])),
    ("model.width", st.sampled_from([1e6, 0, -1, "1", float("inf")])),
    ("model.in_channels", st.sampled_from([0, 10**9, "1"])),
    ("model.image_size", st.sampled_from([0, 10**7, 28.5])),
    ("model.name", st.sampled_from([None, 3, "resnet1000"])),
]


@SETTINGS
@given(data=st.data())
def test_config_fields_of_the_wrong_type_name_the_field(tiny_run, tmp_path_factory, capsys, data):
    field, values = data.draw(st.sampled_from(CONFIG_MUTATIONS))
    value = data.draw(values)
    run = copy_run(tiny_run, tmp_path_factory.mktemp("c") / "run")
    cfg = json.loads((run / "config.json").read_text())
    target, key = (cfg["model"], field.split(".")[1]) if field.startswith("model.") else (cfg, field)
    target[key] = value
    (run / "config.json").write_text(json.dumps(cfg))
    err = one_line_error(capsys, ["eval", run, "--limit", "5"])
    assert key in err or "thresholds" in err, (field, value, err)
    assert "missing" not in err or field == "model.name"  # wrong type is reported as wrong, not missing


def test_deep_json_and_the_policy_schema(tiny_run, tiny_data, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nested" in one_line_error(capsys, ["eval", run])
    pol = tmp_path / "pol"
    pol.mkdir()
    save_file({"w": torch.zeros(1)}, str(pol / "policy.safetensors"))
    for info in ({"kind": "magic", "max_timesteps": 3}, {"kind": "learned", "max_timesteps": "3"},
                 {"kind": "learned", "max_timesteps": 3}, [1]):
        (pol / "policy.json").write_text(json.dumps(info))
        one_line_error(capsys, ["eval", tiny_run, "--data-dir", tiny_data, "--exit", "learned", "--policy", pol])


def test_a_policy_made_for_another_run_is_refused(tmp_path, capsys):
    err = one_line_error(capsys, ["eval", "cifar10-vgg-w025-t4", "--exit", "policy", "--policy", "seenn-ii-beta2"])
    assert "fashion-mnist" in err and "cifar10" in err


@pytest.mark.parametrize("device", ["tpu", "cuda", "cuda:9", "meta", "cpu:0:1", ""])
def test_impossible_devices(tiny_run, capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    one_line_error(capsys, ["eval", tiny_run, "--device", device, "--limit", "5"])


def test_weights_of_the_wrong_dtype_are_refused(tiny_run, tmp_path, capsys):
    for dtype in (torch.int64, torch.bool):
        run = copy_run(tiny_run, tmp_path / str(dtype))
        w = load_file(str(run / "model.safetensors"))
        w = {k: v.to(dtype) if v.is_floating_point() else v for k, v in w.items()}
        save_file(w, str(run / "model.safetensors"))
        assert "stored as" in one_line_error(capsys, ["eval", run, "--limit", "5"])


# ------------------------------------------------------------------------------------------- data files


def test_idx_files_with_impossible_headers(tmp_path):
    import gzip
    import struct

    from seenn.data import DataError, load_dataset, read_idx, write_idx

    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(DataError, match="promises"):
        read_idx(f)
    root = tmp_path / "d"
    for prefix, n_img, n_lab in (("train", 50, 50), ("t10k", 0, 0)):
        write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n_img, 28, 28)))
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n_lab))
    with pytest.raises(DataError, match="no images"):
        load_dataset("mnist", "test", data_dir=root)
    write_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28)))
    write_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(9))
    with pytest.raises(DataError, match="9 labels"):
        load_dataset("mnist", "test", data_dir=root, limit=3)  # caught even when the limit would hide it


@pytest.mark.parametrize("mask", ["1\n0\n", "1\n" * 4 + "2\n", "x\n" * 5, "1\n" * 6])
def test_lossless_masks_that_do_not_fit(tmp_path, mask):
    from seenn.data import DATASETS, DataError, cifar_lossless_mask

    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in DATASETS["cifar10"].files:
        (folder / name).write_bytes(np.zeros((5, 3073), dtype=np.uint8).tobytes())
    (folder / "test_batch_lossless.txt").write_text(mask)
    with pytest.raises(DataError):
        cifar_lossless_mask(tmp_path)


# ------------------------------------------------------------------------------------------- silent wrong results


def test_arguments_that_used_to_be_silently_changed(tiny_run, tiny_data, tmp_path, capsys):
    d = ["--data-dir", tiny_data]
    one_line_error(capsys, ["demo", "--train", *d, "--epochs", "0", "--out", tmp_path / "a"])
    one_line_error(capsys, ["export", tiny_run, "--exit", "fixed", "--timesteps", "99", "--out", tmp_path / "m.nir"])
    one_line_error(capsys, ["train", *d, "--weight-decay", "-0.1", "--out", tmp_path / "b"])
    one_line_error(capsys, ["calibrate", tiny_run, *d, "--max-accuracy-drop", "-0.01", "--out", tmp_path / "c"])
    one_line_error(capsys, ["import", "x.nir", "--dataset", "mnist", "--timesteps", "0", "--out", tmp_path / "i"])
    assert not any(tmp_path.iterdir())


def test_demo_train_honours_limit_and_checks_out_first(tiny_data, tmp_path, capsys, monkeypatch):
    import seenn.training.run as tr

    seen = {}
    real = tr.train

    def spy(cfg, *a, **k):
        seen["limit"], seen["epochs"] = cfg.limit, cfg.epochs
        cfg.width, cfg.timesteps, cfg.val_size = 0.25, 2, 20  # keep the test small
        return real(cfg, *a, **k)

    monkeypatch.setattr(tr, "train", spy)
    assert main(["demo", "--train", "--data-dir", str(tiny_data), "--epochs", "1", "--limit", "50",
                 "--out", str(tmp_path / "demo"), "--json"]) == 0
    capsys.readouterr()
    assert seen == {"limit": 50, "epochs": 1}


def test_per_step_thresholds_must_have_one_per_step(tiny_run, capsys, tmp_path):
    from seenn.errors import ConfigError
    from seenn.exits import Confidence
    from seenn.runs.store import load_run
    from seenn.runtime.engine import EarlyExitRunner

    model, cfg = load_run(tiny_run)
    with pytest.raises(ConfigError, match="per-step"):
        EarlyExitRunner(model, Confidence([0.5, 0.9]), cfg["max_timesteps"])
    with pytest.raises(ConfigError):
        EarlyExitRunner(model, Confidence(0.9), 2.7)


# ------------------------------------------------------------------------------------------- NIR metadata and graphs


def test_nir_graphs_that_must_be_refused(tmp_path, capsys):
    nir = pytest.importorskip("nir")

    def graph(tau=2.0, weight=None, meta=None):
        w = np.ones((10, 4), np.float32) if weight is None else weight
        nodes = {"input": nir.Input(input_type={"input": np.array([1, 2, 2])}), "flat": nir.Flatten(
            input_type={"input": np.array([1, 2, 2])}, start_dim=0),
            "fc": nir.Affine(weight=w, bias=np.zeros(10, np.float32)),
            "lif": nir.LIF(tau=np.full(10, tau), r=np.full(10, tau), v_leak=np.zeros(10), v_threshold=np.ones(10)),
            "fc2": nir.Affine(weight=np.ones((10, 10), np.float32), bias=np.zeros(10, np.float32)),
            "output": nir.Output(output_type={"output": np.array([10])})}
        edges = [("input", "flat"), ("flat", "fc"), ("fc", "lif"), ("lif", "fc2"), ("fc2", "output")]
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta or {})

    from seenn.errors import SeennError
    from seenn.interop.nir import import_nir

    bad_w = np.ones((10, 4), np.float32)
    bad_w[0, 0] = np.nan
    for i, g in enumerate([graph(tau=0.0), graph(weight=bad_w), graph(meta={"max_timesteps": "four"}),
                           graph(meta={"max_timesteps": 10**9}), graph(meta={"dt": "x"})]):
        path = tmp_path / f"g{i}.nir"
        nir.write(str(path), g)
        with pytest.raises(SeennError):
            import_nir(path, dataset="mnist")
    from seenn.interop.nir import from_nir

    g = graph()
    w0 = g.nodes["fc"].weight.copy()
    from_nir(g, dt=0.5)  # an input gain of 0.5 folds into the weights of the copy
    from_nir(g, dt=0.5)
    assert np.array_equal(g.nodes["fc"].weight, w0)  # the caller's arrays are never scaled in place
