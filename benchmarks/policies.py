"""SEENN-II (faithful) and the learned exit rule against SEENN-I at equal accuracy, on the shipped Fashion-MNIST
run's test split.

    python benchmarks/policies.py [--betas 2 5 20]

Policies are trained on the training split (SNN frozen), choices are made on the validation split, every number
below is measured on the 10,000 test images by the step-by-step runner. Writes the section "policies" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import machine, today, update_section

from seenn.checkpoint import PRETRAINED_DIR, load_run
from seenn.data import load_dataset
from seenn.evaluate import Evaluation
from seenn.exits import Confidence
from seenn.policy import PolicyRule, load_policy, train_policy

RUN = "fashion-mnist-convnet-t4"


def seenn1_at(test: Evaluation, accuracy: float) -> dict:
    """SEENN-I's fewest average timesteps at an accuracy at least ``accuracy`` (fine threshold grid, post hoc)."""
    grid = sorted(set(np.round(np.concatenate([np.linspace(0.3, 0.99, 70), 1 - np.logspace(-2, -6, 41)]), 8)))
    ok = [r for r in test.sweep("confidence", grid) if r["accuracy"] >= accuracy - 1e-12]
    return min(ok, key=lambda r: r["avg_timesteps"]) if ok else None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--betas", type=float, nargs="*", default=[5.0, 20.0])
    p.add_argument("--run", default=RUN)
    args = p.parse_args()
    model, config = load_run(args.run)
    t = config["max_timesteps"]
    ds = config["dataset"]
    train = load_dataset(ds, "train")
    test = Evaluation(model, load_dataset(ds, "test"), t)
    head = test.header()
    full = head["accuracy_per_timestep"][-1]
    rows = []
    shipped = PRETRAINED_DIR / args.run / "policies"
    for name in sorted(d.name for d in shipped.iterdir()) if shipped.is_dir() else []:
        rule = load_policy(shipped / name, t)
        rows.append((f"shipped `{name}` ({rule.name})", rule))
    train_logits = Evaluation(model, train, t).step_logits
    if not shipped.is_dir():  # no shipped policies: train the learned rule here (threshold from validation)
        from seenn.policy import LearnedExitRule, choose_learned_threshold

        val = Evaluation(model, load_dataset(ds, "val", val_size=config["training"]["val_size"]), t)
        net, _ = train_policy(train, train_logits, kind="learned", epochs=3, log=lambda m: None)
        rows.append(("learned exit rule", LearnedExitRule(net, choose_learned_threshold(net, val.step_logits,
                                                                                       val.labels), t)))
    if args.betas:
        for beta in args.betas:
            net, _ = train_policy(train, train_logits, kind="policy", beta=beta, epochs=3, log=lambda m: None)
            rows.append((f"SEENN-II, beta {beta:g}, authors' weighting", PolicyRule(net)))
    out = []
    for label, rule in rows:
        e = test.summarize(rule.describe(), test.run(rule))
        ref = seenn1_at(test, e["accuracy"])
        out.append((label, e, ref))
        print(label, e["accuracy"], e["avg_timesteps"], ref and ref["avg_timesteps"], file=sys.stderr)
    stored = config.get("exit", {}).get("confidence")
    rule = Confidence(stored["threshold"]) if stored else None
    cal = test.summarize(rule.describe(), test.run(rule)) if rule else None
    lines = [f"## SEENN-II and the learned exit rule against SEENN-I ({args.run})", "",
             f"{today()}, `python benchmarks/policies.py --run {args.run} --betas "
             f"{' '.join(f'{b:g}' for b in args.betas)}`, {machine()}.", "",
             f"Run {args.run}, {len(test.labels):,} test images, full-T accuracy {full:.2%}, ideal limit "
             f"{head['ideal_avg_timesteps']:.3f} average timesteps. 'SEENN-I at equal accuracy' is the confidence "
             "threshold with the fewest average timesteps whose test accuracy is at least the policy's (fitted on the "
             "test split itself: a bound in SEENN-I's favour).", "",
             "| exit | test accuracy | vs full T (points) | avg timesteps | exits per step | SEENN-I at equal accuracy (threshold, steps) |",
             "|---|---|---|---|---|---|"]
    for label, e, ref in out:
        r = "-" if ref is None else f"{ref['threshold']:.6g}, {ref['avg_timesteps']:.3f}"
        lines.append(f"| {label} | {e['accuracy']:.2%} | {(e['accuracy'] - full) * 100:+.2f} | {e['avg_timesteps']:.3f} | "
                     f"{e['exit_histogram']} | {r} |")
    if cal:
        lines.append(f"| SEENN-I, calibrated threshold {rule.threshold:.4g} (shipped) | {cal['accuracy']:.2%} | "
                     f"{(cal['accuracy'] - full) * 100:+.2f} | {cal['avg_timesteps']:.3f} | {cal['exit_histogram']} | - |")
    info_path = shipped / "seenn-ii-beta2" / "policy.json"
    if info_path.is_file():
        policy_info = __import__("json").loads(info_path.read_text())
        lines += ["", f"The SEENN-II policy network costs {policy_info['policy_macs']:,} MACs per image, "
                      f"{policy_info['policy_time_per_snn_step']:.1%} of the time of one SNN step on the same 256 "
                      "images (measured when it was trained)."]
    update_section("policies" if args.run == RUN else f"policies-{Path(args.run).name}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
