"""Accuracy in each inference precision: every shipped run's accuracy per timestep and its SEENN-I operating point
(the run's stored threshold) in fp32, bf16 and int8, on the same test images, side by side.

    python benchmarks/precision.py [--runs NAME ...] [--limit-long 2000] [--precisions fp32,bf16,int8]

Runs of more than 8 timesteps (the converted ones, T = 64) are evaluated on the first ``--limit-long`` test images
(and bf16 is left out for them by default: on CPUs without bf16 arithmetic it runs about 10x slower than fp32).
Writes one section "precision-RUN" of docs/benchmarks.md per run.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import machine, publish, today

from seenn.analysis.evaluate import Evaluation
from seenn.data import load_dataset
from seenn.exits import describe_text, make_rule
from seenn.runs.store import load_run, pretrained_runs
from seenn.runtime.engine import posthoc_exits


def _rule(config):
    stored = (config.get("exit") or {}).get("confidence") or {}
    th = stored.get("thresholds") or stored.get("threshold") or 0.9
    certified = stored.get("precision", "fp32") if stored.get("calibration") else None
    return make_rule("confidence", threshold=th, temperature=stored.get("temperature", 1.0)), certified


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", nargs="*", help="default: every shipped run")
    p.add_argument("--limit-long", type=int, default=2000)
    p.add_argument("--precisions", default="fp32,bf16,int8")
    p.add_argument("--long-precisions", default="fp32,int8")
    args = p.parse_args()
    names = args.runs or [r["name"] for r in pretrained_runs()]
    for name in names:
        lines = [f"## Accuracy in each inference precision: {name} (`--precision`)", "",
                 f"{today()}, `python benchmarks/precision.py --runs {name} --limit-long {args.limit_long} "
                 f"--precisions {args.precisions} --long-precisions {args.long_precisions}`, {machine()}.", "",
                 "The run on its test split (a run of more than 8 timesteps: the first "
                 f"{args.limit_long} test images). 'At the threshold': SEENN-I with the run's stored threshold, "
                 "computed from the full-T logits of that precision (the runner gives the same exits, tested). "
                 "'agree': share of images whose full-T prediction equals fp32's.", "",
                 "| precision | T | full-T accuracy | vs fp32 (points) | at the threshold: accuracy | avg timesteps | "
                 "vs fp32 (points) | agree | seconds |",
                 "|---|---|---|---|---|---|---|---|---|"]
        model, config = load_run(name)
        t_max = config["max_timesteps"]
        long = t_max > 8
        data = load_dataset(config["dataset"], "test", limit=args.limit_long if long else None)
        rule, certified = _rule(config)
        base = None
        for prec in (args.long_precisions if long else args.precisions).split(","):
            t0 = time.perf_counter()
            ev = Evaluation(model, data, t_max, precision=prec)
            full = ev.header()["accuracy_per_timestep"][-1]
            op = ev.summarize(rule.describe(), posthoc_exits(ev.step_logits, rule))
            secs = time.perf_counter() - t0
            if base is None:
                base = (full, op["accuracy"], ev.full_prediction)
            agree = (ev.full_prediction == base[2]).double().mean().item()
            lines.append(f"| {prec} | {t_max} | {full:.2%} | {(full - base[0]) * 100:+.2f} | "
                         f"{op['accuracy']:.2%} | {op['avg_timesteps']:.3f} | {(op['accuracy'] - base[1]) * 100:+.2f} | "
                         f"{agree:.2%} | {secs:.0f} |")
            print(lines[-1], file=sys.stderr)
        lines += ["", f"Threshold: {describe_text(rule.describe())}"
                  f"{'' if certified is None else ', certified for ' + certified}."]
        publish(f"precision-{name}", lines)


if __name__ == "__main__":
    main()
