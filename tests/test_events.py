"""Event streams: readers on real and hand-made bytes, frames by hand, the emulator's physics, and early exit on a
time-varying input held to the post-hoc exits."""

import json
import struct

import numpy as np
import pytest
import torch
from conftest import SHARED, mid_threshold

from seenn.cli import main
from seenn.data.events import Events, emulate, read_events, to_frames
from seenn.data.events.formats import decode_aedat2, decode_aedat3, decode_nmnist, encode_nmnist
from seenn.errors import DataError

SAMPLE = SHARED / "events" / "nmnist-sample.bin"


def _events(x, y, t, p, sensor=(34, 34)):
    return Events(np.array(x, dtype=np.int64), np.array(y, dtype=np.int64), np.array(t, dtype=np.int64),
                  np.array(p, dtype=np.uint8), sensor)


# ------------------------------------------------------------------------------------------- readers


@pytest.mark.skipif(not SAMPLE.is_file(), reason="the N-MNIST sample is not available")
def test_nmnist_reader_on_the_real_recording():
    ev = read_events(SAMPLE)
    assert len(ev) == 4325
    assert ev.duration_us == 311175 - 654 and ev.t[0] == 654 and ev.t[-1] == 311175
    assert (np.diff(ev.t) >= 0).all()
    assert ev.x.min() == 0 and ev.x.max() == 33 and ev.y.min() == 0 and ev.y.max() == 33
    # the published format: bit 7 of byte 2 set = ON. (The data folder's README says 2,180 ON / 2,145 OFF, the
    # other way round; the bits say 2,145 have the ON bit.)
    assert int(ev.p.sum()) == 2145 and int((ev.p == 0).sum()) == 2180
    assert encode_nmnist(ev) == SAMPLE.read_bytes()  # the writer gives the same bytes back


def test_nmnist_round_trip_and_bad_files(tmp_path):
    ev = _events([0, 5, 33], [1, 2, 33], [10, 10, (1 << 23) - 1], [1, 0, 1])
    back = decode_nmnist(encode_nmnist(ev))
    for f in ("x", "y", "t", "p"):
        assert np.array_equal(getattr(back, f), getattr(ev, f))
    raw = encode_nmnist(ev)
    with pytest.raises(DataError, match="not a whole number of 5-byte"):
        decode_nmnist(raw[:-2])
    backwards = encode_nmnist(_events([1, 2], [1, 2], [500, 100], [1, 1]))
    with pytest.raises(DataError, match="run backwards at event 1"):
        decode_nmnist(backwards)
    outside = encode_nmnist(_events([1, 40], [1, 2], [1, 2], [1, 1]))
    with pytest.raises(DataError, match=r"\(x=40, y=2\) is outside the 34x34 sensor"):
        decode_nmnist(outside)
    # the CLI: one line and exit 2
    bad = tmp_path / "bad.bin"
    bad.write_bytes(raw[:-1])
    assert main(["events", "info", str(bad)]) == 2


def test_aedat2_both_address_layouts():
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n"
    # DAVIS layout (CIFAR10-DVS): y at bit 22, x at bit 12, polarity at bit 11; bit 31 = an APS sample, skipped
    davis = [((7 << 22) | (100 << 12) | (1 << 11), 5), ((1 << 31) | 123, 6), ((127 << 22) | (0 << 12), 9)]
    raw = header + b"".join(struct.pack(">II", a, t) for a, t in davis)
    ev = decode_aedat2(raw)
    assert ev.x.tolist() == [100, 0] and ev.y.tolist() == [7, 127] and ev.p.tolist() == [1, 0]
    assert ev.t.tolist() == [5, 9]
    # DVS128 layout: x at bit 1, y at bit 8, polarity bit 0
    dvs = [((3 << 8) | (64 << 1) | 1, 1), ((127 << 8) | (2 << 1), 2)]
    ev = decode_aedat2(header + b"".join(struct.pack(">II", a, t) for a, t in dvs), layout="dvs128")
    assert ev.x.tolist() == [64, 2] and ev.y.tolist() == [3, 127] and ev.p.tolist() == [1, 0]
    with pytest.raises(DataError, match="8-byte AEDAT 2.0"):
        decode_aedat2(raw[:-3])
    with pytest.raises(DataError, match="not #!AER-DAT2.0"):
        decode_aedat2(b"#!AER-DAT9\r\n" + raw[len(header):])


def _aedat3_packet(kind, events, overflow=0, size=8):
    head = struct.pack("<hhiiiiii", kind, 1, size, 4, overflow, len(events), len(events), len(events))
    return head + b"".join(struct.pack("<Ii", d, t) for d, t in events)


