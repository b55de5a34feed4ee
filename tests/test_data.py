import gzip
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest
import torch
from conftest import make_images, needs_dataset, real_data_dir

from seenn.data import DATASETS, download, find_dataset, load_dataset, read_cifar_batch, read_idx, write_idx
from seenn.errors import DataError


def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "b", a, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    assert np.array_equal(read_idx(tmp_path / "b"), a)


def test_idx_corrupt_files(tmp_path):
    a = np.zeros((2, 3, 3), dtype=np.uint8)
    write_idx(tmp_path / "ok", a, compress=False)
    raw = (tmp_path / "ok").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x00\x00\x0d\x03" + raw[4:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "bad.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="gzip"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-8])
    with pytest.raises(DataError):
        read_idx(tmp_path / "cut.gz")


def test_cifar_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    rec = np.concatenate([labels[:, None], imgs.reshape(5, -1)], axis=1)
    (tmp_path / "b.bin").write_bytes(rec.tobytes())
    x, y = read_cifar_batch(tmp_path / "b.bin")
    assert np.array_equal(x, imgs) and np.array_equal(y, labels)
    (tmp_path / "short.bin").write_bytes(rec.tobytes()[:-1])
    with pytest.raises(DataError, match="records"):
        read_cifar_batch(tmp_path / "short.bin")


def test_missing_dataset_names_files_and_fix(tmp_path):
    with pytest.raises(DataError) as e:
        find_dataset("mnist", tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "seenn download mnist" in msg and "\n" not in msg


def test_discovery_order(tmp_path, monkeypatch, tiny_data):
    monkeypatch.setenv("SEENN_DATA", str(tiny_data))
    assert find_dataset("fashion-mnist") == tiny_data / "fashion-mnist"
    monkeypatch.setenv("SEENN_DATA", str(tmp_path))  # empty: falls through to the user cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny_data.parent / "cache"))
    cache = tiny_data.parent / "cache" / "seenn" / "data"
    (cache).mkdir(parents=True, exist_ok=True)
    if not (cache / "mnist").exists():
        (cache / "mnist").symlink_to(tiny_data / "mnist")
    assert find_dataset("mnist") == cache / "mnist"


def test_splits_and_limit(tiny_data):
    tr = load_dataset("fashion-mnist", "train", data_dir=tiny_data, val_size=100)
    va = load_dataset("fashion-mnist", "val", data_dir=tiny_data, val_size=100)
    te = load_dataset("fashion-mnist", "test", data_dir=tiny_data, limit=7)
    assert (len(tr), len(va), len(te)) == (300, 100, 7)
    x, y = next(tr.batches(16))
    assert x.shape == (16, 1, 28, 28) and x.dtype.is_floating_point and y.shape == (16,)
    with pytest.raises(DataError):
        load_dataset("fashion-mnist", "bogus", data_dir=tiny_data)
    with pytest.raises(DataError):
        load_dataset("fashion-mnist", "test", data_dir=tiny_data, limit=0)


@needs_dataset("fashion-mnist")
def test_real_fashion_mnist_reads():
    te = load_dataset("fashion-mnist", "test", data_dir=real_data_dir())
    assert len(te) == 10000 and int(te.labels.max()) == 9
    assert np.bincount(te.labels.numpy()).tolist() == [1000] * 10


@needs_dataset("cifar10")
def test_real_cifar10_reads_and_augments():
    te = load_dataset("cifar10", "test", data_dir=real_data_dir(), limit=64)
    x, _ = next(te.batches(64))
    assert x.shape == (64, 3, 32, 32)
    import torch
    aug = next(te.batches(64, augment=True, generator=torch.Generator().manual_seed(0)))[0]
    assert aug.shape == x.shape and not torch.equal(aug, x)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture
def http_dir(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **kw: _Quiet(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_idx_from_local_server(http_dir, tmp_path):
    served, url = http_dir
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 30), ("t10k", 10)):
        x, y = make_images(n, rng)
        write_idx(served / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(served / f"{prefix}-labels-idx1-ubyte.gz", y)
    target = tmp_path / "data"
    folder = download("mnist", target, base_url=url)
    assert folder == target / "mnist"
    assert len(load_dataset("mnist", "test", data_dir=target)) == 10


def test_download_cifar_archive_from_local_server(http_dir, tmp_path):
    served, url = http_dir
    rng = np.random.default_rng(2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in DATASETS["cifar10"].files:
            rec = np.concatenate([rng.integers(0, 10, (4, 1)), rng.integers(0, 256, (4, 3072))], 1).astype(np.uint8)
            data = rec.tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (served / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    target = tmp_path / "data"
    download("cifar10", target, base_url=url)
    assert len(load_dataset("cifar10", "train", data_dir=target, val_size=0)) == 20


def test_download_failure_is_clear(http_dir, tmp_path):
    served, url = http_dir  # serves nothing
    with pytest.raises(DataError, match="cannot download"):
        download("fashion-mnist", tmp_path / "data", base_url=url)
    (served / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    for f in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (served / f).write_bytes(b"garbage")
    with pytest.raises(DataError, match="gzip"):
        download("fashion-mnist", tmp_path / "data2", base_url=url)
    assert list((tmp_path / "data2").iterdir()) == []  # nothing half-downloaded is left where readers look


def test_jpeg_roundtrip_augmentation():
    """--jpeg P: each image re-encoded as JPEG with probability P (quality in JPEG_QUALITY), reproducibly; grey and
    RGB alike; P = 0 leaves the batch as it is."""
    from seenn.data.augment import jpeg_roundtrip
    from seenn.errors import ConfigError
    from seenn.training.config import TrainConfig

    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (32, 3, 8, 8)), 4, axis=2), 4, axis=3).astype(np.uint8)
    x = torch.from_numpy(smooth)
    assert torch.equal(jpeg_roundtrip(x, 0.0), x)
    a = jpeg_roundtrip(x, 1.0, torch.Generator().manual_seed(1))
    b = jpeg_roundtrip(x, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    changed = (a != x).flatten(1).any(1)
    assert changed.all()
    mse = ((a.float() - x.float()) ** 2).mean()
    assert 20 < 10 * torch.log10(255.0 ** 2 / mse) < 50  # lossy, but the same picture
    half = jpeg_roundtrip(x, 0.5, torch.Generator().manual_seed(2))
    assert 0 < (half != x).flatten(1).any(1).sum() < len(x)
    grey = jpeg_roundtrip(x[:, :1].contiguous(), 1.0)
    assert grey.shape == (32, 1, 32, 32)
    with pytest.raises(ConfigError, match="jpeg"):
        TrainConfig(jpeg=1.5).validate()


def test_idx_header_is_checked_before_the_data_is_read(tmp_path):
    """A gzip bomb (a small header, then far more data than it promises) stops after the promised bytes; a header
    promising more than the memory is refused before anything is allocated."""
    import gzip
    import struct

    from seenn.errors import SeennError

    head = bytes([0, 0, 8, 3]) + struct.pack(">III", 10, 28, 28)
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(head + bytes(10 * 28 * 28 + 50_000_000)))
    with pytest.raises(DataError, match="more"):
        read_idx(tmp_path / "bomb.gz")
    huge = bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31, 2**31, 28)
    (tmp_path / "huge.gz").write_bytes(gzip.compress(huge))
    with pytest.raises(SeennError, match="promises"):
        read_idx(tmp_path / "huge.gz")
