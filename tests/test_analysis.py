"""Robustness, explanation and the HTML report."""

import json

import pytest
import torch

from seenn.analysis.robustness import corrupt, parse_severities
from seenn.cli import main
from seenn.errors import ConfigError


def test_parse_severities():
    assert parse_severities("1..5") == [1, 2, 3, 4, 5]
    assert parse_severities("3") == [3]
    assert parse_severities("1,3,5") == [1, 3, 5]
    for bad in ("0..2", "x", "6", ""):
        with pytest.raises(ConfigError):
            parse_severities(bad)


@pytest.mark.parametrize("kind", ["gaussian-noise", "blur", "contrast", "jpeg-compression"])
def test_corruptions_grow_with_severity(kind):
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(4, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    dist = [(corrupt(img, kind, s).float() - img.float()).abs().mean().item() for s in (1, 3, 5)]
    assert dist[0] > 0 and dist[0] < dist[1] < dist[2]
    out = corrupt(img, kind, 2)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert torch.equal(corrupt(img, kind, 2), out)  # deterministic


def test_robustness_cli(tiny_run, tiny_data, capsys):
    code = main(["robustness", str(tiny_run), "--data-dir", str(tiny_data), "--severity", "1,5", "--json",
                 "--threshold", "0.6", "--limit", "60"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["severity"] for row in r["results"]] == ["clean", 1, 5]
    for row in r["results"]:
        assert row["samples"] == 60 and 1 <= row["exit"]["avg_timesteps"] <= 3
        assert row["accuracy_drop"] == pytest.approx(row["accuracy_per_timestep"][-1] - row["exit"]["accuracy"])
    assert main(["robustness", str(tiny_run), "--data-dir", str(tiny_data), "--corruption", "jpeg"]) == 2
    capsys.readouterr()
    # the same images recompressed (grey ones here): paired with the clean rows, any dataset
    assert main(["robustness", str(tiny_run), "--data-dir", str(tiny_data), "--corruption", "jpeg-compression",
                 "--severity", "5", "--json", "--threshold", "0.6", "--limit", "60"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [row["severity"] for row in r["results"]] == ["clean", 5] and r["corruption"] == "jpeg-compression"


def test_explain_cli(tiny_run, tiny_data, tmp_path, capsys):
    code = main(["explain", str(tiny_run), "--data-dir", str(tiny_data), "--index", "5", "--threshold", "0.5",
                 "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(r["steps"]) == 3 and r["index"] == 5
    for s in r["steps"]:
        assert sum(s["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert s["score"] == pytest.approx(max(s["probabilities"]), abs=1e-5)
    first = next((s["timestep"] for s in r["steps"] if s["exits"]), 3)
    assert r["exit_timestep"] == first
    assert r["prediction"] == r["steps"][first - 1]["prediction"]
    assert r["full_prediction"] == r["steps"][-1]["prediction"]
    if r["steps"][first - 1]["exits"]:
        assert "> 0.5" in r["reason"]
    # the text form names the reason
    assert main(["explain", str(tiny_run), "--data-dir", str(tiny_data), "--index", "5", "--threshold", "0.5"]) == 0
    assert "exited at step" in capsys.readouterr().out
    assert main(["explain", str(tiny_run), "--data-dir", str(tiny_data), "--index", "100000"]) == 2
    # --png draws a recording's frames: refused for images before anything runs, nothing written
    assert main(["explain", str(tiny_run), "--data-dir", str(tiny_data), "--index", "5", "--png",
                 str(tmp_path / "f.png")]) == 2
    assert "recording" in capsys.readouterr().err and not (tmp_path / "f.png").exists()


def test_report_cli(tiny_run, tiny_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rep"
    assert main(["report", str(tiny_run), "--data-dir", str(tiny_data), "--out", str(out), "--limit", "60"]) == 0
    page = (out / "index.html").read_text()
    for name in ("tradeoff.png", "exits.png", "reliability.png", "samples.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count("data:image/png;base64,") == 4  # self-contained
    assert "average timesteps" in page


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not _chromium(), reason="no headless Chromium (Debian package chromium) to render the report")
def test_report_renders_in_a_real_browser(tiny_run, tiny_data, tmp_path, capsys):
    import subprocess

    import numpy as np

    pytest.importorskip("matplotlib")
    from PIL import Image  # comes with matplotlib

    out = tmp_path / "rep"
    assert main(["report", str(tiny_run), "--data-dir", str(tiny_data), "--out", str(out), "--limit", "60"]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}",
                    (out / "index.html").as_uri()], capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1200)
    # the page drew text and four plots: many rows of the screenshot are not blank
    assert (img.std(axis=1) > 5).mean() > 0.4


def test_jpeg_part_against_exact_part(tmp_path, capsys):
    """A CIFAR-10-format folder whose test batch lists exact (1) and JPEG (0) records."""
    import numpy as np

    from seenn.data import DATASETS
    from seenn.models import build_model
    from seenn.runs.store import save_run

    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in DATASETS["cifar10"].files:
        n = 40 if name == "test_batch.bin" else 8
        rec = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], 1).astype(np.uint8)
        (folder / name).write_bytes(rec.tobytes())
    (folder / "test_batch_lossless.txt").write_text("1\n" * 15 + "0\n" * 25)
    torch.manual_seed(0)
    model = build_model("vgg", in_channels=3, image_size=32, num_classes=10, width=0.125)
    save_run(tmp_path / "run", model, {"dataset": "cifar10", "max_timesteps": 2, "training": {"val_size": 8},
                                       "model": {"name": "vgg", "in_channels": 3, "image_size": 32, "num_classes": 10,
                                                 "width": 0.125, "surrogate": "tanh"}})
    code = main(["robustness", str(tmp_path / "run"), "--corruption", "jpeg", "--data-dir", str(tmp_path / "data"),
                 "--json", "--threshold", "0.5"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(row["part"], row["samples"]) for row in r["results"]] == [("exact", 15), ("jpeg", 25)]
    (folder / "test_batch_lossless.txt").unlink()
    assert main(["robustness", str(tmp_path / "run"), "--corruption", "jpeg", "--data-dir", str(tmp_path / "data")]) == 2
