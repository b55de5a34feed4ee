"""SEENN-II (faithful) and the learned exit rule against SEENN-I at equal accuracy, on the shipped Fashion-MNIST
run's test split.

    python benchmarks/policies.py [--betas 2 5 20]

Policies are trained on the training split (SNN frozen), choices are made on the validation split, every number
below is measured on the 10,000 test images by the step-by-step runner. Writes the section "policies" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _common import machine, publish, today

from seenn.analysis.evaluate import Evaluation
from seenn.analysis.metrics import fewest_steps_threshold as choose
from seenn.analysis.metrics import operating_point
from seenn.data import load_dataset
from seenn.exits import Confidence
from seenn.exits.policy import LearnedExitRule, PolicyRule, load_policy
from seenn.io.files import PRETRAINED_DIR
from seenn.runs.store import load_run
from seenn.runtime.engine import score_matrix
from seenn.training.policy import choose_learned_threshold, train_policy

RUN = "fashion-mnist-convnet-t4"


def seenn1_at(test: Evaluation, accuracy: float) -> dict:
    """SEENN-I's fewest average timesteps at an accuracy at least ``accuracy`` (fine threshold grid, post hoc)."""
    grid = sorted(set(np.round(np.concatenate([np.linspace(0.3, 0.99, 70), 1 - np.logspace(-2, -6, 41)]), 8)))
    ok = [r for r in test.sweep("confidence", grid) if r["accuracy"] >= accuracy - 1e-12]
    return min(ok, key=lambda r: r["avg_timesteps"]) if ok else None


