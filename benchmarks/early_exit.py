"""SEENN-I on the shipped runs: accuracy per timestep, the confidence / entropy frontier, the oracle and the ideal
limit, with the threshold chosen on the validation split and checked on the test split by the real runner.

    python benchmarks/early_exit.py [--runs NAME ...] [--data-dir DIR] [--no-demo] [--section NAME]

Writes the section "early-exit" (or `--section`) of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
from _common import ROOT, machine, publish, today

from seenn.analysis.energy import count_operations, energy_report
from seenn.analysis.evaluate import Evaluation
from seenn.data import load_dataset
from seenn.exits import make_rule
from seenn.runs.store import load_run, pretrained_runs

GRID = {
    "confidence": sorted(set(np.round(np.concatenate([np.linspace(0.5, 0.99, 50), 1 - np.logspace(-2, -6, 41)]), 8))),
    "entropy": sorted(set(np.round(np.concatenate([np.linspace(0.2, 0.99, 80), 1 - np.logspace(-2, -5, 31)]), 8))),
}
TOLERANCE = 0.001  # "within 0.1 points of full T"


def frontier(ev: Evaluation, rule: str):
    """The lowest-average-timesteps threshold whose accuracy is within TOLERANCE of full T."""
    full = ev.header()["accuracy_per_timestep"][-1]
    ok = [r for r in ev.sweep(rule, GRID[rule]) if r["accuracy"] >= full - TOLERANCE - 1e-12]
    return min(ok, key=lambda r: (r["avg_timesteps"], -r["accuracy"]))


def bench_run(name: str, data_dir, log) -> dict:
    model, config = load_run(name)
    t_max = config["max_timesteps"]
    val_size = config.get("training", {}).get("val_size", 5000)
    val = Evaluation(model, load_dataset(config["dataset"], "val", data_dir=data_dir, val_size=val_size), t_max)
    test = Evaluation(model, load_dataset(config["dataset"], "test", data_dir=data_dir), t_max)
    head = test.header()
    out = {"name": name, "dataset": config["dataset"], "max_timesteps": t_max, "test": head, "rules": {}}
    for rule in ("confidence", "entropy"):
        chosen = frontier(val, rule)  # chosen on validation data ...
        r = make_rule(rule, threshold=chosen["threshold"])
        t0 = time.perf_counter()
        res = test.run(r)  # ... applied to the test split by the step-by-step runner
        secs = time.perf_counter() - t0
        out["rules"][rule] = {
            "val_threshold": chosen["threshold"],
            "test_with_val_threshold": test.summarize(r.describe(), res),
            "test_frontier": frontier(test, rule),  # for reference only: fitted on the test split itself
            "runner_seconds": secs,
        }
        log(f"{name} {rule}: {out['rules'][rule]['test_with_val_threshold']}")
    r = make_rule("confidence", threshold=out["rules"]["confidence"]["val_threshold"])
    out["energy"] = energy_report(count_operations(model, test.data, t_max), test.run(r).exit_timestep)
    if config["dataset"] == "cifar10":  # the exact first 1,000 records, and the exact part against the JPEG part
        from seenn.analysis.robustness import subset
        from seenn.data import cifar_lossless_mask

        exact = Evaluation(model, load_dataset("cifar10", "test", data_dir=data_dir, limit=1000), t_max)
        out["exact_1000"] = {**exact.header(), "exit": exact.summarize(r.describe(), exact.run(r))}
        mask = cifar_lossless_mask(data_dir)
        parts = {}
        for label, m in (("exact", mask), ("jpeg", ~mask)):
            ev = Evaluation(model, subset(test.data, m, label), t_max)
            parts[label] = {**ev.header(), "exit": ev.summarize(r.describe(), ev.run(r))}
        out["parts"] = parts
    return out


def demo_seconds(data_dir) -> float:
    cmd = [sys.executable, "-m", "seenn", "demo"] + (["--data-dir", str(data_dir)] if data_dir else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def render(results, demo_s, command) -> str:
    lines = ["## Temporal early exit (SEENN-I) on the shipped runs", "",
             f"{today()}, `{command}`, {machine()}.", "",
             "Full test splits. The threshold is chosen on the validation split (held out from training) as the one "
             "with the fewest average timesteps whose accuracy stays within 0.1 points of full T there, then run on "
             "the test split by the step-by-step runner. 'Test frontier' is the same choice made on the test split "
             "itself, shown only as the best any single threshold could do. 'Ideal' keeps exactly the full-T correct "
             "samples (each leaves at its first step from which it stays correct, the rest at step 1); the oracle "
             "lets each sample leave at its first correct step.", ""]
    for r in results:
        h = r["test"]
        acc = " / ".join(f"{a:.2%}" for a in h["accuracy_per_timestep"])
        lines += [f"### {r['name']} ({r['dataset']}, T = {r['max_timesteps']})", "",
                  f"- accuracy at t = 1..{r['max_timesteps']}: {acc}",
                  f"- oracle: {h['oracle_accuracy']:.2%} at {h['oracle_avg_timesteps']:.3f} steps; "
                  f"ideal exit at full-T accuracy: {h['ideal_avg_timesteps']:.3f} steps", "",
                  "| rule | threshold (from val) | test accuracy | vs full T | avg timesteps | exits per step | false exits | rescued | test frontier (threshold, accuracy, steps) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        full = h["accuracy_per_timestep"][-1]
        for rule, d in r["rules"].items():
            e, f = d["test_with_val_threshold"], d["test_frontier"]
            lines.append(f"| {rule} | {d['val_threshold']:.6g} | {e['accuracy']:.2%} | {(e['accuracy'] - full) * 100:+.2f} | "
                         f"{e['avg_timesteps']:.3f} | {e['exit_histogram']} | {e['false_exits']} | {e['rescued']} | "
                         f"{f['threshold']:.6g}, {f['accuracy']:.2%}, {f['avg_timesteps']:.3f} |")
        if "exact_1000" in r:
            e1 = r["exact_1000"]
            lines += ["", f"- exact first 1,000 test records: accuracy at t = 1..{r['max_timesteps']}: "
                          + " / ".join(f"{a:.2%}" for a in e1["accuracy_per_timestep"])
                          + f"; confidence rule {e1['exit']['accuracy']:.2%} at {e1['exit']['avg_timesteps']:.3f} steps"]
            for label, pr in r["parts"].items():
                lines.append(f"- {label} part of the test batch ({pr['samples']:,} records): full T "
                             f"{pr['accuracy_per_timestep'][-1]:.2%}, confidence rule {pr['exit']['accuracy']:.2%} at "
                             f"{pr['exit']['avg_timesteps']:.3f} steps, {pr['exit']['false_exits']} false exits")
        en = r["energy"]
        ps = en["per_sample"]
        lines += ["", f"Energy per test image at the confidence threshold above ({en['pj_per_ac']} pJ per accumulate, "
                      f"{en['pj_per_mac']} pJ per multiply-accumulate; `seenn energy`):", "",
                  "| | MACs | ACs | energy (uJ) | relative |", "|---|---|---|---|---|"]
        for k, label in (("early_exit", "SNN, early exit"), ("full", f"SNN, all {r['max_timesteps']} steps"),
                         ("ann", "equivalent ANN")):
            lines.append(f"| {label} | {ps[k]['macs']:,.0f} | {ps[k]['acs']:,.0f} | {ps[k]['energy_uj']:.3f} | "
                         f"{ps[k]['energy_uj'] / ps['ann']['energy_uj']:.1%} of the ANN |")
        lines.append("")
    if demo_s is not None:
        lines.append(f"`seenn demo` (load, full-T pass and four exit rules on the 10,000 test images): {demo_s:.1f} s wall.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", nargs="*", help="default: every shipped run on an IDX dataset")
    p.add_argument("--data-dir")
    p.add_argument("--no-demo", action="store_true")
    p.add_argument("--section", default="early-exit", help="the section of docs/benchmarks.md to write (a run of its "
                                                           "own gets its own: early-exit-NAME)")
    args = p.parse_args()
    names = args.runs or [r["name"] for r in pretrained_runs()]
    results = [bench_run(n, args.data_dir, lambda m: print(m, file=sys.stderr)) for n in names]
    demo_s = None if args.no_demo else demo_seconds(args.data_dir)
    command = "python benchmarks/early_exit.py" + (" --runs " + " ".join(args.runs) if args.runs else "") + \
        (" --no-demo" if args.no_demo else "") + (f" --section {args.section}" if args.section != "early-exit" else "")
    publish(args.section, render(results, demo_s, command))


if __name__ == "__main__":
    main()
