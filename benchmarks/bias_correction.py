"""Bias correction of a converted SNN (`seenn convert --bias-correction STEPS`, with or without
`--potential-correction`): one QCFS ANN converted without it and with it at several calibration lengths, each
compared on the first --limit records of the validation and test
splits (on CIFAR-10 the test batch's first 1,000 records are its exact ones): accuracy per step, the oracle and
ideal exits, and SEENN-I with the (temperature, threshold) chosen on validation exactly as benchmarks/conversion.py
chooses it (fewest steps within a quarter point of validation T = 32).

    python benchmarks/bias_correction.py --ann ANN_RUN [--steps 4 8] [--potential-steps 16] [--limit 1000]
        [--timesteps 64]

Writes the section "bias-correction" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import machine, publish, today
from conversion import REFERENCE_T, accuracy_at, choose_on_validation

from seenn.analysis.evaluate import Evaluation
from seenn.analysis.metrics import ideal_timesteps, oracle_timesteps
from seenn.conversion import calibration_images, convert
from seenn.conversion.bias import correct_biases
from seenn.data import load_dataset
from seenn.runs.store import load_run
from seenn.runtime.engine import posthoc_exits

SHOW_T = (1, 2, 4, 8, 16, 32, 64)


def shown(args) -> list[int]:
    return [t for t in SHOW_T if t <= args.timesteps]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ann", required=True, help="a QCFS ANN run (seenn train --ann)")
    p.add_argument("--steps", type=int, nargs="*", default=[4, 8], help="calibration lengths to compare")
    p.add_argument("--potential-steps", type=int, nargs="*", default=[16],
                   help="calibration lengths to compare with --potential-correction")
    p.add_argument("--samples", type=int, default=256, help="calibration images (the training split)")
    p.add_argument("--limit", type=int, default=1000, help="first N validation and test records")
    p.add_argument("--timesteps", type=int, default=64)
    p.add_argument("--data-dir")
    args = p.parse_args()
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    ann, cfg = load_run(args.ann)
    m = cfg["model"]
    shape = (m["in_channels"], m["image_size"], m["image_size"])
    val_size = cfg.get("training", {}).get("val_size", 5000)
    val = load_dataset(cfg["dataset"], "val", data_dir=args.data_dir, val_size=val_size, limit=args.limit)
    test = load_dataset(cfg["dataset"], "test", data_dir=args.data_dir, limit=args.limit)
    images = calibration_images(cfg, args.samples, args.data_dir, 0)
    rows = []
    for steps, potential in [(None, False), *((s, False) for s in args.steps),
                             *((s, True) for s in args.potential_steps)]:
        snn, model_cfg = convert(ann, input_shape=shape)
        seconds = 0.0
        if steps is not None:
            t0 = time.perf_counter()
            correct_biases(ann, snn, model_cfg, images, steps, potential=potential)
            seconds = time.perf_counter() - t0
        ev_val, ev_test = Evaluation(snn, val, args.timesteps), Evaluation(snn, test, args.timesteps)
        rule = choose_on_validation(ev_val)
        r = posthoc_exits(ev_test.step_logits, rule)
        ref = accuracy_at(ev_test.step_logits, ev_test.labels, REFERENCE_T)
        row = {"steps": steps, "potential": potential, "seconds": seconds, "rule": rule.describe(),
               "val": [accuracy_at(ev_val.step_logits, ev_val.labels, t) for t in shown(args)],
               "test": [accuracy_at(ev_test.step_logits, ev_test.labels, t) for t in shown(args)],
               "oracle": (ev_test.correct.any(1).double().mean().item(),
                          oracle_timesteps(ev_test.correct).double().mean().item()),
               "ideal": ideal_timesteps(ev_test.correct).double().mean().item(),
               "seenn": ((r.prediction == test.labels).double().mean().item() - ref,
                         r.exit_timestep.double().mean().item())}
        log(f"correction {steps}{' + potential' if potential else ''}: {row}")
        rows.append(row)
    command = (f"python benchmarks/bias_correction.py --ann {args.ann} --steps {' '.join(map(str, args.steps))}"
               f" --potential-steps {' '.join(map(str, args.potential_steps))}"
               f" --samples {args.samples} --limit {args.limit} --timesteps {args.timesteps}")
    publish("bias-correction", render(args, cfg, rows, len(val), len(test), command))


def render(args, cfg, rows, n_val, n_test, command) -> str:
    pct = (lambda a: f"{100 * a:.1f}")
    head = " | ".join(f"T={t}" for t in shown(args))
    out = ["## Bias and potential correction of a converted SNN (`seenn convert --bias-correction "
           "[--potential-correction]`)", "",
           f"{today()}, `{command}`; {machine()}.", "",
           f"The QCFS ANN `{args.ann}` ({cfg['model']['name']}, {cfg['dataset']}) converted to IF neurons, then its "
           f"biases corrected for steps 1..S on {args.samples} training images ('S + potential': with "
           "`--potential-correction`, the offset of each channel's cumulative output in its initial potential, "
           "the rate's error in the bias). Validation: the first {n_val} "
           f"records of the validation split; test: the first {n_test} of the test batch"
           + (" (CIFAR-10: its exact, lossless records)" if cfg["dataset"] == "cifar10" and n_test <= 1000 else "")
           + ". SEENN-I: the (temperature, threshold) with the fewest validation steps within a quarter point of "
             "validation T = 32 (as benchmarks/conversion.py), applied to the test records.", "",
           f"| S | split | {head} |", "|---|---|" + "---|" * len(shown(args))]
    label = (lambda r: "none" if r["steps"] is None else f"{r['steps']}" + (" + potential" if r["potential"] else ""))
    for r in rows:
        s = label(r)
        for split in ("val", "test"):
            out.append(f"| {s} | {split} | " + " | ".join(pct(a) for a in r[split]) + " |")
    out += ["", "| S | correction time | test oracle | test ideal steps | SEENN-I rule | test vs T=32 | test avg steps |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = label(r)
        rule = r["rule"]
        out.append(f"| {s} | {r['seconds']:.0f} s | {pct(r['oracle'][0])}% at {r['oracle'][1]:.2f} | "
                   f"{r['ideal']:.2f} | temperature {rule.get('temperature', 1.0):g}, threshold "
                   f"{rule['threshold']:.4g} | {100 * r['seenn'][0]:+.2f} | {r['seenn'][1]:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
