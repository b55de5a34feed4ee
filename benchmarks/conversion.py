"""ANN-to-SNN conversion (QCFS) with early exit (the shipped CIFAR-10 run by default): the ANN, the converted SNN at
T = 8..64, SEENN-I at several thresholds and temperatures, the threshold chosen on validation and run for real, the
oracle; on CIFAR-10 also on the exact first 1,000 test records.

    python benchmarks/conversion.py --ann ANN_RUN [--snn RUN] [--data-dir DIR]

ANN_RUN is the QCFS ANN the shipped SNN was converted from (its training command is in the README; the ANN itself
is not shipped). Writes the section "conversion" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import calibrated_result, machine, publish, today

from seenn.analysis.evaluate import Evaluation
from seenn.analysis.metrics import (accuracy_per_timestep, correct_per_timestep, exit_summary, ideal_timesteps,
                                    oracle_timesteps)
from seenn.data import load_dataset
from seenn.exits import Confidence
from seenn.runs.store import load_run
from seenn.runtime.engine import posthoc_exits, step_logits

CHECK_T = (8, 16, 32, 64)
THRESHOLDS = (0.6, 0.8, 0.9, 0.99, 0.999)
TEMPERATURES = (1.0, 8.0, 16.0)  # 8: the summed logits divided by 8, as SEENN's authors do for converted nets
REFERENCE_T = 32  # SEENN-I is held to the SNN at T = 32
TOLERANCE = 0.005  # within 0.5 points of it


def accuracy_at(step_logits: torch.Tensor, labels: torch.Tensor, t: int) -> float:
    return accuracy_per_timestep(step_logits[:, :t], labels)[-1]


def table_for(step_logits, labels, t_max) -> dict:
    correct = correct_per_timestep(step_logits, labels)
    full = step_logits.sum(1).argmax(1)
    rows = []
    for tau in TEMPERATURES:
        for th in THRESHOLDS:
            r = posthoc_exits(step_logits, Confidence(th, temperature=tau))
            rows.append({"temperature": tau, "threshold": th,
                         **exit_summary(r.prediction, r.exit_timestep, labels, t_max, full)})
    return {"samples": len(labels), "accuracy_at": {t: accuracy_at(step_logits, labels, t) for t in CHECK_T},
            "oracle_accuracy": correct.any(1).double().mean().item(),
            "oracle_avg_timesteps": oracle_timesteps(correct).double().mean().item(),
            "ideal_avg_timesteps": ideal_timesteps(correct).double().mean().item(), "rows": rows}


def choose_on_validation(val: Evaluation) -> Confidence:
    """The (temperature, threshold) with the fewest average steps whose validation accuracy is within half the
    tolerance of validation T=32 (a margin for the test split)."""
    ref = accuracy_at(val.step_logits, val.labels, REFERENCE_T)
    best = None
    for tau in (1.0, 2.0, 4.0, 8.0, 16.0):
        for th in [0.5 + 0.01 * i for i in range(50)] + [1 - 10 ** -(2 + 0.25 * i) for i in range(17)]:
            rule = Confidence(th, temperature=tau)
            r = posthoc_exits(val.step_logits, rule)
            acc = (r.prediction == val.labels).double().mean().item()
            avg = r.exit_timestep.double().mean().item()
            if acc >= ref - TOLERANCE / 2 and (best is None or avg < best[0]):
                best = (avg, rule)
    return best[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ann", required=True, help="the QCFS ANN run the SNN was converted from")
    p.add_argument("--snn", default="cifar10-airbench-qcfs4-t32", help="the converted run (default: the shipped one)")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N test and validation images only (a quick check; writes nothing)")
    args = p.parse_args()
    log = (lambda m: print(m, file=sys.stderr, flush=True))

    ann, ann_cfg = load_run(args.ann)
    snn, cfg = load_run(args.snn)
    t_max = cfg["max_timesteps"]
    val_size = cfg.get("training", {}).get("val_size", 5000)
    test = load_dataset(cfg["dataset"], "test", data_dir=args.data_dir, limit=args.limit)
    val = load_dataset(cfg["dataset"], "val", data_dir=args.data_dir, val_size=val_size, limit=args.limit)
    ann_pred = step_logits(ann, test, 1)[:, 0].argmax(1)
    ann_acc = {"test": (ann_pred == test.labels).double().mean().item()}
    exact = cfg["dataset"] == "cifar10"  # CIFAR-10's first 1,000 test records are the exact (lossless) ones
    if exact:
        ann_acc["exact_1000"] = (ann_pred[:1000] == test.labels[:1000]).double().mean().item()
    log(f"ANN: {ann_acc}")
    t0 = time.perf_counter()
    ev = Evaluation(snn, test, t_max)
    full_seconds = time.perf_counter() - t0
    log(f"SNN full-T pass on the test batch: {full_seconds:.0f} s")
    tables = {"test": table_for(ev.step_logits, ev.labels, t_max)}
    if exact:
        tables["exact_1000"] = table_for(ev.step_logits[:1000], ev.labels[:1000], t_max)
    val_ev = Evaluation(snn, val, t_max)
    rule = choose_on_validation(val_ev)
    t0 = time.perf_counter()
    res = ev.run(rule)  # the step-by-step runner, exited samples dropped
    runner_seconds = time.perf_counter() - t0
    chosen = ev.summarize(rule.describe(), res)
    calibrated = calibrated_result(ev, cfg)
    log(f"chosen on validation: {chosen}")
    command = f"python benchmarks/conversion.py --ann {args.ann}" + (
        f" --snn {args.snn}" if args.snn != p.get_default("snn") else "")
    body = render(args.snn, cfg, ann_cfg, ann_acc, tables, chosen, calibrated, full_seconds, runner_seconds, command)
    if args.limit is None:  # the shipped run's section, or one per other run
        publish("conversion" if args.snn == p.get_default("snn") else f"conversion-{Path(args.snn).name}", body)
    else:
        print(body)


def render(name, cfg, ann_cfg, ann_acc, tables, chosen, calibrated, full_seconds, runner_seconds, command) -> str:
    t_max = cfg["max_timesteps"]
    tr = ann_cfg["training"]
    title = {"cifar10": "CIFAR-10", "fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}.get(cfg["dataset"], cfg["dataset"])
    shipped_vgg = name == "cifar10-vgg-w05-qcfs4-t64"  # the first converted run: its section keeps its title
    lines = [f"## ANN-to-SNN conversion (QCFS) with early exit on {title}" + ("" if shipped_vgg
                                                                              else f" (`{name}`)"), "",
             f"{today()}, `{command}`, {machine()}.", "",
             f"`{name}`: a {tr['model']} (width {tr['width']}, {cfg['model']['name']} SNN) ANN with QCFS activations (L = {tr['quant_levels']}), "
             f"trained {tr['epochs']} epochs, converted by `seenn convert` (IF neurons, reset by subtraction, "
             f"v0 = theta/2, thresholds {', '.join(f'{t:.3g}' for t in cfg['converted_from']['thresholds'])})"
             + (f", biases corrected for steps 1..{bc['steps']} on {bc['samples']} training images (`--bias-correction "
                f"{bc['steps']}`)" if (bc := cfg["converted_from"].get("bias_correction")) else "")
             + (", and each neuron's initial potential per channel from the same fit (`--potential-correction`)"
                if bc and bc.get("potential") else "")
             + f", max T = {t_max}. 'SNN at T' sums the first T steps' outputs. SEENN-I rows are computed from the "
             "full-T logits (the runner gives the same exits, tested); the validation-chosen rule is run for real.", ""]
    test_label = "test batch" if "exact_1000" in tables else "test split"
    for part, label in (("test", f"{test_label} ({tables['test']['samples']:,})"),
                        ("exact_1000", "exact first 1,000 test records")):
        if part not in tables:
            continue
        tb = tables[part]
        ref = tb["accuracy_at"][REFERENCE_T]
        lines += [f"### {label}", "",
                  f"- ANN: {ann_acc[part]:.2%}",
                  "- SNN: " + ", ".join(f"T={t}: {a:.2%}" for t, a in tb["accuracy_at"].items())
                  + f" (T=32 vs ANN {(ref - ann_acc[part]) * 100:+.2f} points)",
                  f"- oracle: {tb['oracle_accuracy']:.2%} at {tb['oracle_avg_timesteps']:.2f} steps; ideal exit at "
                  f"T={t_max} accuracy: {tb['ideal_avg_timesteps']:.2f} steps", "",
                  "| temperature | threshold | accuracy | vs SNN T=32 | avg timesteps | false exits |",
                  "|---|---|---|---|---|---|"]
        for r in tb["rows"]:
            lines.append(f"| {r['temperature']:g} | {r['threshold']:g} | {r['accuracy']:.2%} | "
                         f"{(r['accuracy'] - ref) * 100:+.2f} | {r['avg_timesteps']:.2f} | {r['false_exits']} |")
        lines.append("")
    ref = tables["test"]["accuracy_at"][REFERENCE_T]
    lines += [f"Chosen on the validation split (fewest steps within {TOLERANCE * 50:.2g} points of validation T=32), "
              f"run by the step-by-step runner on the test batch: temperature {chosen.get('temperature', 1.0):g}, "
              f"threshold {chosen['threshold']:.6g}: {chosen['accuracy']:.2%} ({(chosen['accuracy'] - ref) * 100:+.2f} "
              f"points vs T=32) at {chosen['avg_timesteps']:.2f} average timesteps "
              f"({REFERENCE_T / chosen['avg_timesteps']:.1f}x fewer than T=32), {chosen['false_exits']} false exits; "
              f"runner {runner_seconds:.0f} s against {full_seconds:.0f} s for all {t_max} steps."]
    if calibrated:
        lines += ["", f"The run's calibrated rule (`seenn calibrate`, stored in its config): temperature "
                      f"{calibrated.get('temperature', 1.0):g}, threshold {calibrated['threshold']:.6g}: "
                      f"{calibrated['accuracy']:.2%} at {calibrated['avg_timesteps']:.2f} steps, "
                      f"{calibrated['false_exits']} false exits."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
