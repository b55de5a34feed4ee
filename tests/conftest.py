import os
from pathlib import Path

import numpy as np
import pytest

from seenn.data import write_idx

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _own_trust_list(tmp_path_factory):
    """The tests' trust list for peer network files, never the user's (seenn.interop.trust)."""
    old = os.environ.get("SEENN_TRUST_STORE")
    os.environ["SEENN_TRUST_STORE"] = str(tmp_path_factory.mktemp("trust") / "trusted.json")
    yield
    if old is None:
        os.environ.pop("SEENN_TRUST_STORE", None)
    else:
        os.environ["SEENN_TRUST_STORE"] = old


def real_data_dir():
    """The real datasets: $SEENN_DATA, else ../shared/data beside the checkout; None when absent."""
    for cand in (os.environ.get("SEENN_DATA"), SHARED):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def needs_dataset(name: str):
    folder = {"fashion-mnist": "fashion-mnist", "mnist": "mnist", "cifar10": "cifar-10-batches-bin"}[name]
    root = real_data_dir()
    return pytest.mark.skipif(root is None or not (root / folder).is_dir(),
                              reason=f"{name} is not available (set SEENN_DATA)")


def mid_threshold(scores):
    """A threshold half way between the two middle scores, so that about half the samples pass it.

    The median itself is one of the scores: a test comparing two paths that compute that score in different
    batch shapes (equal up to the last bit) would then pass or fail on float rounding, not on the logic it tests.
    """
    s = scores.flatten().sort().values
    k = len(s) // 2
    return float((s[k - 1] + s[k]) / 2)


def make_images(n, rng, size=28):
    """Learnable synthetic 'fashion': class k is a bright horizontal bar at row band k, plus noise."""
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        r = 2 + 2 * int(k)
        images[i, r:r + 3, 4:24] = 230
    return images, labels


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny dataset in the official IDX layout, installed as 'fashion-mnist' and 'mnist'."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name in ("fashion-mnist", "mnist"):
        folder = root / name
        tr_x, tr_y = make_images(400, rng)
        te_x, te_y = make_images(120, rng)
        write_idx(folder / "train-images-idx3-ubyte.gz", tr_x)
        write_idx(folder / "train-labels-idx1-ubyte.gz", tr_y)
        write_idx(folder / "t10k-images-idx3-ubyte.gz", te_x)
        write_idx(folder / "t10k-labels-idx1-ubyte.gz", te_y)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A run trained for one short epoch on the tiny dataset."""
    from seenn.training.run import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(dataset="fashion-mnist", model="convnet", width=0.25, timesteps=3, epochs=2, batch_size=32,
                      lr=0.05, val_size=60, seed=0)
    train(cfg, out, data_dir=tiny_data, progress=False, log=lambda m: None)
    return out
