"""Bring your own data: an ImageFolder tree (one folder per class) and the CIFAR-100 binary format."""

import json

import numpy as np
import pytest

from seenn.cli import main
from seenn.data import DataError, load_dataset


def _imagefolder(root, n_train=24, n_test=6, size=20, grey=False):
    from PIL import Image

    rng = np.random.default_rng(0)
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for split, n in (("train", n_train), ("test", n_test)):
        for c, rgb in colors.items():
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = (rng.integers(0, 40, (size, size, 3)) + np.array(rgb) * 0.8).clip(0, 255).astype(np.uint8)
                im = Image.fromarray(a)
                (im.convert("L") if grey else im).save(d / f"{i}.png")
    return root


def test_imagefolder_train_eval_and_the_recorded_pipeline(tmp_path, capsys):
    root = _imagefolder(tmp_path / "imgs")
    spec = f"imagefolder:{root}"
    run = tmp_path / "run"
    assert main(["train", "--dataset", spec, "--image-size", "16", "--model", "convnet", "--width", "0.25",
                 "--timesteps", "2", "--epochs", "2", "--val-size", "12", "--batch-size", "16", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    cfg = json.loads((run / "config.json").read_text())
    data = cfg["data"]
    assert data["image_size"] == 16 and data["channels"] == 3 and data["class_names"] == ["blue", "green", "red"]
    assert all(0 < m < 1 for m in data["mean"]) and all(0 < v < 1 for v in data["std"])  # from the training images
    assert main(["eval", str(run), "--json", "--threshold", "0.9"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 18 and r["accuracy_per_timestep"][-1] > 0.6  # the colours are easy to tell apart
    val = load_dataset(spec, "val", val_size=12)
    assert len(set(val.labels.tolist())) > 1  # the hold-out is a shuffle, not the last class
    # reading the run leaves no state behind: its pipeline travels with its config, the name alone is measured
    from seenn.data import dataset_info
    from seenn.runs import load_run

    config = load_run(run).config
    assert dataset_info(spec).image_size == 32 and dataset_info(spec, config).image_size == 16
    # another folder of images at another size, given for the run: read through the run's own pipeline (its
    # size, normalisation and classes; without it, 24-pixel images and their own statistics)
    other = _imagefolder(tmp_path / "other", n_train=4, size=24)
    assert main(["eval", str(run), "--json", "--threshold", "0.9", "--dataset", f"imagefolder:{other}"]) == 0
    o = json.loads(capsys.readouterr().out)
    assert o["samples"] == 18 and o["accuracy_per_timestep"][-1] > 0.6


def test_imagefolder_ann_converts_with_its_pipeline(tmp_path, capsys):
    """A QCFS ANN trained on the user's folder converts (with bias correction on its own training images) into an
    SNN run that still knows the folder's pipeline, and evaluates."""
    root = _imagefolder(tmp_path / "imgs")
    spec = f"imagefolder:{root}"
    ann, snn = tmp_path / "ann", tmp_path / "snn"
    assert main(["train", "--ann", "--quant-levels", "4", "--dataset", spec, "--image-size", "16", "--model",
                 "convnet", "--width", "0.25", "--epochs", "2", "--val-size", "12", "--batch-size", "16", "--quiet",
                 "--out", str(ann)]) == 0
    assert main(["convert", str(ann), "--out", str(snn), "--timesteps", "8", "--bias-correction", "4",
                 "--calibration-samples", "16"]) == 0
    capsys.readouterr()
    cfg = json.loads((snn / "config.json").read_text())
    assert cfg["data"] == json.loads((ann / "config.json").read_text())["data"]
    assert cfg["converted_from"]["bias_correction"]["samples"] == 16
    assert main(["eval", str(snn), "--json", "--threshold", "0.9"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 18


def test_imagefolder_mistakes(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"imagefolder:{tmp_path / 'none'}", "train")
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    with pytest.raises(DataError, match="two class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'one'}", "train")
    from PIL import Image

    root = tmp_path / "flat"  # classes right under PATH: a training set only
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / c / "ok.png")
    assert len(load_dataset(f"imagefolder:{root}", "train", val_size=0)) == 2
    with pytest.raises(DataError, match="training set only"):
        load_dataset(f"imagefolder:{root}", "test")
    bad = tmp_path / "bad"
    for c in ("a", "b"):
        (bad / c).mkdir(parents=True)
        (bad / c / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        load_dataset(f"imagefolder:{bad}", "train")


def _cifar100(folder, n, seed):
    rng = np.random.default_rng(seed)
    rec = np.zeros((n, 3074), dtype=np.uint8)
    rec[:, 0] = rng.integers(0, 20, n)
    rec[:, 1] = rng.integers(0, 100, n)
    rec[:, 2:] = rng.integers(0, 256, (n, 3072))
    return rec


def test_cifar100_binary(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, test = _cifar100(folder, 50, 0), _cifar100(folder, 10, 1)
    (folder / "train.bin").write_bytes(train.tobytes())
    (folder / "test.bin").write_bytes(test.tobytes())
    d = load_dataset("cifar100", "test", data_dir=tmp_path)
    assert d.info.num_classes == 100 and len(d.info.class_names) == 100 and d.info.class_names[0] == "apple"
    assert d.labels.tolist() == test[:, 1].tolist()  # the fine label
    assert np.array_equal(d.images[3].numpy().reshape(-1), test[3, 2:])
    assert len(load_dataset("cifar100", "train", data_dir=tmp_path, val_size=10)) == 40
    (folder / "test.bin").write_bytes(test.tobytes()[:-5])
    with pytest.raises(DataError, match="3074-byte CIFAR-100 records"):
        load_dataset("cifar100", "test", data_dir=tmp_path)
    bad = test.copy()
    bad[0, 1] = 100
    (folder / "test.bin").write_bytes(bad.tobytes())
    with pytest.raises(DataError, match="CIFAR-100"):
        load_dataset("cifar100", "test", data_dir=tmp_path)


def test_more_class_folders_than_the_bound_are_refused(tmp_path):
    from seenn.data.info import class_folders
    from seenn.errors import DataError
    from seenn.io.schema import LIMITS

    for i in range(LIMITS["num_classes"] + 1):
        (tmp_path / f"c{i}").mkdir()
    with pytest.raises(DataError, match="class folders"):
        class_folders(tmp_path, (".png",))
