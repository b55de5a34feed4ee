"""Where batch-1 early exit hits its ceiling: the same convolutions at batch 1 (one early-exit step) and at batch T
(the full-T multi-step pass runs each layer once over all T steps), on the shipped Fashion-MNIST inference model.

    python benchmarks/batch1_bound.py [--run NAME] [--calls 400] [--rounds 5]

For every convolution of the inference model (BN folded, oneDNN-packed, as the runner runs it) on its real input
(a test image's first step), the median time of one call at batch 1 and at batch T, interleaved in rounds. If a
step held nothing but its convolutions, a sample leaving after step 1 would cost ``stem_1 + body_1`` and the full
pass ``stem_1 + body_T`` (the stem runs once either way): the efficiency (speedup / ideal) that the convolutions
alone allow. Writes the section "batch1-bound" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import allocator, machine, publish, today
from torch import nn

from seenn.data import load_dataset
from seenn.runs.store import load_run
from seenn.runtime.inference import inference_model


def _median_us(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="fashion-mnist-convnet-t4")
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    alloc = allocator("tuned")
    model, config = load_run(args.run)
    t_max = config["max_timesteps"]
    fast = inference_model(model)
    data = load_dataset(config["dataset"], "test", limit=1)
    x = data.normalize(data.images[:1])
    inputs = {}
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    def keep_input(mod, args, out):
        inputs.setdefault(mod, args[0].clone())  # (a hook that returns a value would replace the output)

    hooks = [m.register_forward_hook(keep_input) for m in convs]
    with torch.inference_mode():
        fast.reset()
        fast.step(fast.encode(x))
        fast.reset()
    for h in hooks:
        h.remove()
    stem = set(m for m in fast.stem.modules() if isinstance(m, nn.Conv2d))
    one = {m: [] for m in convs}
    many = {m: [] for m in convs}
    with torch.inference_mode():
        batched = {m: inputs[m].repeat(t_max, 1, 1, 1).contiguous(memory_format=torch.channels_last)
                   if not inputs[m].is_contiguous() else inputs[m].repeat(t_max, 1, 1, 1) for m in convs}
        for m in convs:  # warm-up (packing, oneDNN primitives)
            m(inputs[m])
            m(batched[m])
        for _ in range(args.rounds):
            for m in convs:
                one[m].append(_median_us(lambda: m(inputs[m]), args.calls))
                many[m].append(_median_us(lambda: m(batched[m]), args.calls // 2))
    rows, body_1, body_t, stem_us = [], 0.0, 0.0, 0.0
    for m in convs:
        a, b = statistics.median(one[m]), statistics.median(many[m])
        shape = "x".join(str(d) for d in inputs[m].shape[1:])
        where = "stem (once per input)" if m in stem else "body (every step)"
        rows.append(f"| {m.in_channels} -> {m.out_channels}, input {shape} | {where} | {a:.1f} | {b:.1f} | "
                    f"{b / t_max:.1f} | {t_max * a / b:.2f}x |")
        if m in stem:
            stem_us += a
        else:
            body_1 += a
            body_t += b
    ratio = (stem_us + body_t) / (stem_us + body_1)
    cmd = f"python benchmarks/batch1_bound.py --run {args.run} --calls {args.calls} --rounds {args.rounds}"
    lines = ["## Batch-1 early exit: the ceiling set by the convolutions", "",
             f"{today()}, `{cmd}`, {machine()}, {alloc}.", "",
             f"Each convolution of the inference model ({args.run}, BN folded, oneDNN-packed) on its real input, one "
             f"call at batch 1 (an early-exit step) and at batch T = {t_max} (the full-T multi-step pass); medians of "
             f"{args.calls} calls, median over {args.rounds} interleaved rounds.", "",
             f"| convolution | runs | batch 1 (us) | batch {t_max} (us) | batch {t_max}, per sample (us) | "
             f"per-sample cost, batch 1 over batch {t_max} |",
             "|---|---|---|---|---|---|", *rows, "",
             f"With nothing but convolutions in a step, a sample leaving after step 1 would take {stem_us + body_1:.0f} us "
             f"and the full pass {stem_us + body_t:.0f} us: {ratio:.2f}x, an efficiency of {ratio / t_max:.2f} against "
             f"that sample's ideal of {t_max}x. The other work of a step (neurons, pools, readout, the exit rule) costs "
             "about as much per step on both sides, so it pulls the ratio toward the ideal; every speed-up of that "
             "work moves the efficiency back toward the convolutions' ratio. Efficiency 0.8 at batch 1 would need "
             "the batch-1 convolutions to cost about as little per sample as at batch T, which oneDNN does not do "
             "for these small maps (splitting one image into two half-height batch items was no faster)."]
    publish("batch1-bound", lines)


if __name__ == "__main__":
    main()
