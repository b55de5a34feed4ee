"""Dataset readers for the official on-disk formats, data-folder discovery and download.

- ``fashion-mnist``, ``mnist``: IDX files (``train-images-idx3-ubyte.gz`` ...), gzipped or not.
- ``cifar10``: the official binary version (``cifar-10-batches-bin/data_batch_{1..5}.bin``, ``test_batch.bin``).
- ``cifar100``: the official binary version (``cifar-100-binary/train.bin``, ``test.bin``; each record a coarse and
  a fine label byte, then the pixels as in CIFAR-10): the 100 fine classes.

Images are kept as uint8 in memory and normalised per batch (:meth:`Dataset.batches`), so a whole split
costs one byte per pixel. Splits: ``train`` (training data minus the validation hold-out), ``val`` (the
last ``val_size`` training records, never used for fitting), ``test``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..io.files import atomic_write_bytes  # noqa: F401 (also seenn.data's)
from ..io.schema import available_memory
from .augment import crop_flip, jpeg_roundtrip, shift_flip
from .events.dataset import EventDataset
from .info import DatasetInfo
from .sources import run_pipeline, source

_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor "
    "train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()

DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,), _IDX_FILES,
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "run `seenn download fashion-mnist`, or on Debian `apt-get install dataset-fashion-mnist`",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "mnist": DatasetInfo(
        "mnist", "mnist", 1, 28, 10, (0.1307,), (0.3081,), _IDX_FILES,
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        "run `seenn download mnist`", tuple(str(i) for i in range(10))),
    "cifar10": DatasetInfo(
        "cifar10", "cifar-10-batches-bin", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        _CIFAR_FILES, ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
        "run `seenn download cifar10` (the official binary version, cifar-10-binary.tar.gz)",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": DatasetInfo(
        "cifar100", "cifar-100-binary", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        ("train.bin", "test.bin"), ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
        "run `seenn download cifar100` (the official binary version, cifar-100-binary.tar.gz)", tuple(_CIFAR100_FINE)),
}

SPLITS = ("train", "val", "test")
DEFAULT_VAL_SIZE = 5000


def dataset_info(name: str, run_config: dict | None = None) -> DatasetInfo:
    """What ``name`` is: a registered dataset, or a prefixed folder, read through ``run_config``'s recorded
    pipeline where it is that run's dataset or a folder of the same kind given in its place, else measured."""
    if run_config is not None:
        info = run_pipeline(run_config, name)
        if info is not None:
            return info
    if source(name) is not None:
        return source(name).measure(name)
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, imagefolder:PATH or "
                        "events:PATH") from None


# ------------------------------------------------------------------------------------------- discovery


