"""Early exit as saved seconds: the step-by-step runner against full T on the shipped Fashion-MNIST run.

    python benchmarks/runner.py [--run NAME] [--threshold A] [--batch-size 256] [--limit 4096] [--repeats 5]

Runs ``seenn bench`` (seenn.analysis.bench.benchmark) and writes the section "runner" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from _common import allocator, machine, publish, today

from seenn.analysis.bench import batch1_latency, benchmark
from seenn.data import load_dataset
from seenn.exits import Confidence
from seenn.runs.store import load_run


def _each(runs, value) -> str:
    return " / ".join(f"{value(x):.2f}" for x in runs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="fashion-mnist-convnet-t4")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--runs", type=int, default=3, help="whole measurements, one after another: the table shows the "
                                                       "first, a line the efficiencies of all")
    p.add_argument("--allocator", choices=["tuned", "default"], default="tuned")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="early exit in this precision; full T is measured in fp32 (the baseline) and in it")
    args = p.parse_args()
    alloc = allocator(args.allocator)
    model, config = load_run(args.run)
    data = load_dataset(config["dataset"], "test", limit=args.limit)
    runs = [benchmark(model, data, Confidence(args.threshold), config["max_timesteps"], batch_size=args.batch_size,
                      repeats=args.repeats, latency_samples=args.latency_samples, precision=args.precision)
            for _ in range(args.runs)]
    r = runs[0]
    print(json.dumps(runs, indent=1), file=sys.stderr)
    base = None
    if args.precision != "fp32":  # the fp32 baseline, measured right after in the same invocation
        base = benchmark(model, data, Confidence(args.threshold), config["max_timesteps"], batch_size=args.batch_size,
                         repeats=args.repeats, latency_samples=args.latency_samples)
        print(json.dumps(base, indent=1), file=sys.stderr)
        # batch 1, sample by sample: the fastest fp32 full-T path against early exit in this precision
        singles = data.normalize(data.images[:args.latency_samples])
        cross = batch1_latency(model, Confidence(args.threshold), config["max_timesteps"], singles,
                               early_precision=args.precision)
    # the same latency samples with every batch-1 path through torch.compile (early exit and full T alike)
    singles = data.normalize(data.images[:args.latency_samples])
    c_full, c_early = batch1_latency(model, Confidence(args.threshold), config["max_timesteps"], singles, compile=True,
                                    precision=args.precision)
    print(f"compiled batch-1 p50: full {c_full:.3f} ms, early exit {c_early:.3f} ms", file=sys.stderr)
    cmd = (f"python benchmarks/runner.py --run {args.run} --threshold {args.threshold} --batch-size {args.batch_size} "
           f"--limit {args.limit} --repeats {args.repeats} --latency-samples {args.latency_samples} --runs {args.runs} "
           f"--allocator {args.allocator}" + ("" if args.precision == "fp32" else f" --precision {args.precision}"))
    lat, sps, paths = r["batch1_latency_ms"], r["samples_per_second"], r["full_seconds_by_path"]
    title = "" if args.precision == "fp32" else f", {args.precision}"
    lines = [f"## Early exit as saved seconds (`seenn bench`{title})", "",
             f"{today()}, `{cmd}`, {machine()}, {alloc}.", "",
             f"{r['samples']} test images, confidence > {args.threshold}: {r['avg_timesteps']:.3f} average timesteps of "
             f"{r['max_timesteps']}, so the ideal speedup is {r['ideal_speedup']:.2f}x. 'Full' is the faster of the two "
             f"full-T paths (multi-step forward {paths['multistep']:.3f} s, step-by-step runner with a fixed budget "
             f"{paths['runner']:.3f} s). Fastest of {r['repeats']} interleaved repeats (noise on a shared machine only adds time); batch-1 latencies are medians over {args.latency_samples} samples, each timed on every path; BN folded in every path. The compiled row puts every batch-1 path through torch.compile (the early-exit step, and the multi-step forward, the step loop and the fixed-budget runner for full T), measured right after the others on the same samples.", "",
             "| measure | full T | early exit | speedup | ideal | efficiency (speedup / ideal) | target |",
             "|---|---|---|---|---|---|---|",
             f"| static batches of {r['batch_size']}, seconds | {r['full_seconds']:.3f} | {r['early_exit_seconds']:.3f} | "
             f"{r['speedup']:.2f}x | {r['ideal_speedup']:.2f}x | {r['efficiency']:.2f} | >= 0.9 |",
             f"| {r['batch_size']} slots, continuous batching, seconds | {r['full_seconds']:.3f} | "
             f"{r['full_seconds'] / r['streaming_speedup']:.3f} | {r['streaming_speedup']:.2f}x | {r['ideal_speedup']:.2f}x | "
             f"{r['streaming_efficiency']:.2f} | >= 0.9 |",
             f"| batch 1, p50 latency (ms) | {lat['full']:.3f} | {lat['early_exit']:.3f} | {r['batch1_speedup']:.2f}x | "
             f"{r['batch1_ideal_speedup']:.2f}x | {r['batch1_speedup'] / r['batch1_ideal_speedup']:.2f} | >= 0.8 |",
             f"| batch 1, p50 latency (ms), compiled (`--compile`) | {c_full:.3f} | {c_early:.3f} | "
             f"{c_full / c_early:.2f}x | {r['batch1_ideal_speedup']:.2f}x | "
             f"{c_full / c_early / r['batch1_ideal_speedup']:.2f} | >= 0.8 |", "",
             f"Throughput (images/s): full T {sps['full']:.0f}, early exit {sps['early_exit']:.0f}, "
             f"streaming (continuous batching, {r['batch_size']} slots) {sps['streaming']:.0f}.", "",
             f"Batch-1 full T by path (p50, ms): multi-step forward {r['batch1_full_ms_by_path']['multistep']:.3f}, "
             f"step loop {r['batch1_full_ms_by_path']['step_loop']:.3f}, fixed-budget runner "
             f"{r['batch1_full_ms_by_path']['runner']:.3f}; against the step loop (the same per-step kernels as early "
             f"exit) the batch-1 efficiency is "
             f"{r['batch1_full_ms_by_path']['step_loop'] / lat['early_exit'] / r['batch1_ideal_speedup']:.2f} "
             "(why the multi-step forward is faster at batch 1: section \"Batch-1 early exit\").", "",
             f"Efficiency in each of the {len(runs)} whole measurements of this invocation (the table shows the first): "
             f"static batches {_each(runs, lambda x: x['efficiency'])}; continuous batching "
             f"{_each(runs, lambda x: x['streaming_efficiency'])}; batch 1 "
             f"{_each(runs, lambda x: x['batch1_speedup'] / x['batch1_ideal_speedup'])}."]
    if base is not None:
        bl, bs = base["batch1_latency_ms"], base["samples_per_second"]
        lines += ["", f"Against fp32, measured right after in the same invocation (fp32 full T {bs['full']:.0f} images/s, "
                  f"early exit {bs['early_exit']:.0f}; batch-1 p50 full T {bl['full']:.3f} ms, early exit "
                  f"{bl['early_exit']:.3f} ms): {args.precision} full T {sps['full'] / bs['full']:.2f}x fp32's images/s, "
                  f"{args.precision} early exit {sps['early_exit'] / bs['full']:.2f}x fp32 full T's. Batch 1, the fastest "
                  f"fp32 full-T path and {args.precision} early exit timed on each of the same {args.latency_samples} "
                  f"samples in turn: p50 {cross[0]:.3f} ms against {cross[1]:.3f} ms, {cross[0] / cross[1]:.2f}x lower."]
    publish("runner" if args.precision == "fp32" else f"runner-{args.precision}", lines)


if __name__ == "__main__":
    main()
