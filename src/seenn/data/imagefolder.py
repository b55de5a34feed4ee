"""Your own images: ``--dataset imagefolder:PATH`` reads torchvision's ImageFolder layout, one folder per class.

``PATH/train/CLASS/*.png|jpg|...`` and ``PATH/test/CLASS/...`` (or ``PATH/CLASS/...`` alone: a training set only).
Images are resized to ``image_size`` x ``image_size`` (bilinear; default 32), grey when every training image is
grey, else RGB; the per-channel mean and std come from the training images. The pipeline (size, channels, mean,
std, class names) is recorded in the run's ``config.json`` (``"data"``) and reused by every later command, so a
run always sees its images the way it was trained. The validation split is the last ``val_size`` images of a fixed
shuffle of the training images (seed 0), never trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io.schema import LIMITS
from .info import DatasetInfo, class_folders

PREFIX = "imagefolder:"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 1 << 24  # 16.8 million pixels (4096 x 4096): a larger image is refused from its header, undecoded


def as_8bit(im, mode: str, where: str):
    """A PIL image (opened lazily: only its header read so far) as an 8-bit ``mode`` ("L" or "RGB") image.
    Refused from the header when it has more than ``MAX_PIXELS`` pixels, before any decoding; 16-bit and 32-bit
    grey images are scaled to 8 bits (65535 -> 255), never clipped; float images in [0, 1] are scaled by 255."""
    from PIL import Image

    w, h = im.size
    if w * h > MAX_PIXELS:
        raise DataError(f"{where} is {w} x {h} pixels, more than the {MAX_PIXELS} an image may have")
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and a.size and a.max() > 255):
            a = a / 257.0
        elif im.mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    return im.convert(mode)
DEFAULT_IMAGE_SIZE = 32


def is_imagefolder(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def _root(name: str) -> Path:
    root = Path(name[len(PREFIX):]).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (imagefolder:PATH needs one folder per class)")
    return root


def _split_dir(root: Path, split: str) -> Path:
    if (root / "train").is_dir():
        d = root / ("test" if split == "test" else "train")
        if not d.is_dir():
            raise DataError(f"{root} has no {d.name}/ folder for the {split} split")
        return d
    if split == "test":
        raise DataError(f"{root} has no train/ and test/ folders: it is a training set only (make PATH/train/CLASS "
                        "and PATH/test/CLASS for a test split)")
    return root


def _listing(folder: Path, classes=None):
    return class_folders(folder, EXTENSIONS, classes, "images")


def _read(files, size: int, channels: int | None):
    from PIL import Image, UnidentifiedImageError

    images, modes = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                modes.append(im.mode)
                images.append(as_8bit(im, "RGB", str(f)).resize((size, size), Image.BILINEAR))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"{f} is not a readable image ({e})") from None
    if channels is None:
        channels = 1 if all(m in ("L", "1", "I", "F", "LA") or m.startswith("I;16") for m in modes) else 3
    arr = np.stack([np.asarray(im.convert("L") if channels == 1 else im, dtype=np.uint8) for im in images])
    return (arr[:, None] if channels == 1 else arr.transpose(0, 3, 1, 2)), channels


def _info(name, channels, size, mean, std, classes):
    return DatasetInfo(name, "", channels, size, len(classes), tuple(mean), tuple(std), (), (),
                       f"make {name[len(PREFIX):]}/train/CLASS/ image folders", tuple(classes))


def from_record(name: str, data: dict):
    """The dataset read through the pipeline a run recorded (``config["data"]``)."""
    return _info(name, data["channels"], data["image_size"], data["mean"], data["std"], data["class_names"])


adopt = from_record  # another folder, the run's resizing, normalisation and classes


def pipeline_record(info) -> dict:
    return {"image_size": info.image_size, "channels": info.channels, "mean": list(info.mean),
            "std": list(info.std), "class_names": list(info.class_names), "resize": "bilinear, to a square"}


def measure(name: str, image_size: int | None = None):
    """The dataset's pipeline measured on its training images (resized to ``image_size``, default 32)."""
    size = image_size or DEFAULT_IMAGE_SIZE
    if not 1 <= size <= LIMITS["image_size"]:
        raise DataError(f"--image-size must be in [1, {LIMITS['image_size']}], got {size}")
    classes, files, labels = _listing(_split_dir(_root(name), "train"))
    images, channels = _read(files, size, None)
    x = images.astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 2, 3))
    std = np.maximum(x.std(axis=(0, 2, 3)), 1e-3)
    info = _info(name, channels, size, [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std],
                 classes)
    return info


def read_split(info, split: str):
    """(uint8 images [N, C, S, S], labels [N]) of ``train`` (all training images, in a fixed shuffle) or ``test``."""
    part = "test" if split == "test" else "train"
    _, files, labels = _listing(_split_dir(_root(info.name), part), list(info.class_names))
    images, _ = _read(files, info.image_size, info.channels)
    if part == "train":  # a fixed shuffle: the validation hold-out (the last records) covers every class
        order = np.random.default_rng(0).permutation(len(labels))
        return images[order], labels[order]
    return images, labels
