"""How a run's weights are stored in ``model.safetensors``: ``fp32`` (as trained), ``fp16`` (every floating tensor
in half precision) or ``int8`` (each convolution and linear weight as int8 with one fp32 scale per output channel,
symmetric, ``scale = max |w| / 127``, kept under the key ``NAME#scale``; every other tensor in fp32). All three
load as fp32 (:func:`expand_state`); fp16 and int8 trade a little accuracy for a half or a quarter of the bytes
(measured for the shipped runs in docs/benchmarks.md). ``seenn export RUN --format run --weights int8`` writes
such a copy of a run. The form is recorded in the file's metadata, in its one key (:func:`metadata`: a second key
would be written in a random order, and the same weights would not give the same bytes)."""

from __future__ import annotations

import torch

from ..errors import CheckpointError

STORAGE = ("fp32", "fp16", "int8")
SCALE = "#scale"
MIN_INT8_NUMEL = 256  # smaller tensors (biases, BN, thresholds) stay fp32 in the int8 form


def metadata(weights: str) -> dict:
    """The safetensors metadata of a run's weights stored as ``weights``: ``{"format": "seenn"}`` for fp32 (as
    every run before the other forms), ``"seenn-fp16"`` / ``"seenn-int8"`` else."""
    return {"format": "seenn" if weights == "fp32" else f"seenn-{weights}"}


def compact_state(state: dict, weights: str = "fp32") -> dict:
    """``state`` (name -> tensor) in the storage form ``weights``."""
    if weights not in STORAGE:
        raise CheckpointError(f"weights are stored as {', '.join(STORAGE)}, not {weights!r}")
    out = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if not v.is_floating_point() or weights == "fp32":
            out[k] = v
        elif weights == "fp16":
            out[k] = v.half()
        elif v.ndim >= 2 and v.numel() >= MIN_INT8_NUMEL:
            w = v.float().reshape(len(v), -1)
            amax = w.abs().amax(1)
            scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
            out[k] = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k + SCALE] = scale
        else:
            out[k] = v.float()
    return out


def expand_state(state: dict, where: str) -> dict:
    """A stored state back in fp32 where it was compacted: each int8 tensor with its ``#scale`` is dequantized.
    A scale without its tensor, of the wrong shape, or not finite and positive is refused."""
    out = {k: v for k, v in state.items() if not k.endswith(SCALE)}
    for k, scale in state.items():
        if not k.endswith(SCALE):
            continue
        name = k[:-len(SCALE)]
        q = state.get(name)
        if q is None or q.dtype != torch.int8 or q.ndim < 1:
            raise CheckpointError(f"{where}: {k} scales no int8 tensor {name}")
        if scale.shape != (len(q),) or not scale.is_floating_point() or not (torch.isfinite(scale).all()
                                                                            and (scale > 0).all()):
            raise CheckpointError(f"{where}: {k} must hold {len(q)} finite positive scales, one per output channel")
        out[name] = q.float() * scale.float().reshape(-1, *([1] * (q.ndim - 1)))
    return out