def resampled(step_logits, labels, scores: dict, repeats: int, seed: int = 0) -> dict:
    """Each rule's threshold chosen on a random half of the held-out images, scored on the other half."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    out = {name: [] for name in scores}
    for _ in range(repeats):
        perm = torch.randperm(n, generator=g)
        a, b = perm[: n // 2], perm[n // 2:]
        full_b = (step_logits[b].sum(1).argmax(1) == labels[b]).double().mean().item()
        for name, sc in scores.items():
            th = choose(step_logits[a], labels[a], sc[a])
            acc, steps = operating_point(step_logits[b], labels[b], sc[b], th)
            out[name].append((acc - full_b, steps))
    return {name: np.array(v) for name, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--betas", type=float, nargs="*", default=[5.0, 20.0])
    p.add_argument("--run", default=RUN)
    p.add_argument("--repeats", type=int, default=50, help="random halves for the resampled comparison")
    args = p.parse_args()
    model, config = load_run(args.run)
    t = config["max_timesteps"]
    ds = config["dataset"]
    train = load_dataset(ds, "train")
    test = Evaluation(model, load_dataset(ds, "test"), t)
    val = Evaluation(model, load_dataset(ds, "val", val_size=config["training"]["val_size"]), t)
    head = test.header()
    full = head["accuracy_per_timestep"][-1]
    rows = []
    shipped = PRETRAINED_DIR / args.run / "policies"
    learned = None
    for name in sorted(d.name for d in shipped.iterdir()) if shipped.is_dir() else []:
        rule = load_policy(shipped / name, t)
        rows.append((f"shipped `{name}` ({rule.name})", rule))
        if rule.name == "learned":
            learned = (f"shipped `{name}`", rule, json.loads((shipped / name / "policy.json").read_text()))
    train_logits = Evaluation(model, train, t).step_logits
    if learned is None:  # no shipped learned rule: train one here (threshold from validation)
        net, info = train_policy(train, train_logits, kind="learned", log=lambda m: None)
        rule = LearnedExitRule(net, choose_learned_threshold(net, val.step_logits, val.labels), t)
        rows.append(("learned exit rule", rule))
        learned = ("learned exit rule", rule, None)
    for beta in args.betas:
        net, _ = train_policy(train, train_logits, kind="policy", beta=beta, epochs=3, log=lambda m: None)
        rows.append((f"SEENN-II, beta {beta:g}, authors' weighting", PolicyRule(net)))
    conf = Confidence(0.5)
    th_val = choose(val.step_logits, val.labels, score_matrix(val.step_logits, conf))
    rows.append((f"SEENN-I, threshold {th_val:.4g} chosen on validation as the learned rule's", Confidence(th_val)))
    stored = config.get("exit", {}).get("confidence")
    if stored:
        rows.append((f"SEENN-I, calibrated threshold {stored['threshold']:.4g} (shipped)", Confidence(stored["threshold"])))
    out = []
    for label, rule in rows:
        e = test.summarize(rule.describe(), test.run(rule))
        ref = seenn1_at(test, e["accuracy"])
        out.append((label, e, ref))
        print(label, e["accuracy"], e["avg_timesteps"], ref and ref["avg_timesteps"], file=sys.stderr)

    # the two threshold rules compared as procedures: rule + threshold chosen on held-out data, many random halves
    pool_logits = torch.cat([val.step_logits, test.step_logits])
    pool_labels = torch.cat([val.labels, test.labels])
    learned_name = "learned exit rule" + ("" if learned[0] == "learned exit rule" else f" ({learned[0]})")
    scores = {"SEENN-I (confidence)": score_matrix(pool_logits, conf),
              learned_name: score_matrix(pool_logits, learned[1])}
    res = resampled(pool_logits, pool_labels, scores, args.repeats)
    frontier = {name: test_frontier(test.step_logits, test.labels, score_matrix(test.step_logits, r))
                for name, r in (("SEENN-I (confidence)", conf), (learned_name, learned[1]))}

    lines = [f"## SEENN-II and the learned exit rule against SEENN-I ({args.run})", "",
             f"{today()}, `python benchmarks/policies.py --run {args.run} --betas "
             f"{' '.join(f'{b:g}' for b in args.betas)} --repeats {args.repeats}`, {machine()}.", "",
             f"Run {args.run}, {len(test.labels):,} test images, full-T accuracy {full:.2%}, ideal limit "
             f"{head['ideal_avg_timesteps']:.3f} average timesteps. Policies are trained on the training split (SNN "
             "frozen); thresholds and beta are chosen on the validation split; every row is run on the test split by "
             "the step-by-step runner. 'SEENN-I at equal accuracy' is the confidence threshold with the fewest "
             "average timesteps whose test accuracy is at least the row's (fitted on the test split itself: a bound "
             "in SEENN-I's favour).", "",
             "| exit | test accuracy | vs full T (points) | avg timesteps | exits per step | SEENN-I at equal accuracy (threshold, steps) |",
             "|---|---|---|---|---|---|"]
    for label, e, ref in out:
        r = "-" if ref is None or label.startswith("SEENN-I,") else f"{ref['threshold']:.6g}, {ref['avg_timesteps']:.3f}"
        lines.append(f"| {label} | {e['accuracy']:.2%} | {(e['accuracy'] - full) * 100:+.2f} | {e['avg_timesteps']:.3f} | "
                     f"{e['exit_histogram']} | {r} |")
    lines += ["", f"The two threshold rules as procedures (threshold chosen as above on a random half of the "
                  f"{len(pool_labels):,} validation and test images, scored on the other half, {args.repeats} halves; "
                  "mean and standard deviation), and each rule's test frontier (the fewest average steps of one "
                  "threshold fitted on the test split, accuracy within 0.1 points of full T):", "",
              "| rule | accuracy vs full T (points) | share within 0.1 points | avg timesteps | test frontier (steps, accuracy) |",
              "|---|---|---|---|---|"]
    for name, v in res.items():
        fr = frontier[name]
        lines.append(f"| {name} | {v[:, 0].mean() * 100:+.3f} (sd {v[:, 0].std() * 100:.3f}) | "
                     f"{(v[:, 0] >= -0.001 - 1e-12).mean():.2f} | {v[:, 1].mean():.3f} (sd {v[:, 1].std():.3f}) | "
                     f"{fr[1]:.3f}, {fr[0]:.2%} |")
    costs = []
    for name in ("learned", "seenn-ii-beta2"):
        info_path = shipped / name / "policy.json"
        if info_path.is_file():
            pi = json.loads(info_path.read_text())
            if "policy_time_per_snn_step" in pi:
                costs.append(f"`{name}` {pi['policy_time_per_snn_step']:.1%}")
            if "policy_macs" in pi:
                costs.append(f"(the SEENN-II network: {pi['policy_macs']:,} MACs per image)")
    if costs:
        lines += ["", "Cost of the shipped policies, timed against one SNN step on the same 256 validation images when "
                      "they were trained (the learned rule runs once per image and step, the SEENN-II network once per "
                      "image): " + " ".join(costs) + "."]
    publish("policies" if args.run == RUN else f"policies-{Path(args.run).name}", lines)


def test_frontier(step_logits, labels, scores, tolerance=0.001) -> tuple[float, float]:
    """(accuracy, steps) of the single threshold with the fewest steps within ``tolerance`` of full T on these images."""
    return operating_point(step_logits, labels, scores, choose(step_logits, labels, scores, tolerance))


if __name__ == "__main__":
    main()
