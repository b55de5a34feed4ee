"""Peak memory of evaluating the whole CIFAR-10 test batch (10,000 images): evaluation streams the data in batches,
so the peak stays far below what all activations of all samples would take.

    python benchmarks/memory.py [--model vgg --width 0.5 --timesteps 4]

The network is untrained (random weights: memory does not depend on them). Each evaluation runs in a fresh
process; its peak resident memory is read from the kernel. Writes the section "memory" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, machine, publish, today

from seenn.models import build_model
from seenn.runs.store import save_run


def peak_eval(run: Path, batch_size: int, tuned: bool = True) -> tuple[float, float]:
    """(peak resident MiB, seconds) of `seenn eval` on the CIFAR-10 test batch in a fresh process; ``tuned``: the
    allocator as the seenn command sets it (seenn.io.alloc), else glibc as it comes."""
    code = ("import resource, sys; from seenn.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, "eval", str(run), "--dataset", "cifar10", "--json",
                        "--batch-size", str(batch_size)], capture_output=True, text=True, check=True, cwd=ROOT,
                       env={**os.environ, "SEENN_TUNE_ALLOC": "1" if tuned else "0"})
    return int(p.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="vgg")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--timesteps", type=int, default=4)
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model, in_channels=3, image_size=32, num_classes=10, width=args.width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        save_run(run, model, {"dataset": "cifar10", "max_timesteps": args.timesteps, "training": {"val_size": 5000},
                              "model": {"name": args.model, "in_channels": 3, "image_size": 32, "num_classes": 10,
                                        "width": args.width, "surrogate": "tanh"}})
        for bs in (100, 500):
            (mib, secs), (mib0, secs0) = peak_eval(run, bs), peak_eval(run, bs, tuned=False)
            rows.append((bs, mib, secs, mib0, secs0))
            print(bs, mib, secs, mib0, secs0, file=sys.stderr)
    params = sum(p.numel() for p in model.parameters())
    lines = ["## Peak memory of evaluating the CIFAR-10 test batch", "",
             f"{today()}, `python benchmarks/memory.py --model {args.model} --width {args.width} --timesteps "
             f"{args.timesteps}`, {machine()}.", "",
             f"`seenn eval` on all 10,000 test images (a {args.model} at width {args.width}, {params:,} parameters, "
             f"T = {args.timesteps}, untrained weights), each in a fresh process: the test batch is held as uint8 "
             "(30 MB) and normalised batch by batch; the full-T pass keeps only each sample's step logits.", "",
             "The seenn command keeps freed memory for reuse (seenn.io.alloc): faster, at a higher peak; the last two "
             "columns are the same evaluation with `SEENN_TUNE_ALLOC=0` (glibc as it comes).", "",
             "| batch size | peak resident memory (MiB) | wall time (s) | peak, allocator as it comes (MiB) | "
             "wall time, allocator as it comes (s) |", "|---|---|---|---|---|"]
    lines += [f"| {bs} | {mib:.0f} | {secs:.1f} | {mib0:.0f} | {secs0:.1f} |" for bs, mib, secs, mib0, secs0 in rows]
    publish("memory", lines)


if __name__ == "__main__":
    main()
