"""The int8 path's native kernel, compiled on first use with PyTorch's C++ extension loader (a C++ compiler and ninja
needed; the build is cached by PyTorch under ``~/.cache/torch_extensions``): ``spike_pool``, the charge, fire and
reset of a spiking layer and the sum pooling of its spikes into uint8 counts, in one pass (``spike_pool.cpp``).
It serves the int8 inference path (:class:`~seenn.runtime.precision.layers.CountingNeuron`), where the counts go straight into an int8 convolution.

Everything works without it: :func:`kernel` returns None when it cannot be built (no compiler, another platform,
``SEENN_NATIVE=0``), and callers then take the eager PyTorch path, which gives the same numbers.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

_state: dict = {"fn": None, "tried": False}


def kernel():
    """The compiled ``spike_pool(x, v, decay, threshold, soft, k) -> (counts, v')``, or None."""
    if _state["tried"]:
        return _state["fn"]
    _state["tried"] = True
    if os.environ.get("SEENN_NATIVE", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        from torch.utils.cpp_extension import load

        src = Path(__file__).with_name("spike_pool.cpp")
        if not _built("seenn_spike_pool"):
            print("seenn: building the int8 spiking kernel (once, about a minute; SEENN_NATIVE=0 skips it)",
                  file=sys.stderr)
        # -fno-trapping-math: without it GCC does not vectorise the firing loop (the values are the same)
        mod = load(name="seenn_spike_pool", sources=[str(src)],
                   extra_cflags=["-O3", "-march=native", "-fno-trapping-math", "-fopenmp"], extra_ldflags=["-fopenmp"],
                   verbose=False)
        _state["fn"] = mod.spike_pool
    except Exception as e:  # noqa: BLE001 - any build failure: the eager path serves
        warnings.warn(f"seenn's native spiking kernel could not be built ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); using the eager path")
    return _state["fn"]


def _built(name: str) -> bool:
    """Whether PyTorch's extension cache already holds a build of ``name`` (then loading takes a moment, not a
    minute); a guess only, for the message."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    except Exception:  # noqa: BLE001 - a private helper: if it moves, say the message
        return False
