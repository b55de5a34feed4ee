"""How much the learned exit rule's result depends on its training seed: several seeds, each trained on the training
split's step logits (SNN frozen), threshold chosen on validation, scored on the test split, beside SEENN-I at the
same accuracy (its threshold fitted on the test split itself: a bound in SEENN-I's favour).

    python benchmarks/learned_seeds.py [--run fashion-mnist-convnet-t4] [--seeds 5]

Writes the section "learned-seeds" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse

from _common import machine, publish, today
from policies import seenn1_at

from seenn.analysis.evaluate import Evaluation
from seenn.data import load_dataset
from seenn.exits.policy import LearnedExitRule
from seenn.runs.store import load_run
from seenn.runtime.engine import posthoc_exits
from seenn.training.policy import choose_learned_threshold, train_policy


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="fashion-mnist-convnet-t4")
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    model, config = load_run(args.run)
    t, ds = config["max_timesteps"], config["dataset"]
    train = load_dataset(ds, "train")
    ev = {split: Evaluation(model, data, t) for split, data in
          (("train", train), ("val", load_dataset(ds, "val", val_size=config["training"]["val_size"])),
           ("test", load_dataset(ds, "test")))}
    test = ev["test"]
    full = (test.full_prediction == test.labels).double().mean().item()
    rows = []
    for seed in range(args.seeds):
        net, _ = train_policy(train, ev["train"].step_logits, kind="learned", seed=seed, log=lambda m: None)
        rule = LearnedExitRule(net, choose_learned_threshold(net, ev["val"].step_logits, ev["val"].labels), t)
        r = posthoc_exits(test.step_logits, rule)
        acc = (r.prediction == test.labels).double().mean().item()
        steps = r.exit_timestep.double().mean().item()
        ref = seenn1_at(test, acc)
        rows.append((seed, acc, steps, ref and ref["avg_timesteps"]))
        print(seed, acc, steps, ref, flush=True)
    lines = [f"## The learned exit rule over training seeds ({args.run})", "",
             f"{today()}, `python benchmarks/learned_seeds.py --run {args.run} --seeds {args.seeds}`, {machine()}.", "",
             f"Defaults of `seenn policy train --kind learned` (5 members, 32 hidden, 5 epochs) with seeds 0..{args.seeds - 1}; "
             f"threshold chosen on validation; test split ({len(test.labels):,} images, full T {full:.2%}), scored from "
             "the full-T logits (the runner gives the same exits, tested).", "",
             "| seed | test accuracy | vs full T (points) | avg timesteps | SEENN-I at equal accuracy (steps) |",
             "|---|---|---|---|---|"]
    for seed, acc, steps, ref in rows:
        lines.append(f"| {seed} | {acc:.2%} | {(acc - full) * 100:+.2f} | {steps:.3f} | "
                     f"{'-' if ref is None else f'{ref:.3f}'} |")
    publish("learned-seeds", lines)


if __name__ == "__main__":
    main()