def test_aedat31_polarity_packets():
    def word(x, y, pol, valid=1):
        return (x << 17) | (y << 2) | (pol << 1) | valid

    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    body = (_aedat3_packet(1, [(word(10, 20, 1), 100), (word(127, 0, 0), 200), (word(5, 5, 1, valid=0), 250)])
            + _aedat3_packet(0, [(0, 300)])  # a special-event packet: skipped
            + _aedat3_packet(1, [(word(1, 2, 0), 5)], overflow=1))  # the timestamp's high bits
    ev = decode_aedat3(header + body)
    assert ev.x.tolist() == [10, 127, 1] and ev.y.tolist() == [20, 0, 2] and ev.p.tolist() == [1, 0, 0]
    assert ev.t.tolist() == [100, 200, (1 << 31) + 5]
    with pytest.raises(DataError, match="truncated"):
        decode_aedat3(header + body[:-4])
    with pytest.raises(DataError, match="END-HEADER"):
        decode_aedat3(b"#!AER-DAT3.1\r\n" + body)


# ------------------------------------------------------------------------------------------- frames


def test_frames_by_time_and_by_count_by_hand():
    # 6 events over 0..999 us on a 2x3 sensor
    ev = _events([0, 1, 2, 0, 1, 2], [0, 0, 1, 1, 1, 0], [0, 100, 200, 600, 700, 999], [1, 0, 1, 1, 0, 0], (2, 3))
    counts, ends = to_frames(ev, 2, "time")  # windows [0, 500) and [500, 1000)
    assert counts.shape == (2, 2, 2, 3)
    want = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    want[0, 1, 0, 0] = want[0, 0, 0, 1] = want[0, 1, 1, 2] = 1
    want[1, 1, 1, 0] = want[1, 0, 1, 1] = want[1, 0, 0, 2] = 1
    assert np.array_equal(counts, want)
    assert np.allclose(ends, [0.5, 1.0])
    counts, ends = to_frames(ev, 3, "count")  # two events a frame
    assert counts.reshape(3, -1).sum(1).tolist() == [2, 2, 2]
    assert np.allclose(ends, [0.1, 0.6, 0.999])
    padded, _ = to_frames(ev, 1, "time", size=(4, 4))
    assert padded.shape == (1, 2, 4, 4) and padded.sum() == 6 and padded[:, :, 2:].sum() == 0
    # fewer events than frames: the event in the first, the empty frames end where it did
    counts, ends = to_frames(_events([0, 0], [0, 0], [50, 80], [1, 0], (1, 1)), 4, "count")
    assert counts.reshape(4, -1).sum(1).tolist() == [1, 0, 1, 0]
    assert np.allclose(ends, [0.0, 0.0, 0.03, 0.03])
    empty, ends = to_frames(_events([], [], [], [], (2, 2)), 4)
    assert empty.sum() == 0 and ends.tolist() == [0, 0, 0, 0]
    with pytest.raises(DataError, match="time or count"):
        to_frames(ev, 2, "space")


# ------------------------------------------------------------------------------------------- emulator


def test_a_still_sensor_sees_only_noise():
    from seenn.data.events import SensorModel

    img = np.zeros((2, 20, 20), dtype=np.uint8)
    img[:, 5:15, 5:15] = 255
    quiet = emulate(img, (26, 26), "still", 200, SensorModel(noise_hz=0.0), rng=np.random.default_rng(0))
    assert [len(e) for e in quiet] == [0, 0]
    noisy = emulate(img, (26, 26), "still", 200, SensorModel(noise_hz=20.0), rng=np.random.default_rng(0))
    expected = 20.0 * 0.2 * 26 * 26  # rate x seconds x pixels
    for e in noisy:
        assert abs(len(e) - expected) < 5 * expected ** 0.5
        assert 0.3 < e.p.mean() < 0.7  # both polarities


def test_a_moving_bright_edge_gives_on_ahead_and_off_behind():
    from seenn.data.events import SensorModel

    img = np.zeros((1, 10, 10), dtype=np.uint8)
    img[:, :, :] = 255  # a bright square on the black monitor
    steps = 50
    path = np.stack([np.full(steps + 1, 2.0), np.linspace(0.0, 4.0, steps + 1)], axis=1)  # moves right 4 pixels
    (ev,) = emulate(img, (16, 16), path, steps, SensorModel(noise_hz=0.0, mismatch=0.0),
                    rng=np.random.default_rng(0))
    assert len(ev) > 20
    on, off = ev.x[ev.p == 1], ev.x[ev.p == 0]
    assert on.min() >= 10 and off.max() <= 5  # leading (right) side brighter, trailing (left) side darker
    assert (np.diff(ev.t) >= 0).all()
    back = decode_nmnist(encode_nmnist(ev), sensor=(16, 16))  # written in N-MNIST's format, read back
    for f in ("x", "y", "t", "p"):
        assert np.array_equal(getattr(back, f), getattr(ev, f))


