"""Augmentations on uint8 image batches ``[B, C, H, W]``, drawn from the caller's generator: JPEG re-encoding
(``jpeg_roundtrip``, ``jpeg_recode``), shifts with mirroring (``shift_flip``) and the classic crop-and-flip."""

from __future__ import annotations

import io

import numpy as np
import torch

from ..errors import ConfigError

JPEG_QUALITY = (40, 95)  # the range a --jpeg re-encoding draws its quality from, uniformly


def jpeg_roundtrip(x: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    """Each uint8 image of ``x`` [B, C, H, W] is, with probability ``p``, encoded as JPEG at a quality drawn from
    ``JPEG_QUALITY`` and decoded again (see ``jpeg_recode``). A training augmentation for robustness to compression
    artifacts, a common mild distribution shift: the CIFAR-10 test batch shipped here is 90% JPEG-decoded (quality
    75) and the rest exact."""
    pick = torch.rand(len(x), generator=generator) < p
    quality = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (len(x),), generator=generator)
    if not pick.any():
        return x
    out = x.clone()
    out[pick] = jpeg_recode(x[pick], quality[pick].tolist())
    return out


def jpeg_recode(x: torch.Tensor, quality) -> torch.Tensor:
    """The uint8 images ``x`` [B, C, H, W] encoded as JPEG at ``quality`` (one int, or one per image) and decoded
    again (Pillow, 4:2:0 chroma subsampling for RGB, as most encoders write it)."""
    from PIL import Image

    qualities = [int(quality)] * len(x) if isinstance(quality, int) else [int(q) for q in quality]
    out = torch.empty_like(x)
    for i, q in enumerate(qualities):
        arr = x[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert(img.mode))
        out[i] = torch.from_numpy(dec.reshape(arr.shape).copy()).permute(2, 0, 1)
    return out


def shift_flip(x: torch.Tensor, shift: int, padding: str, flips: torch.Tensor, generator) -> torch.Tensor:
    """Each image of ``x`` ``[B, C, H, W]`` moved by a shift drawn in ``[-shift, shift]`` on each axis (the
    uncovered border ``zeros`` or ``reflect``-ed), and mirrored where ``flips``; one gather, any dtype."""
    b, c, h, w = x.shape
    if shift >= min(h, w):
        raise ConfigError(f"a translation of {shift} pixels needs images larger than {h}x{w}")
    dy = torch.randint(-shift, shift + 1, (b, 1), generator=generator)
    dx = torch.randint(-shift, shift + 1, (b, 1), generator=generator)
    rows = torch.arange(h)[None, :] + dy  # [B, H] source row of each output row
    cols = torch.arange(w)[None, :] + dx
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    if padding == "reflect":
        rows = torch.where(rows < 0, -rows, torch.where(rows >= h, 2 * (h - 1) - rows, rows))
        cols = torch.where(cols < 0, -cols, torch.where(cols >= w, 2 * (w - 1) - cols, cols))
        inside = None
    else:
        inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    out = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    out = out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    return out if inside is None else out * inside


def crop_flip(x: torch.Tensor, generator) -> torch.Tensor:
    """Each image padded by 4 zero pixels, cropped back at a random offset and mirrored with probability 1/2."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=generator)
    dx = torch.randint(0, 9, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, x.shape[1], h, w + 8)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(b, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out
