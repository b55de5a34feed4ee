"""The live audit (seenn serve --audit-fraction) on the shipped Fashion-MNIST run: does it stay quiet on clean test
images over a long run, and does it raise its alarm under the corruptions that break the calibrated promise, after
how many requests?

    python benchmarks/audit.py [--fraction 0.05] [--repeats 10]

Requests are the 10,000 test images (clean, or corrupted as `seenn robustness` corrupts them), in a random order,
the test set drawn `--repeats` times (a long run); each is audited with probability `--fraction`. The early and the
full-T answers come from one full-T pass (the runner's exits equal them, tested); the audit is the service's own
(seenn.analysis.audit). Writes the section "audit" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import machine, publish, today

from seenn.analysis.audit import audit_stream
from seenn.analysis.evaluate import Evaluation
from seenn.analysis.robustness import corrupted
from seenn.data import load_dataset
from seenn.exits import Confidence
from seenn.runs.store import load_run
from seenn.runtime.engine import posthoc_exits

RUN = "fashion-mnist-convnet-t4"
SHIFTS = [("clean", 0)] + [(k, s) for k in ("gaussian-noise", "blur", "contrast") for s in (1, 3, 5)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--data-dir")
    args = p.parse_args()
    model, cfg = load_run(RUN)
    stored = cfg["exit"]["confidence"]
    from seenn.serve import audit_bound

    bound = audit_bound(cfg)
    rule = Confidence(stored["threshold"])
    test = load_dataset("fashion-mnist", "test", data_dir=args.data_dir or "embedded")
    rows = []
    for kind, sev in SHIFTS:
        data = test if kind == "clean" else corrupted(test, kind, sev)
        ev = Evaluation(model, data, cfg["max_timesteps"])
        early = posthoc_exits(ev.step_logits, rule).prediction.numpy()
        full = ev.full_prediction.numpy()
        labels = ev.labels.numpy()
        order = np.concatenate([np.random.default_rng(r).permutation(len(full)) for r in range(args.repeats)])
        out = audit_stream(early[order], full[order], bound, args.fraction, alpha=args.alpha)
        rows.append({"shift": kind, "severity": sev, "disagreement": float((early != full).mean()),
                     "false_exit": float(((full == labels) & (early != labels)).mean()), **out})
        print(rows[-1], flush=True)
    n = len(test) * args.repeats
    lines = ["## The live audit: noticing when early exits stop being safe", "",
             f"{today()}, `python benchmarks/audit.py --fraction {args.fraction:g} --repeats {args.repeats}`, "
             f"{machine()}.", "",
             f"`{RUN}` with its calibrated rule (confidence > {stored['threshold']:.6g}, false-exit rate certified "
             f"at most {stored['calibration']['max_accuracy_drop']:g}; the disagreement rate with full T at most "
             f"{bound:.4g}, its 95% upper bound from {stored['calibration']['validation_disagreements']} disagreements "
             f"on the 5,000 validation images: what the audit tests). A stream of {n:,} requests (the 10,000 test images, "
             f"clean or corrupted as `seenn robustness` does, drawn {args.repeats} times in random order); each is also "
             f"run to full T with probability {args.fraction:g}; the audit (an anytime-valid test, false-alarm "
             f"probability {args.alpha:g} over the whole run) compares the early and full-T answers, no labels. "
             "'false-exit rate' needs the labels and is shown for reference; 'disagreement' is what the audit sees "
             "(every false exit is a disagreement).", "",
             "| images | false-exit rate (labels) | disagreement rate | audited | alarm | after requests |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        name = "clean" if r["shift"] == "clean" else f"{r['shift']} {r['severity']}"
        lines.append(f"| {name} | {r['false_exit']:.2%} | {r['disagreement']:.2%} | {r['audited']:,} | "
                     f"{'**yes**' if r['alarm'] else 'no'} | "
                     f"{r['alarm_after_requests'] if r['alarm'] else '-'} |")
    publish("audit", lines)


if __name__ == "__main__":
    main()