def candidate_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where datasets are looked for, in order: ``data_dir``, ``$SEENN_DATA``, the user cache, /usr/share/datasets."""
    if data_dir is not None:
        return [Path(data_dir)]
    roots = []
    if os.environ.get("SEENN_DATA"):
        roots.append(Path(os.environ["SEENN_DATA"]))
    roots.append(user_data_dir())
    roots.append(Path("/usr/share/datasets"))
    return roots


def user_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "seenn" / "data"


EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "embedded"  # Fashion-MNIST's test split, shipped for the offline demo
EMBEDDED = "embedded"  # data_dir value that selects it


def embedded_folder(name: str) -> Path:
    """The test split shipped inside the package (Fashion-MNIST only), its checksums verified."""
    folder = EMBEDDED_DIR / dataset_info(name).folder
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise DataError(f"seenn ships no embedded copy of {name}")
    for line in sums.read_text().splitlines():
        digest, fname = line.split()
        try:
            ok = hashlib.sha256((folder / fname).read_bytes()).hexdigest() == digest
        except OSError:
            ok = False
        if not ok:
            raise DataError(f"the embedded {folder / fname} is missing or corrupt (reinstall seenn)")
    return folder


def find_dataset(name: str, data_dir=None, split: str | None = None) -> Path:
    """The folder holding ``name`` (for ``split == "test"`` only the test files are needed). ``data_dir ==
    "embedded"`` selects the copy shipped inside the package (Fashion-MNIST's test split, for ``seenn demo``)."""
    info = dataset_info(name)
    if data_dir == EMBEDDED:
        if split != "test":
            raise DataError(f"only the test split of {name} is embedded; the {split} split needs the dataset "
                            f"({info.how_to_get})")
        return embedded_folder(name)
    files = info.files
    if split == "test":
        files = tuple(f for f in files if f.startswith(("t10k", "test")))
    roots = candidate_roots(data_dir)
    for root in roots:
        folder = root / info.folder
        if all(_present(folder / f) for f in files):
            return folder
    expected = ", ".join(info.files)
    where = " or ".join(str(r / info.folder) for r in roots)
    raise DataError(f"{name} not found: expected {expected} in {where}; {info.how_to_get}")


def _present(path: Path) -> bool:
    return path.is_file() or (path.suffix == ".gz" and path.with_suffix("").is_file())


# ------------------------------------------------------------------------------------------- readers


def _read_bytes(path: Path) -> bytes:
    if not path.is_file() and path.suffix == ".gz":
        path = path.with_suffix("")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is not a valid gzip file ({e}); delete it and download it again") from None
    return raw


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 0x0000 08 NDIM), gzipped or not. The header is read first and the
    size it promises checked against free memory before the data is read; a gzip stream is decompressed only as
    far as that size (a decompression bomb is refused after its header, not after filling the memory)."""
    path = Path(path)
    if not path.is_file() and path.suffix == ".gz":
        path = path.with_suffix("")

    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or not 1 <= magic[3] <= 4:
                raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
            ndim = magic[3]
            head = f.read(4 * ndim)
            if len(head) < 4 * ndim:
                raise DataError(f"{path} is truncated (incomplete IDX header)")
            dims = struct.unpack(">" + "I" * ndim, head)
            count = math.prod(dims)  # Python integers: a header's sizes cannot overflow
            if count > available_memory():
                raise DataError(f"{path}: its IDX header promises {' x '.join(map(str, dims))} bytes, more than "
                                "this machine's free memory (a corrupt or hostile file)")
            data = f.read(count)
            extra = f.read(1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a valid {'gzip' if path.suffix == '.gz' else 'IDX'} file ({e}); delete it and "
                        "download it again") from None
    if len(data) != count or extra:
        raise DataError(f"{path} holds {'more' if extra else len(data)} bytes of data, its IDX header promises {count} "
                        "(truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write an IDX file of unsigned bytes (used by tests and tools that make small datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()
    atomic_write_bytes(Path(path), gzip.compress(raw) if compress else raw)


def read_cifar_batch(path: Path, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 batch (one label byte per record) or, with ``classes=100``, a CIFAR-100 file (a coarse and a
    fine label byte; the fine label is returned)."""
    heads = 1 if classes == 10 else 2
    size = heads + 3 * 32 * 32
    name = "CIFAR-10" if classes == 10 else "CIFAR-100"
    raw = _read_bytes(Path(path))
    if len(raw) == 0 or len(raw) % size:
        raise DataError(f"{path} has {len(raw)} bytes, not a whole number of {size}-byte {name} records")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
    labels = rec[:, heads - 1].copy()
    if labels.max() >= classes or (heads == 2 and rec[:, 0].max() >= 20):
        raise DataError(f"{path} has a label byte {labels.max()} >= {classes}: not a {name} binary file")
    return rec[:, heads:].reshape(-1, 3, 32, 32), labels


# ------------------------------------------------------------------------------------------- datasets


