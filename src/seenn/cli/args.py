"""The ``seenn`` command line: argument types with their documented bounds and the arguments commands share.
Light on purpose: the parser imports only this module, so ``seenn --help`` does not load PyTorch."""

from __future__ import annotations

import argparse
import math

from ..io.schema import BUILTIN_DATASETS, LIMITS

DATASET_NAMES = list(BUILTIN_DATASETS)


def _dataset_name(text: str) -> str:
    if text.startswith(("imagefolder:", "events:")) and not text.split(":", 1)[1].strip():
        raise argparse.ArgumentTypeError(f"{text} needs a folder after the colon (imagefolder:PATH, events:PATH)")
    if text in DATASET_NAMES or text.startswith(("imagefolder:", "events:")):
        return text
    raise argparse.ArgumentTypeError(f"must be one of {DATASET_NAMES}, imagefolder:PATH or events:PATH, got {text!r}")


def _data_args(p) -> None:
    p.add_argument("--data-dir", help="folder holding the datasets (default: $SEENN_DATA, the user cache, "
                                      "/usr/share/datasets)")


def _n(name: str, lo: int = 1):
    """An argparse type: an integer in ``[lo, LIMITS[name]]`` (the documented bound on that size)."""
    hi = LIMITS[name]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {value}")
        return value

    parse.__name__ = name
    return parse


def _x(lo: float, hi: float, open_lo: bool = False, open_hi: bool = False):
    """An argparse type: a finite number in the given range."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > lo if open_lo else value >= lo) and (value < hi if open_hi else
                                                                                     value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number in {'(' if open_lo else '['}{lo:g}, {hi:g}"
                                             f"{')' if open_hi else ']'}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


ALL_RULES = ["confidence", "entropy", "fixed", "policy", "learned", "oracle"]


REAL_RULES = ALL_RULES[:5]  # the rules that run without labels


def _audit_args(p, default: float = 0.0) -> None:
    p.add_argument("--audit-fraction", type=_x(0, 1), default=default, metavar="F",
                   help="run this share of the samples to full T as well and test, without labels, whether the "
                        "early exits' disagreement with full T stays within the certified false-exit bound"
                        + (f" (default {default:g})" if default else ""))
    p.add_argument("--audit-bound", type=_x(0, 1, open_lo=True, open_hi=True),
                   help="the false-exit rate the audit holds the exits to (default: the run's calibrated bound)")
    p.add_argument("--audit-alpha", type=_x(0, 1, open_lo=True, open_hi=True), default=0.01,
                   help="the audit's false-alarm probability over the whole run (default 0.01)")