def test_emulated_folder_reads_as_a_dataset(tiny_data, tmp_path):
    from seenn.data import load_dataset

    out = tmp_path / "ev"
    assert main(["events", "emulate", "--dataset", "mnist", "--out", str(out), "--train-limit", "30",
                 "--test-limit", "12", "--data-dir", str(tiny_data), "--quiet"]) == 0
    meta = json.loads((out / "events.json").read_text())
    assert meta["emulated"] is True and meta["counts"] == {"Train": 30, "Test": 12}
    assert main(["events", "emulate", "--dataset", "mnist", "--out", str(out), "--train-limit", "3",
                 "--data-dir", str(tiny_data), "--quiet"]) == 2  # not over a non-empty folder
    from seenn.data.events.dataset import measure

    info = measure(f"events:{out}", 5, "count")  # a pipeline travels as its info, never through module state
    test = load_dataset(f"events:{out}", "test", info=info)
    src = load_dataset("mnist", "test", data_dir=tiny_data, limit=12)
    assert test.images.shape == (12, 5, 2, 34, 34)
    assert torch.equal(test.labels, src.labels)  # in the source's order
    train = load_dataset(f"events:{out}", "train", val_size=10, info=info)
    val = load_dataset(f"events:{out}", "val", val_size=10, info=info)
    assert len(train) == 20 and len(val) == 10
    assert test.ends.shape == (12, 5) and (test.ends.diff(dim=1) >= 0).all()
    x, y = next(test.batches(4))
    assert x.shape == (4, 5, 2, 34, 34) and x.dtype == torch.float32


# ------------------------------------------------------------------------------------------- early exit


def _frames_net(seed=0):
    from seenn.models import build_model

    torch.manual_seed(seed)
    net = build_model(name="convnet", in_channels=2, image_size=16, num_classes=5, width=0.25, surrogate="tanh")
    for m in net.modules():  # spiking activity from random weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.05)
    return net.eval()


def test_runner_on_frames_equals_posthoc_exits_and_reads_only_its_frames():
    from seenn.exits import Confidence
    from seenn.runtime.engine import EarlyExitRunner, posthoc_exits

    net = _frames_net()
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((24, 6, 2, 16, 16), 0.4), generator=g)
    with torch.no_grad():
        logits = net(x, 6).transpose(0, 1)
    scores = torch.softmax(logits.cumsum(1), -1).amax(-1)
    rule = Confidence(mid_threshold(scores[:, 2]))
    want = posthoc_exits(logits, rule)
    assert 1 < want.exit_timestep.float().mean() < 6  # some leave early, some do not
    runner = EarlyExitRunner(net, rule, 6)
    got = runner.predict(x)
    assert torch.equal(got.exit_timestep, want.exit_timestep) and torch.equal(got.prediction, want.prediction)
    streamed = runner.stream([x[:7], x[7:15], x[15:]], slots=5)
    assert torch.equal(streamed.exit_timestep, want.exit_timestep)
    assert torch.equal(streamed.prediction, want.prediction)
    one = runner.predict(x[3:4])
    assert int(one.exit_timestep) == int(want.exit_timestep[3])
    # frames after a sample's exit are never read: changing them changes nothing
    later = x.clone()
    for i, t in enumerate(want.exit_timestep.tolist()):
        later[i, t:] = 99.0
    again = runner.predict(later)
    assert torch.equal(again.exit_timestep, want.exit_timestep) and torch.equal(again.prediction, want.prediction)
    with pytest.raises(DataError, match="need as many frames"):
        EarlyExitRunner(net, rule, 7).predict(x)


