"""Conversion, then direct training: a converted network against the same network fine-tuned with BPTT
(`seenn train --init CONVERTED`), side by side on the same splits.

    python benchmarks/finetune_converted.py --converted cifar10-resnet20-qcfs4-t64 --tuned RUN [--data-dir DIR]

Per run: accuracy after T = 1, 2, 4, 8, 16, 32, 64 steps (summed outputs), the oracle and the ideal exit, on the
test split (CIFAR-10: also its exact first 1,000 records); SEENN-I with the temperature and threshold chosen on
validation as benchmarks/conversion.py chooses them (fewest steps within 0.25 points of validation T = 32), run by
the step-by-step runner on the test split; the run's calibrated rule. Writes the section
"finetune-converted-NAME" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import machine, publish, stored_rule, today
from conversion import REFERENCE_T, TOLERANCE, choose_on_validation

from seenn.analysis.evaluate import Evaluation
from seenn.analysis.metrics import (accuracy_per_timestep, correct_per_timestep, exit_summary, ideal_timesteps,
                                    oracle_timesteps)
from seenn.data import load_dataset
from seenn.runs.store import load_run

SHOWN_T = (1, 2, 4, 8, 16, 32, 64)


def measure(name: str, data_dir, limit, log) -> dict:
    model, cfg = load_run(name)
    t_max = cfg["max_timesteps"]
    test = load_dataset(cfg["dataset"], "test", data_dir=data_dir, limit=limit)
    val = load_dataset(cfg["dataset"], "val", data_dir=data_dir, limit=limit,
                       val_size=cfg.get("training", {}).get("val_size", 5000))
    ev, val_ev = Evaluation(model, test, t_max), Evaluation(model, val, t_max)
    parts = {"test": (ev.step_logits, ev.labels)}
    if cfg["dataset"] == "cifar10":  # the first 1,000 records of its test batch are the exact ones
        parts["exact_1000"] = (ev.step_logits[:1000], ev.labels[:1000])
    out = {"t_max": t_max, "parts": {}}
    for part, (logits, labels) in parts.items():
        acc = accuracy_per_timestep(logits, labels)
        correct = correct_per_timestep(logits, labels)
        out["parts"][part] = {"accuracy_at": {t: acc[t - 1] for t in SHOWN_T if t <= t_max},
                              "oracle": (correct.any(1).double().mean().item(),
                                         oracle_timesteps(correct).double().mean().item()),
                              "ideal": ideal_timesteps(correct).double().mean().item()}
    rules = {"chosen": choose_on_validation(val_ev), "calibrated": stored_rule(cfg)}
    for what, rule in rules.items():
        if rule is None:
            continue
        res = ev.run(rule)  # the runner, on the whole test split; its first rows are the exact part's
        out[what] = {part: {**rule.describe(), **exit_summary(res.prediction[:len(labels)],
                                                              res.exit_timestep[:len(labels)], labels, t_max,
                                                              ev.full_prediction[:len(labels)])}
                     for part, (_, labels) in parts.items()}
    out["training"] = cfg.get("training", {})
    log(f"{name}: {out['chosen']['test']}")
    return out


def _schedule(training: dict) -> str:
    """The fine-tune's training, as its config records it."""
    ea = training.get("exit_aware") or 0.0
    return (f"BPTT at T = {training.get('timesteps')}, TET" + (f" plus the exit-aware term at weight {ea:g}" if ea else "")
            + f", {training.get('epochs')} epochs, batch {training.get('batch_size')}, lr {training.get('lr')}"
            + (f", JPEG re-encoding of {training['jpeg']:.0%} of the training images" if training.get("jpeg") else ""))


def render(names, results, command) -> list[str]:
    lines = ["## Conversion, then direct training: a converted network fine-tuned with BPTT", "",
             f"{today()}, `{command}`, {machine()}.", "",
             f"`{names[1]}` is `{names[0]}` fine-tuned by `seenn train --init {names[0]}` (the same layers, IF "
             f"neurons, thresholds and per-channel initial potentials; {_schedule(results[1]['training'])}). "
             "Accuracy after T steps sums the first T steps' outputs; SEENN-I's temperature and threshold are chosen "
             f"on validation (fewest steps within {TOLERANCE * 50:.2g} points of validation T = {REFERENCE_T}) and run "
             "by the step-by-step runner.", ""]
    for part, label in (("test", "test split"), ("exact_1000", "exact first 1,000 test records")):
        if part not in results[0]["parts"]:
            continue
        shown = list(results[0]["parts"][part]["accuracy_at"])
        lines += [f"### {label}", "", "| run | " + " | ".join(f"T={t}" for t in shown) + " | oracle | ideal |",
                  "|---|" + "---|" * (len(shown) + 2)]
        for name, r in zip(names, results):
            p = r["parts"][part]
            lines.append(f"| `{name}` | " + " | ".join(f"{p['accuracy_at'].get(t, float('nan')):.2%}" for t in shown)
                         + f" | {p['oracle'][0]:.2%} at {p['oracle'][1]:.2f} | {p['ideal']:.2f} |")
        lines.append("")
    lines += ["SEENN-I run by the step-by-step runner on the test split (the exact part: its first 1,000 rows):", "",
              "| run | rule | part | accuracy | vs its T=32 | avg timesteps | false exits |",
              "|---|---|---|---|---|---|---|"]
    for name, r in zip(names, results):
        for what in ("chosen", "calibrated"):
            for part, c in r.get(what, {}).items():
                ref = r["parts"][part]["accuracy_at"][REFERENCE_T]
                label = ("chosen on validation" if what == "chosen" else "calibrated (stored)") + \
                    f": temperature {c.get('temperature', 1.0):.6g}, threshold {c['threshold']:.6g}"
                lines.append(f"| `{name}` | {label} | {'test' if part == 'test' else 'exact 1,000'} | "
                             f"{c['accuracy']:.2%} | {(c['accuracy'] - ref) * 100:+.2f} | {c['avg_timesteps']:.2f} | "
                             f"{c['false_exits']} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--converted", default="cifar10-resnet20-qcfs4-t64", help="the converted run")
    p.add_argument("--tuned", required=True, help="the same run fine-tuned (seenn train --init CONVERTED)")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N test and validation images only (a quick check; writes nothing)")
    args = p.parse_args()
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    names = [args.converted, args.tuned]
    results = [measure(n, args.data_dir, args.limit, log) for n in names]
    command = f"python benchmarks/finetune_converted.py --converted {args.converted} --tuned {args.tuned}"
    body = render(names, results, command)
    if args.limit is None:
        publish(f"finetune-converted-{Path(args.tuned).name}", body)
    else:
        print("\n".join(body))


if __name__ == "__main__":
    main()
