"""Peak memory of evaluating the whole CIFAR-10 test batch (10,000 images): evaluation streams the data in batches,
so the peak stays far below what all activations of all samples would take.

    python benchmarks/memory.py [--model vgg --width 0.5 --timesteps 4]

The network is untrained (random weights: memory does not depend on them). Each evaluation runs in a fresh
process; its peak resident memory is read from the kernel. Writes the section "memory" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, machine, publish, today

from seenn.checkpoint import save_run
from seenn.models import build_model


def peak_eval(run: Path, batch_size: int) -> tuple[float, float]:
    """(peak resident MiB, seconds) of `seenn eval` on the CIFAR-10 test batch in a fresh process."""
    code = ("import resource, sys; from seenn.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, "eval", str(run), "--dataset", "cifar10", "--json",
                        "--batch-size", str(batch_size)], capture_output=True, text=True, check=True, cwd=ROOT)
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
            mib, secs = peak_eval(run, bs)
            rows.append((bs, mib, secs))
            print(bs, mib, secs, file=sys.stderr)
    params = sum(p.numel() for p in model.parameters())
    lines = ["## Peak memory of evaluating the CIFAR-10 test batch", "",
             f"{today()}, `python benchmarks/memory.py --model {args.model} --width {args.width} --timesteps "
             f"{args.timesteps}`, {machine()}.", "",
             f"`seenn eval` on all 10,000 test images (a {args.model} at width {args.width}, {params:,} parameters, "
             f"T = {args.timesteps}, untrained weights), each in a fresh process: the test batch is held as uint8 "
             "(30 MB) and normalised batch by batch; the full-T pass keeps only each sample's step logits.", "",
             "| batch size | peak resident memory (MiB) | wall time (s) |", "|---|---|---|"]
    lines += [f"| {bs} | {mib:.0f} | {secs:.1f} |" for bs, mib, secs in rows]
    publish("memory", lines)


if __name__ == "__main__":
    main()