def test_frames_training_pass_matches_the_step_loop():
    """The multi-step (fused, time-major) pass on frames gives the single-step loop's outputs, and gradients flow
    through every step's own stem."""
    net = _frames_net(1)
    x = torch.poisson(torch.full((3, 4, 2, 16, 16), 0.5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stepwise = net(x, 4, multistep=False)
        multi = net(x, 4, multistep=True)
    assert torch.allclose(stepwise, multi, atol=1e-5)
    net.train()
    x.requires_grad_(True)
    net(x, 4).sum().backward()
    assert all(x.grad[:, t].abs().sum() > 0 for t in range(4))


def test_an_event_run_trains_evaluates_and_explains(tiny_data, tmp_path, capsys):
    from seenn.runs.store import read_config

    ev_dir = tmp_path / "ev"
    assert main(["events", "emulate", "--dataset", "mnist", "--out", str(ev_dir), "--train-limit", "48",
                 "--test-limit", "16", "--data-dir", str(tiny_data), "--quiet"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"events:{ev_dir}", "--timesteps", "4", "--frames-by", "count", "--epochs", "1",
                 "--batch-size", "16", "--val-size", "16", "--width", "0.25", "--quiet", "--out", str(run)]) == 0
    cfg = read_config(run)
    assert cfg["data"]["events"]["frames"] == 4 and cfg["data"]["events"]["split_by"] == "count"
    assert cfg["data"]["events"]["emulated"] is True
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--threshold", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 16 and 0 < out["sensor_ms_full"] <= 300 and out["emulated"] is True
    assert out["exit"]["avg_sensor_ms"] <= out["sensor_ms_full"] + 1e-9
    assert main(["explain", str(run), "--index", "2", "--json", "--png", str(tmp_path / "f.png")]) == 0
    ex = json.loads(capsys.readouterr().out)
    assert len(ex["steps"]) == 4 and "events" in ex["steps"][0] and (tmp_path / "f.png").stat().st_size > 1000
    assert main(["eval", str(run), "--max-timesteps", "5"]) == 2  # more steps than frames
    assert "more than the 4 frames" in capsys.readouterr().err
    gone = tmp_path / "moved"
    ev_dir.rename(gone)  # a run whose emulated recordings are not on this machine: the error says how to make them
    assert main(["eval", str(run), "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert f"seenn events emulate --dataset mnist --out {ev_dir}" in err and "--dataset events:DIR" in err
    assert main(["eval", str(run), "--limit", "4", "--dataset", f"events:{gone}", "--threshold", "0.5"]) == 0


def test_timestamps_spanning_centuries_are_refused_not_wrapped():
    import numpy as np

    from seenn.data.events.formats import Events
    from seenn.data.events.frames import to_frames
    from seenn.errors import DataError

    t = np.array([0, 1 << 61], dtype=np.int64)  # a 2^30 AEDAT overflow counter, shifted by 31 bits
    ev = Events(np.zeros(2, np.int64), np.zeros(2, np.int64), t, np.zeros(2, np.uint8), (4, 4))
    with pytest.raises(DataError, match="corrupt"):
        to_frames(ev, 8)


def test_sensor_times_frames_times_recordings_is_checked_before_allocating(tiny_data, tmp_path, monkeypatch, capsys):
    """A folder whose events.json claims a 1024 x 1024 sensor: its frames are refused against free memory in one
    line before any array is made (the fuzz's 4.5 GB case), and a float batch of them likewise."""
    import seenn.data.events.dataset as evd

    out = tmp_path / "ev"
    assert main(["events", "emulate", "--dataset", "mnist", "--out", str(out), "--train-limit", "6",
                 "--test-limit", "4", "--data-dir", str(tiny_data), "--quiet"]) == 0
    meta = json.loads((out / "events.json").read_text())
    meta["sensor"] = [1024, 1024]
    (out / "events.json").write_text(json.dumps(meta))
    allocated = []
    real_empty = np.empty
    monkeypatch.setattr(evd.np, "empty", lambda *a, **k: allocated.append(a) or real_empty(*a, **k))
    monkeypatch.setattr("seenn.io.schema.available_memory", lambda: 8 * 2**20)  # 4 recordings x 8 x 2 MiB > 8 MiB
    from seenn.data.events.dataset import measure, read_split

    info = measure(f"events:{out}", 8)
    from seenn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"4 recordings as 8 frames of a 1024x1024 sensor needs about 0\.1 GiB"):
        read_split(info, "test")
    assert allocated == []
    # the batch check: 34 x 34 frames held, a float batch of 4 over the same tiny allowance
    monkeypatch.setattr("seenn.io.schema.available_memory", lambda: 2**40)
    meta["sensor"] = [34, 34]
    (out / "events.json").write_text(json.dumps(meta))
    info = measure(f"events:{out}", 8)
    ds = evd.EventDataset(info, "test", *read_split(info, "test"))
    monkeypatch.setattr("seenn.io.schema.available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match="a batch of 4 recordings as float frames"):
        next(ds.batches(64))
