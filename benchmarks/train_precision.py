"""bf16 training against fp32: short Fashion-MNIST runs (`seenn train --compile [--precision bf16]`) over seeds,
their validation accuracy and seconds, side by side in one invocation.

    python benchmarks/train_precision.py [--seeds 0 1] [--limit 8000] [--epochs 2]

The seed-to-seed spread of the fp32 runs is the run-to-run noise the bf16 runs are judged against. Writes the
section "train-precision" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import allocator, machine, publish, today

from seenn.training.run import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--limit", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    alloc = allocator("tuned")
    rows = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # interleaved: fp32 then bf16 for each seed
            for prec in rows:
                cfg = TrainConfig(dataset="fashion-mnist", model="convnet", timesteps=4, epochs=args.epochs,
                                  batch_size=64, lr=0.1, seed=seed, limit=args.limit, compile=True, precision=prec)
                t0 = time.perf_counter()
                m = train(cfg, Path(tmp) / f"{prec}-{seed}", progress=False, log=lambda msg: None)
                secs = time.perf_counter() - t0
                rows[prec].append((seed, m["best_val_accuracy"], secs))
                print(prec, seed, m["best_val_accuracy"], f"{secs:.0f} s", file=sys.stderr)
    acc = {k: [r[1] for r in v] for k, v in rows.items()}
    secs = {k: [r[2] for r in v] for k, v in rows.items()}
    spread = (max(acc["fp32"]) - min(acc["fp32"])) * 100
    gap = (statistics.mean(acc["bf16"]) - statistics.mean(acc["fp32"])) * 100
    cmd = f"python benchmarks/train_precision.py --seeds {' '.join(map(str, args.seeds))} --limit {args.limit} " \
          f"--epochs {args.epochs}"
    lines = ["## bf16 training against fp32 (`seenn train --precision bf16`)", "",
             f"{today()}, `{cmd}`, {machine()}, {alloc}.", "",
             f"Fashion-MNIST convnet (width 1, T = 4, TET, batch 64, lr 0.1, `--compile`), the first {args.limit} "
             f"training images, {args.epochs} epochs, validation on the 5,000 held-out training images; each seed "
             "trained in fp32 and then in bf16.", "",
             "| precision | seed | validation accuracy | seconds (incl. compile) |", "|---|---|---|---|"]
    for prec, rs in rows.items():
        for seed, a, s in rs:
            lines.append(f"| {prec} | {seed} | {a:.2%} | {s:.0f} |")
    lines += ["", f"fp32 seed-to-seed spread {spread:.2f} points; bf16 mean minus fp32 mean {gap:+.2f} points; bf16 took "
              f"{statistics.mean(secs['bf16']) / statistics.mean(secs['fp32']):.2f}x fp32's time."]
    publish("train-precision", lines)


if __name__ == "__main__":
    main()
