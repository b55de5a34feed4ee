"""The staged path on one dataset: an ANN with QCFS activations, the SNN converted from it, a direct (LIF, BPTT) run
started from the ANN's weights, and a direct run trained from scratch, side by side on the test split.

    python benchmarks/staged.py --ann ANN_RUN --converted SNN_RUN --from-ann RUN --direct RUN [--data-dir DIR]

For every SNN: accuracy after t steps, the ideal limit, and SEENN-I with the threshold chosen on the validation split
(fewest average steps within 0.1 points of the run's own full-T accuracy there; temperatures 1-16 for the converted
run, whose summed logits grow with t), run on the test split by the step-by-step runner. Training times come from
the runs' histories. Writes the section "staged-DATASET" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from _common import machine, publish, today

from seenn.analysis.evaluate import Evaluation
from seenn.analysis.metrics import accuracy_per_timestep, fewest_steps_threshold, operating_point
from seenn.data import load_dataset
from seenn.exits import Confidence
from seenn.runs.store import load_run, resolve_run
from seenn.runtime.engine import score_matrix, step_logits

TOLERANCE = 0.001
SHOW_T = (1, 2, 4, 8, 16, 32, 64)


def train_minutes(run) -> float | None:
    path = resolve_run(run) / "metrics.json"
    seconds = json.loads(path.read_text()).get("train_seconds") if path.is_file() else None
    return None if seconds is None else seconds / 60


def choose(val: Evaluation, temperatures) -> Confidence:
    best = None
    for tau in temperatures:
        rule = Confidence(0.5, temperature=tau)
        scores = score_matrix(val.step_logits, rule)
        th = fewest_steps_threshold(val.step_logits, val.labels, scores, TOLERANCE)
        steps = operating_point(val.step_logits, val.labels, scores, th)[1]
        if best is None or steps < best[0]:
            best = (steps, Confidence(th, temperature=tau))
    return best[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ann", required=True)
    p.add_argument("--converted", required=True)
    p.add_argument("--from-ann", required=True, help="a direct run started with seenn train --init ANN_RUN")
    p.add_argument("--direct", required=True, help="a direct run trained from scratch")
    p.add_argument("--data-dir")
    args = p.parse_args()
    ann, ann_cfg = load_run(args.ann)
    ds = ann_cfg["dataset"]
    val_size = ann_cfg["training"]["val_size"]
    test = load_dataset(ds, "test", data_dir=args.data_dir)
    val = load_dataset(ds, "val", data_dir=args.data_dir, val_size=val_size)
    ann_acc = (step_logits(ann, test, 1)[:, 0].argmax(1) == test.labels).double().mean().item()
    rows = []
    for label, run in (("converted", args.converted), ("direct, from the ANN", args.from_ann),
                       ("direct, from scratch", args.direct)):
        model, cfg = load_run(run)
        t_max = cfg["max_timesteps"]
        ev, vev = Evaluation(model, test, t_max), Evaluation(model, val, t_max)
        temps = (1.0, 2.0, 4.0, 8.0, 16.0) if "converted_from" in cfg else (1.0,)
        rule = choose(vev, temps)
        e = ev.summarize(rule.describe(), ev.run(rule))
        acc_t = accuracy_per_timestep(ev.step_logits, ev.labels)
        rows.append({"label": label, "run": str(run), "t_max": t_max, "acc_t": acc_t, "exit": e,
                     "ideal": ev.header()["ideal_avg_timesteps"], "minutes": train_minutes(run),
                     "rule": rule})
        print(label, acc_t[-1], e["accuracy"], e["avg_timesteps"], file=sys.stderr, flush=True)
    cmd = (f"python benchmarks/staged.py --ann {args.ann} --converted {args.converted} --from-ann {args.from_ann} "
           f"--direct {args.direct}")
    ann_min = train_minutes(args.ann)
    lines = [f"## The staged path on {ds}: ANN, converted SNN, direct training from the ANN and from scratch", "",
             f"{today()}, `{cmd}`, {machine()}.", "",
             f"Test split ({len(test):,} images). The QCFS ANN (L = {ann_cfg['training']['quant_levels']}, "
             f"{ann_cfg['training']['epochs']} epochs"
             + (f", {ann_min:.0f} minutes" if ann_min else "") + f"): {ann_acc:.2%}. SEENN-I: the threshold (and for "
             "the converted run the temperature) with the fewest average steps within 0.1 points of the run's full-T "
             "accuracy on the validation split, run on the test split by the step-by-step runner.", "",
             "| SNN | max T | training | accuracy at t = " + ", ".join(str(t) for t in SHOW_T) + " | SEENN-I "
             "(temperature, threshold) | SEENN-I accuracy | avg timesteps | ideal |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        accs = " / ".join(f"{r['acc_t'][t - 1]:.2%}" if t <= r["t_max"] else "-" for t in SHOW_T)
        e = r["exit"]
        minutes = f"{r['minutes']:.0f} min" if r["minutes"] else "-"
        lines.append(f"| {r['label']} (`{Path(r['run']).name}`) | {r['t_max']} | {minutes} | {accs} | "
                     f"{r['rule'].temperature:g}, {e['threshold']:.4g} | {e['accuracy']:.2%} | "
                     f"{e['avg_timesteps']:.3f} | {r['ideal']:.3f} |")
    body = "\n".join(lines)
    publish(f"staged-{ds}", body)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
