"""Knowledge distillation (`seenn train --distill RUN`): the loss, and a hybrid run taught by its own ANN."""

import gzip
import hashlib
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from seenn.cli import main
from seenn.training.distill import distill_loss


def test_the_distillation_loss_is_each_steps_kl_to_the_teacher():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 10, generator=g), torch.randn(5, 10, generator=g)
    tau = 4.0
    want = torch.stack([F.kl_div(F.log_softmax(s / tau, -1), F.softmax(teacher / tau, -1), reduction="batchmean")
                        for s in student]).mean() * tau ** 2
    assert torch.allclose(distill_loss(student, teacher, tau), want, atol=1e-6)
    assert distill_loss(teacher.expand(3, 5, 10), teacher, tau).abs() < 1e-6  # every step equals the teacher
    # its gradient moves the steps toward the teacher
    s = student.clone().requires_grad_(True)
    before = distill_loss(s, teacher, tau)
    before.backward()
    with torch.no_grad():
        after = distill_loss(s - 5.0 * s.grad, teacher, tau)
    assert after < before


@pytest.fixture(scope="module")
def ann(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "ann"
    assert main(["train", "--ann", "--quant-levels", "4", "--width", "0.25", "--epochs", "1", "--limit", "96",
                 "--val-size", "32", "--batch-size", "32", "--data-dir", str(tiny_data), "--quiet",
                 "--out", str(out)]) == 0
    return out


def _relabelled(tiny_data, tmp_path):
    """The tiny dataset with every training label moved to the next class."""
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    path = root / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[8:] = bytes((b + 1) % 10 for b in raw[8:])
    path.write_bytes(gzip.compress(bytes(raw)))
    return root


def test_a_hybrid_run_taught_only_by_its_ann_never_reads_the_labels(ann, tiny_data, tmp_path):
    """With --distill-weight 1 the loss is the teacher's alone: the same run on wrong labels learns the same
    weights; with the default weight the labels count (so the term is really the one in use)."""
    common = ["train", "--init", str(ann), "--width", "0.25", "--timesteps", "2", "--epochs", "1", "--limit", "64",
              "--val-size", "32", "--batch-size", "32", "--quiet", "--distill", str(ann)]
    wrong = _relabelled(tiny_data, tmp_path)
    runs = {}
    for name, data, extra in [("a", tiny_data, ["--distill-weight", "1"]), ("b", wrong, ["--distill-weight", "1"]),
                              ("c", wrong, [])]:
        runs[name] = tmp_path / name
        assert main([*common, *extra, "--data-dir", str(data), "--out", str(runs[name])]) == 0
    w = {k: load_file(str(v / "model.safetensors")) for k, v in runs.items()}
    assert all(torch.equal(w["a"][k], w["b"][k]) for k in w["a"])
    assert any(not torch.equal(w["a"][k], w["c"][k]) for k in w["a"])
    cfg = json.loads((runs["c"] / "config.json").read_text())["training"]
    assert cfg["distill"] == str(ann) and cfg["distill_weight"] == 0.5 and cfg["distill_temperature"] == 4.0
    assert cfg["distill_flip"] is False
    digest = hashlib.sha256((ann / "model.safetensors").read_bytes()).hexdigest()  # what the paths held
    assert cfg["extra"]["init_sha256"] == cfg["extra"]["distill_sha256"] == digest
    # resumed: the teacher is loaded again from the recorded run
    assert main(["train", "--resume", str(runs["c"]), "--epochs", "2", "--data-dir", str(wrong), "--quiet"]) == 0
    assert len(json.loads((runs["c"] / "metrics.json").read_text())["epochs"]) == 2


def _without_weights(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.json", bare / "config.json")
    return bare


def test_distillation_refusals(ann, tiny_data, tmp_path, capsys):
    base = ["train", "--data-dir", str(tiny_data), "--quiet", "--epochs", "1", "--limit", "64", "--val-size", "32",
            "--width", "0.25"]
    for extra, words in [(["--distill", str(tmp_path / "nowhere")], "neither a run directory"),
                         (["--distill", str(ann), "--dataset", "mnist"], "a teacher must read the same data"),
                         (["--distill", str(ann), "--distill-weight", "1.5"], "--distill-weight"),
                         (["--distill", str(ann), "--distill-temperature", "0"], "--distill-temperature"),
                         (["--distill-flip"], "--distill-flip"),
                         (["--distill", str(_without_weights(ann, tmp_path))], "model.safetensors")]:
        out = tmp_path / f"r{len(words)}"
        assert main([*base, *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists() or not any(out.iterdir())
    # --out may not be the teacher (--overwrite would replace what this run reads)
    assert main([*base, "--distill", str(ann), "--out", str(ann), "--overwrite"]) == 2
    assert "which this command reads" in capsys.readouterr().err and (ann / "model.safetensors").is_file()


def test_a_flipping_teacher_averages_each_image_and_its_mirror(ann, tiny_data):
    """--distill-flip: the teacher's logits are the mean of the image's and its mirror's, so they cannot tell an
    image from its mirror."""
    from seenn.training.distill import Teacher
    x = torch.randn(4, 1, 28, 28)
    plain, flipping = Teacher(ann, "fashion-mnist", 10), Teacher(ann, "fashion-mnist", 10, flip=True)
    assert torch.allclose(flipping(x), (plain(x) + plain(x.flip(-1))) / 2, atol=1e-5)
    assert torch.allclose(flipping(x), flipping(x.flip(-1)), atol=1e-5)
    assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-3)
