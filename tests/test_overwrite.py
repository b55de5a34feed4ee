"""--overwrite never removes what a command reads: an --out that is, holds or lies inside an input is refused."""

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seenn.cli import main
from seenn.errors import CheckpointError
from seenn.io.files import check_not_an_input


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, argv, quiet=False) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    if quiet:  # a progress bar drawn before the failure is not part of the message
        err = err.rsplit("\r", 1)[-1]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_train_never_writes_over_its_dataset(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "notes.txt").write_text("mine")
    before = files_of(data)
    base = ["train", "--data-dir", str(data), "--width", "0.25", "--epochs", "1", "--limit", "64", "--val-size", "20",
            "--quiet", "--overwrite", "--out"]
    assert "reads" in refused(capsys, [*base, str(data)])  # holds the dataset folder
    refused(capsys, [*base, str(data / "fashion-mnist")])  # is it
    refused(capsys, [*base, str(data / "fashion-mnist" / "run")])  # lies inside it
    assert files_of(data) == before


def test_calibrate_and_policy_never_write_over_the_run_they_read(tiny_run, tiny_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "fm")
    (runs / "sibling.txt").write_text("keep")
    before = files_of(runs)
    refused(capsys, ["calibrate", str(runs / "fm"), "--data-dir", str(tiny_data), "--out", str(runs), "--overwrite"])
    refused(capsys, ["policy", "train", str(runs / "fm"), "--data-dir", str(tiny_data), "--out", str(runs),
                     "--overwrite"])
    refused(capsys, ["convert", str(runs / "fm"), "--out", str(runs), "--overwrite"])
    assert files_of(runs) == before


def test_overwrite_never_empties_the_current_folder(tiny_data, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work / "sub")
    (work / "sub" / "x.txt").write_text("x")
    for out in (".", ".."):
        err = refused(capsys, ["train", "--data-dir", str(tiny_data), "--epochs", "1", "--limit", "64", "--quiet",
                               "--out", out, "--overwrite"])
        assert "current folder" in err
    assert (work / "notes.txt").read_text() == "mine" and (work / "sub" / "x.txt").exists()


NAMES = st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=3)


@settings(max_examples=200, deadline=None)
@given(NAMES, NAMES)
def test_refused_exactly_when_one_path_is_at_or_above_the_other(tmp_path_factory, out_parts, in_parts):
    root = tmp_path_factory.getbasetemp()
    out, inp = root.joinpath(*out_parts), root.joinpath(*in_parts)
    related = out_parts[:len(in_parts)] == in_parts or in_parts[:len(out_parts)] == out_parts
    if related:
        with pytest.raises(CheckpointError, match="reads"):
            check_not_an_input(out, [inp])
    else:
        check_not_an_input(out, [inp, None])


def test_config_files_must_be_small_regular_files(tiny_run, tmp_path, capsys):
    """A config.json that is a symlink to /dev/zero, a FIFO or larger than the bound is refused before it is read."""
    import os

    from seenn.io.schema import LIMITS

    for make in ("zero", "fifo", "huge"):
        run = tmp_path / make
        shutil.copytree(tiny_run, run)
        (run / "config.json").unlink()
        if make == "zero":
            (run / "config.json").symlink_to("/dev/zero")
        elif make == "fifo":
            os.mkfifo(run / "config.json")
        else:
            with open(run / "config.json", "wb") as f:
                f.truncate(LIMITS["json_bytes"] + 1)
        err = refused(capsys, ["eval", str(run), "--limit", "2"])
        assert "regular file" in err or "bytes" in err


def test_weights_that_break_the_model_s_rules_are_refused(tiny_run, tmp_path, capsys):
    """A negative batch-norm variance or a threshold <= 0 in model.safetensors is refused when the run loads."""
    from safetensors.torch import load_file, save_file

    for key, value in (("running_var", -1.0), ("threshold", 0.0)):
        run = tmp_path / key
        shutil.copytree(tiny_run, run)
        state = load_file(str(run / "model.safetensors"))
        name = next(k for k in state if k.endswith(key))
        state[name] = torch.full_like(state[name], value)
        save_file(state, str(run / "model.safetensors"))
        err = refused(capsys, ["eval", str(run), "--limit", "2"])
        assert ("variance" in err) if key == "running_var" else ("threshold" in err)


def test_a_prefixed_dataset_needs_a_path(capsys):
    for name in ("imagefolder:", "events:", "imagefolder: "):
        assert main(["train", "--dataset", name, "--out", "x"]) == 2
        err = capsys.readouterr().err
        assert "needs a folder" in err and "Traceback" not in err


def test_a_policy_claiming_a_huge_network_is_refused_before_it_is_built(tmp_path):
    import json

    from seenn.io.schema import check_policy

    info = {"kind": "learned", "max_timesteps": 4, "threshold": 0.5, "features": 10_000, "hidden": 4096,
            "members": 64}
    with pytest.raises(CheckpointError, match="weights"):
        check_policy(info)
    with pytest.raises(Exception, match="features"):
        check_policy({**info, "features": 100_000, "members": 1, "hidden": 1})
    assert check_policy(json.loads(json.dumps({**info, "features": 20, "hidden": 32, "members": 5})))


def test_train_overwrite_keeps_the_old_run_until_the_new_one_is_complete(tiny_run, tiny_data, tmp_path, capsys,
                                                                          monkeypatch):
    import seenn.training.run as tr

    out = tmp_path / "runs" / "r"
    shutil.copytree(tiny_run, out)
    before = files_of(out)
    argv = ["train", "--data-dir", str(tiny_data), "--width", "0.25", "--epochs", "1", "--limit", "64", "--val-size",
            "20", "--quiet", "--out", str(out), "--overwrite"]

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "_epoch_starts", interrupted)
    assert main(argv) == 130  # killed in the first seconds
    kept = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".r.replaced-")]
    assert len(kept) == 1 and files_of(kept[0] / "r") == before  # the finished run is whole
    monkeypatch.undo()
    shutil.rmtree(kept[0])
    shutil.rmtree(out)
    shutil.copytree(tiny_run, out)
    assert main(argv) == 0
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # dropped once complete
    assert (out / "model.safetensors").is_file()


def _disk_full(monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)


def test_a_full_disk_is_one_line_naming_what_was_written_and_leaves_nothing(tiny_run, tiny_data, tmp_path, capsys,
                                                                              monkeypatch):
    """calibrate --out and export on a full disk: one line naming the file being written (never the source read),
    exit 2, no temporary file or half folder left, the source unchanged."""
    src = tmp_path / "fm"
    shutil.copytree(tiny_run, src)
    before = files_of(src)
    out = tmp_path / "out"
    _disk_full(monkeypatch)
    err = refused(capsys, ["calibrate", str(src), "--data-dir", str(tiny_data), "--out", str(out)], quiet=True)
    assert "No space left on device" in err and str(out) in err and str(src / "model") not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["fm"]
    err = refused(capsys, ["export", str(src), "--out", str(tmp_path / "m.nir")])
    assert "No space left on device" in err and "m.nir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fm"]  # no .m.nir.tmp
    assert files_of(src) == before
