"""Calibrated thresholds on the shipped Fashion-MNIST run: does the promise hold on the test split, and what do
temperature scaling and per-step thresholds buy? Also robustness of the calibrated rule under corruptions.

    python benchmarks/calibration.py [--run NAME]

Calibration uses the validation split only (5,000 training images never trained on); every number marked 'test' is
measured on the 10,000 test images by the step-by-step runner. Writes the section "calibration" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys

from _common import machine, publish, today

from seenn.analysis.calibration import calibrate, ece_per_timestep
from seenn.analysis.evaluate import Evaluation
from seenn.analysis.robustness import corrupted
from seenn.data import load_dataset
from seenn.exits import Confidence, describe_text
from seenn.runs.store import load_run

TARGETS = (0.001, 0.0025, 0.005, 0.01)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="fashion-mnist-convnet-t4")
    p.add_argument("--confidence-level", type=float, default=0.95)
    args = p.parse_args()
    model, config = load_run(args.run)
    t_max = config["max_timesteps"]
    val = Evaluation(model, load_dataset(config["dataset"], "val", val_size=config["training"]["val_size"]), t_max)
    test = Evaluation(model, load_dataset(config["dataset"], "test"), t_max)
    full_test = test.header()["accuracy_per_timestep"][-1]
    rows, chosen_rule = [], None
    for per_step in (False, True):
        for temperature in (False, True):
            for target in TARGETS:
                c = calibrate(val.step_logits, val.labels, max_accuracy_drop=target,
                              confidence_level=args.confidence_level, per_step=per_step, temperature=temperature)
                rule = Confidence(c["thresholds"] if per_step else c["threshold"], c["temperature"])
                e = test.summarize(rule.describe(), test.run(rule))
                drop = full_test - e["accuracy"]
                rows.append((target, per_step, temperature, c, e, drop))
                print(f"{target} per_step={per_step} temp={temperature}: {describe_text(rule.describe())} "
                      f"test drop {drop * 100:+.2f}p steps {e['avg_timesteps']:.3f}", file=sys.stderr)
                if target == 0.005 and not per_step and not temperature:
                    chosen_rule = (rule, c)
    tau = rows[-1][3]["temperature"]
    ece_before = ece_per_timestep(test.step_logits, test.labels)
    ece_after = ece_per_timestep(test.step_logits, test.labels, tau)

    rule, c = chosen_rule
    rob = []
    for kind in ("gaussian-noise", "blur", "contrast"):
        for sev in (1, 3, 5):
            ev = Evaluation(model, corrupted(test.data, kind, sev), t_max)
            full = ev.header()["accuracy_per_timestep"][-1]
            e = ev.summarize(rule.describe(), ev.run(rule))
            rob.append((kind, sev, full, e, full - e["accuracy"]))

    lines = ["## Calibrated thresholds: the promise on new data", "",
             f"{today()}, `python benchmarks/calibration.py --run {args.run}`, {machine()}.", "",
             f"`seenn calibrate` on the validation split (5,000 images held out from training), confidence level "
             f"{args.confidence_level}; then the chosen rule runs on the 10,000 test images. Full-T test accuracy "
             f"{full_test:.2%}. The guarantee bounds the false-exit rate, hence the accuracy drop, at the target with "
             "95% probability; per-step thresholds fit their shape on half the validation split and certify on the other half.", "",
             "| target drop | thresholds | temperature | rule | val false exits / n | test accuracy | test drop (points) | promise kept | test avg timesteps | test false exits |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for target, per_step, temperature, c, e, drop in rows:
        lines.append(f"| {target * 100:g} pt | {'per step' if per_step else 'one'} | {'fitted' if temperature else 'no'} | "
                     f"{describe_text(e | {'rule': 'confidence'})} | {c['validation_false_exits']} / {c['certified_samples']} | "
                     f"{e['accuracy']:.2%} | {drop * 100:+.2f} | {'yes' if drop <= target else 'NO'} | "
                     f"{e['avg_timesteps']:.3f} | {e['false_exits']} |")
    lines += ["", f"Expected calibration error on the test split per timestep (15 bins), before and after temperature "
                  f"scaling (tau = {tau:.3f}, fitted on validation):", "",
              "| | " + " | ".join(f"t = {t + 1}" for t in range(t_max)) + " |", "|---|" + "---|" * t_max,
              "| ECE before | " + " | ".join(f"{x:.4f}" for x in ece_before) + " |",
              "| ECE after | " + " | ".join(f"{x:.4f}" for x in ece_after) + " |", "",
              f"Robustness of the rule calibrated for 0.5 points ({describe_text(rule.describe())}) on corrupted test "
              "images (`seenn robustness`): the promise was made for clean data; whether it survives the shift:", "",
              "| corruption | severity | full-T accuracy | exit accuracy | drop (points) | promise kept | avg timesteps | false exits |",
              "|---|---|---|---|---|---|---|---|"]
    for kind, sev, full, e, drop in rob:
        lines.append(f"| {kind} | {sev} | {full:.2%} | {e['accuracy']:.2%} | {drop * 100:+.2f} | "
                     f"{'yes' if drop <= 0.005 else 'NO'} | {e['avg_timesteps']:.3f} | {e['false_exits']} |")
    publish("calibration", lines)


if __name__ == "__main__":
    main()
