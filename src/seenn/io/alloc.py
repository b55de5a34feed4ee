"""The C allocator's settings for tensor work on CPU.

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults a freed block of more than 128 KiB goes back to
the system (its threshold rises only as far as the largest block freed so far, up to 32 MiB), and the next tensor
of that size is paged in again, page by page: on the 2-core machines seenn is measured on, the early-exit runner
spent more than half its time in those page faults (`docs/benchmarks.md`, optimisation log). :func:`tune_allocator` keeps freed memory for reuse: every block comes from the heap (no
``mmap`` of its own, whatever its size) and the heap is not trimmed below 2 GiB free. Blocks over 32 MiB (glibc's
largest mmap threshold) matter in training at batch 1024: with them mapped anew each time, a training step of the
airbench network spent a third of its time in the kernel paging them in (docs/benchmarks.md, optimisation log). The process keeps its peak footprint; the numbers do not change. The ``seenn`` command calls it at start (``SEENN_TUNE_ALLOC=0`` turns it off); library users may call it
once, or set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1  # (an int) 2 GiB free at the heap's top before any goes back


def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc only; elsewhere nothing happens). Returns whether the settings took."""
    if os.environ.get("SEENN_TUNE_ALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and ok  # larger blocks too: from the heap, kept for reuse
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    return ok