class Dataset:
    """One split in memory: ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``."""

    def __init__(self, info: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray):
        if len(images) != len(labels):
            raise DataError(f"{info.name}: {len(images)} images but {len(labels)} labels")
        self.info = info
        self.split = split
        self.images = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self._mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def shard(self, rank: int, world: int) -> "Dataset":
        """Every ``world``-th sample from ``rank`` (a process's share under torchrun)."""
        return Dataset(self.info, self.split, self.images[rank::world].numpy(), self.labels[rank::world].numpy())

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return (images_uint8.float() / 255.0 - self._mean) / self._std

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False, jpeg: float = 0.0, translate: int = 4, padding: str = "zeros",
                flip: str = "random", flip_seed: int = 0, epoch: int = 1):
        """Yield ``(x float [B, C, H, W], y [B])``; ``jpeg``: the probability that an image is first re-encoded as
        JPEG (see ``jpeg_roundtrip``). ``augment`` (RGB images only): each image shifted by up to ``translate``
        pixels (``padding`` ``zeros`` or ``reflect`` at the borders) and flipped: at random (``flip="random"``),
        or in alternate epochs (``"alternate"``: a fixed random half of the images, drawn from ``flip_seed``,
        flipped in odd epochs and the other half in even ones). The defaults are the classic crop and flip. All
        on uint8 tensors, a batch at a time."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        alternate = None
        if augment and flip == "alternate":
            alternate = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(flip_seed)).bool()
            alternate ^= bool(epoch % 2)
        classic = translate == 4 and padding == "zeros" and flip == "random"
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            x = self.images[idx]
            if jpeg > 0.0:
                x = jpeg_roundtrip(x, jpeg, generator)
            if augment and self.info.channels == 3:
                if classic:
                    x = crop_flip(x, generator)  # (as it always was: earlier runs resume bit for bit)
                else:
                    flips = alternate[idx] if alternate is not None else \
                        torch.rand(len(idx), generator=generator) < 0.5
                    x = shift_flip(x, translate, padding, flips, generator)
            yield self.normalize(x), self.labels[idx]


def load_dataset(name: str, split: str, *, data_dir=None, limit: int | None = None,
                 val_size: int = DEFAULT_VAL_SIZE, info: DatasetInfo | None = None) -> Dataset:
    """Load one split. ``limit`` keeps the first N samples of the split. ``info``: the pipeline to read a prefixed
    dataset through (a run's: :func:`dataset_info` with its config; a measured one: ``sources.prepare``), else
    :func:`dataset_info` of ``name``."""
    info = info if info is not None else dataset_info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1, got {limit}")

    if source(name) is not None:
        arrays = source(name).read_split(info, split)  # (images, labels) or, for events, (frames, ends, labels)
    elif split == "test":
        arrays = _read_test(info, find_dataset(name, data_dir, "test"))
    else:
        arrays = _read_train(info, find_dataset(name, data_dir, "train"))
    n = len(arrays[-1])
    if split != "test":
        if not 0 <= val_size < n:
            raise DataError(f"validation size {val_size} must be in [0, {n})")
        cut = n - val_size
        arrays = tuple(a[:cut] if split == "train" else a[cut:] for a in arrays)
    if limit is not None:
        arrays = tuple(a[:limit] for a in arrays)
    if len(arrays) == 3:
        return EventDataset(info, split, *arrays)
    return Dataset(info, split, *arrays)


def _read_idx_pair(folder: Path, prefix: str, info: DatasetInfo):
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.shape[1:] != (info.image_size, info.image_size) or labels.ndim != 1:
        raise DataError(f"{folder}: {prefix} images have shape {images.shape}, expected (N, 28, 28)")
    if len(images) == 0:
        raise DataError(f"{folder}: {prefix}-images-idx3-ubyte holds no images")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} has {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= info.num_classes:
        raise DataError(f"{folder}: {prefix} labels go up to {labels.max()}, expected < {info.num_classes}")
    return images[:, None], labels


def _read_train(info: DatasetInfo, folder: Path):
    if info.name == "cifar10":
        parts = [read_cifar_batch(folder / f) for f in info.files[:5]]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if info.name == "cifar100":
        return read_cifar_batch(folder / "train.bin", 100)
    return _read_idx_pair(folder, "train", info)


def _read_test(info: DatasetInfo, folder: Path):
    if info.name == "cifar10":
        return read_cifar_batch(folder / "test_batch.bin")
    if info.name == "cifar100":
        return read_cifar_batch(folder / "test.bin", 100)
    return _read_idx_pair(folder, "t10k", info)


def cifar_lossless_mask(data_dir=None) -> np.ndarray:
    """For a CIFAR-10 test batch assembled from exact and JPEG-decoded records: ``test_batch_lossless.txt`` beside
    it holds one line per record, 1 exact, 0 from JPEG. The official file has no such list (every record exact)."""
    folder = find_dataset("cifar10", data_dir)
    path = folder / "test_batch_lossless.txt"
    if not path.is_file():
        raise DataError(f"{path} is missing: this CIFAR-10 test batch has no JPEG part to compare against")
    try:
        flags = np.array([int(line) for line in path.read_text().split()], dtype=np.int64)
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{path} must hold one 0 or 1 per line") from None
    if flags.size and not np.isin(flags, (0, 1)).all():
        raise DataError(f"{path} must hold one 0 or 1 per line, found {sorted(set(flags.tolist()) - {0, 1})[:3]}")
    records = len(read_cifar_batch(folder / "test_batch.bin")[1])
    if len(flags) != records:
        raise DataError(f"{path} has {len(flags)} lines, test_batch.bin has {records} records")
    return flags == 1


# ------------------------------------------------------------------------------------------- files


# ------------------------------------------------------------------------------------------- download


def download(name: str, data_dir=None, *, base_url: str | None = None, timeout: float = 60.0) -> Path:
    """Download a dataset into ``data_dir`` (default: ``$SEENN_DATA`` or the user cache) and check it reads.

    ``base_url`` (or ``$SEENN_MIRROR``) replaces the official address: a folder holding the same file names
    (for CIFAR-10, ``cifar-10-binary.tar.gz``). Returns the dataset folder."""
    info = dataset_info(name)
    try:
        return find_dataset(name, data_dir)
    except DataError:
        pass
    root = Path(data_dir) if data_dir else Path(os.environ.get("SEENN_DATA") or user_data_dir())
    folder = root / info.folder
    base_url = base_url or os.environ.get("SEENN_MIRROR")
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    except OSError as e:
        raise DataError(f"cannot write to {root}: {e.strerror}") from None
    try:
        # everything lands in a staging folder first and is checked there: a failed or corrupt download
        # never leaves a half dataset where the readers look
        stage = staging / info.folder
        stage.mkdir()
        if name in ("cifar10", "cifar100"):
            tar_name = info.urls[0].rsplit("/", 1)[1]
            url = info.urls[0] if not base_url else base_url.rstrip("/") + "/" + tar_name
            archive = staging / tar_name
            _fetch(url, archive, timeout)
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    for member in tar.getmembers():
                        base = Path(member.name).name
                        if member.isfile() and base in info.files + ("batches.meta.txt", "fine_label_names.txt",
                                                                     "coarse_label_names.txt"):
                            (stage / base).write_bytes(tar.extractfile(member).read())
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                raise DataError(f"{url} did not give a valid tar.gz archive ({e})") from None
        else:
            for f in info.files:
                _fetch((base_url.rstrip("/") + "/" if base_url else info.urls[0]) + f, stage / f, timeout)
        for split in ("train", "test"):  # prove it reads; a corrupt download fails here with a clear message
            load_dataset(name, split, data_dir=staging, val_size=0)
        folder.mkdir(parents=True, exist_ok=True)
        for f in stage.iterdir():
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _fetch(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (OSError, ValueError) as e:  # URLError is an OSError
        if dest.exists():
            dest.unlink()
        raise DataError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
