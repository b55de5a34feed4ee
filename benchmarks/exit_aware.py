"""Exit-aware fine-tuning: the SEENN-I frontier (fewest average timesteps at accuracy within 0.1 points of full T)
before and after, against plain fine-tuning for the same epochs as a control.

    seenn train --init fashion-mnist-convnet-t4 --exit-aware 0.5 --epochs 3 --lr 0.01 --seed 0 \\
        --dataset fashion-mnist --model convnet --timesteps 4 --out runs/fashion-mnist-exit-aware
    seenn train --init fashion-mnist-convnet-t4 --epochs 3 --lr 0.01 --seed 0 \\
        --dataset fashion-mnist --model convnet --timesteps 4 --out runs/fashion-mnist-finetune-control
    python benchmarks/exit_aware.py --runs fashion-mnist-convnet-t4 runs/fashion-mnist-exit-aware \\
        runs/fashion-mnist-finetune-control

Writes the section "exit-aware" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys

from _common import machine, publish, today
from early_exit import frontier

from seenn.analysis.evaluate import Evaluation
from seenn.data import load_dataset
from seenn.exits import make_rule
from seenn.runs.store import load_run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", nargs="+", required=True)
    args = p.parse_args()
    rows = []
    for run in args.runs:
        model, config = load_run(run)
        t = config["max_timesteps"]
        val = Evaluation(model, load_dataset(config["dataset"], "val", val_size=5000), t)
        test = Evaluation(model, load_dataset(config["dataset"], "test"), t)
        chosen = frontier(val, "confidence")
        rule = make_rule("confidence", threshold=chosen["threshold"])
        e = test.summarize(rule.describe(), test.run(rule))
        head = test.header()
        rows.append((run, config["training"].get("exit_aware", 0.0), config["training"].get("init"), head, e,
                     frontier(test, "confidence")))
        print(run, e, file=sys.stderr)
    lines = ["## Exit-aware fine-tuning", "",
             f"{today()}, {machine()}; commands in `benchmarks/exit_aware.py`'s docstring, then "
             f"`python benchmarks/exit_aware.py --runs {' '.join(args.runs)}`.", "",
             "Fashion-MNIST test split. The threshold is chosen on validation (fewest steps within 0.1 points of full T "
             "there) and run on test; the test frontier is the same choice made on the test split itself.", "",
             "| run | exit-aware weight | accuracy t = 1..T | ideal | threshold (val) | test accuracy | vs full T | avg timesteps | test frontier (steps) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run, w, init, head, e, f in rows:
        acc = " / ".join(f"{a:.2%}" for a in head["accuracy_per_timestep"])
        full = head["accuracy_per_timestep"][-1]
        lines.append(f"| {run} | {w:g}{' (fine-tuned)' if init else ''} | {acc} | {head['ideal_avg_timesteps']:.3f} | "
                     f"{e['threshold']:.4g} | {e['accuracy']:.2%} | {(e['accuracy'] - full) * 100:+.2f} | "
                     f"{e['avg_timesteps']:.3f} | {f['avg_timesteps']:.3f} |")
    publish("exit-aware", lines)


if __name__ == "__main__":
    main()
