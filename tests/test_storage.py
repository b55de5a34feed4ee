"""A run's weights stored smaller (`seenn export RUN --format run --weights fp16|int8`): they load as fp32, close to
the original, and a file that misuses the int8 form is refused in one line."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from seenn.cli import main
from seenn.errors import CheckpointError
from seenn.runs.storage import compact_state, expand_state
from seenn.runs.store import load_run


def test_int8_storage_is_per_output_channel_and_round_trips():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=g) * torch.logspace(-3, 1, 8)[:, None, None, None]  # scales far apart
    w[3] = 0.0
    state = {"conv.weight": w, "conv.bias": torch.randn(8, generator=g), "n": torch.tensor(3)}
    packed = compact_state(state, "int8")
    assert packed["conv.weight"].dtype == torch.int8 and packed["conv.weight#scale"].shape == (8,)
    assert packed["conv.bias"].dtype == torch.float32 and packed["n"].dtype == torch.int64  # small / integer: as is
    back = expand_state(packed, "f")
    assert set(back) == set(state) and back["conv.weight"].dtype == torch.float32
    err = (back["conv.weight"] - w).abs().amax(dim=(1, 2, 3))
    assert (err <= w.abs().amax(dim=(1, 2, 3)) / 254 + 1e-12).all()  # half a step of each channel's own scale
    assert (back["conv.weight"][3] == 0).all() and torch.equal(back["conv.bias"], state["conv.bias"])
    half = compact_state(state, "fp16")
    assert half["conv.weight"].dtype == torch.float16 and half["n"].dtype == torch.int64


@pytest.mark.parametrize("bad, words", [
    (lambda s: s.pop("conv.weight"), "scales no int8 tensor"),
    (lambda s: s.update({"conv.weight#scale": torch.ones(3)}), "one per output channel"),
    (lambda s: s.update({"conv.weight#scale": -torch.ones(8)}), "finite positive"),
    (lambda s: s.update({"conv.weight#scale": torch.full((8,), float("nan"))}), "finite positive"),
])
def test_a_misused_int8_form_is_refused(bad, words):
    packed = compact_state({"conv.weight": torch.randn(8, 4, 3, 3)}, "int8")
    bad(packed)
    with pytest.raises(CheckpointError, match=words):
        expand_state(packed, "f")


def test_export_run_int8_loads_as_fp32_and_predicts_as_before(tiny_run, tiny_data, tmp_path, capsys):
    tiny_run = Path(shutil.copytree(tiny_run, tmp_path / "run"))  # the shared run stays as it is
    (tiny_run / "policies").mkdir(exist_ok=True)
    (tiny_run / "policies" / "note.txt").write_text("kept")
    sizes = {}
    for weights in ("fp16", "int8"):
        out = tmp_path / weights
        assert main(["export", str(tiny_run), "--format", "run", "--weights", weights, "--out", str(out)]) == 0
        assert (out / "policies" / "note.txt").read_text() == "kept"
        assert json.loads((out / "config.json").read_text()) == json.loads((tiny_run / "config.json").read_text())
        sizes[weights] = (out / "model.safetensors").stat().st_size
    # the same run gives the same bytes (one metadata key: safetensors writes several in a random order)
    again = tmp_path / "again"
    assert main(["export", str(tiny_run), "--format", "run", "--weights", "int8", "--out", str(again)]) == 0
    assert (again / "model.safetensors").read_bytes() == (tmp_path / "int8" / "model.safetensors").read_bytes()
    orig = (tiny_run / "model.safetensors").stat().st_size
    assert sizes["int8"] < 0.45 * orig and sizes["fp16"] < 0.6 * orig
    a, _ = load_run(tiny_run)
    b, _ = load_run(tmp_path / "int8")
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        la, lb = a(x, 3).sum(0), b(x, 3).sum(0)
    assert all(p.dtype == torch.float32 for p in b.parameters())
    assert (la.argmax(1) == lb.argmax(1)).float().mean() >= 0.85  # spikes may flip near threshold, not many
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "int8"), "--data-dir", str(tiny_data), "--threshold", "0.9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exit"]["avg_timesteps"] >= 1


def test_export_run_refusals(tiny_run, tmp_path, capsys):
    for extra, words in [(["--weights", "int8"], "--weights is for --format run"),
                         (["--format", "run", "--threshold", "0.9"], "describe a NIR graph"),
                         (["--format", "onnx"], "choose nir or run")]:
        out = tmp_path / "x"
        assert main(["export", str(tiny_run), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and not out.exists()
    # --out may not be the run itself, even with --overwrite
    assert main(["export", str(tiny_run), "--format", "run", "--out", str(tiny_run), "--overwrite"]) == 2
    assert (tiny_run / "model.safetensors").is_file()
    # an int8 tensor without its scale: the loader names it
    bad = tmp_path / "bad"
    assert main(["export", str(tiny_run), "--format", "run", "--weights", "int8", "--out", str(bad)]) == 0
    state = load_file(str(bad / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.endswith("#scale")}, str(bad / "model.safetensors"))
    capsys.readouterr()
    assert main(["eval", str(bad), "--threshold", "0.9"]) == 2
    assert "stored as int8" in capsys.readouterr().err
