"""Early exit on event streams: an events: run (emulated N-MNIST by default) on its test split: accuracy after each
frame, SEENN-I with its threshold chosen on validation and run for real by the runner (each sample reads only
the frames before its exit), the average timesteps and sensor milliseconds read at the exit, the oracle and the
ideal limit.

    python benchmarks/events.py RUN [--data-dir DIR] [--limit N]

Writes the section "events-RUN" of docs/benchmarks.md (not with --limit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import calibrated_result, machine, publish, today

from seenn.analysis.evaluate import Evaluation
from seenn.analysis.metrics import fewest_steps_threshold
from seenn.data import load_dataset
from seenn.exits import Confidence
from seenn.runs.store import load_run, resolve_run
from seenn.runtime.engine import posthoc_exits, score_matrix

TOLERANCE = 0.002  # SEENN-I is held to within 0.2 points of full T
SWEEP = (0.5, 0.7, 0.9, 0.95, 0.99, 0.999, 0.9999)


def choose_on_validation(val: Evaluation) -> Confidence:
    """The threshold with the fewest average steps whose validation accuracy is within half the tolerance of
    validation full T (a margin for the test split)."""
    scores = score_matrix(val.step_logits, Confidence(0.5))
    return Confidence(fewest_steps_threshold(val.step_logits, val.labels, scores, tolerance=TOLERANCE / 2))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N test and validation recordings only (writes nothing)")
    args = p.parse_args()
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    model, cfg = load_run(args.run)
    t_max = cfg["max_timesteps"]
    val_size = cfg.get("training", {}).get("val_size", 5000)
    test = load_dataset(cfg["dataset"], "test", data_dir=args.data_dir, limit=args.limit)
    t0 = time.perf_counter()
    ev = Evaluation(model, test, t_max)
    full_seconds = time.perf_counter() - t0
    head = ev.header()
    val = load_dataset(cfg["dataset"], "val", data_dir=args.data_dir, val_size=val_size, limit=args.limit)
    rule = choose_on_validation(Evaluation(model, val, t_max))
    t0 = time.perf_counter()
    res = ev.run(rule)
    runner_seconds = time.perf_counter() - t0
    chosen = ev.summarize(rule.describe(), res)
    log(f"chosen on validation: {chosen}")
    rows = [ev.summarize(Confidence(th).describe(), posthoc_exits(ev.step_logits, Confidence(th))) for th in SWEEP]
    calibrated = calibrated_result(ev, cfg)
    name = Path(resolve_run(args.run)).name
    command = f"python benchmarks/events.py {args.run}"
    body = render(name, cfg, head, chosen, rows, calibrated, full_seconds, runner_seconds, command)
    if args.limit is None:
        publish(f"events-{name}", body)
    else:
        print(body)


def render(name, cfg, head, chosen, rows, calibrated, full_seconds, runner_seconds, command) -> str:
    t_max = cfg["max_timesteps"]
    tr, evd = cfg["training"], cfg["data"]["events"]
    full = head["accuracy_per_timestep"][-1]
    emulated = "emulated " if evd["emulated"] else ""
    lines = [f"## Early exit on {emulated}event streams (`{name}`)", "",
             f"{today()}, `{command}`, {machine()}.", "",
             f"`{name}`: a {tr['model']} (width {tr['width']}) LIF SNN trained directly (TET, {tr['epochs']} epochs) on "
             f"{emulated}recordings of {evd.get('source') or 'a dataset'} ({evd.get('motion') or 'recorded'}; "
             f"{evd['sensor'][1]}x{evd['sensor'][0]} sensor), each cut into T = {evd['frames']} frames by "
             f"{evd['split_by']}; step t reads frame t. {head['samples']:,} test recordings."
             + (" Emulated by `seenn events emulate` from the real images (not a recorded dataset)." if emulated else ""),
             "",
             "- accuracy after t frames (logits summed over 1..t): "
             + ", ".join(f"t={i + 1}: {a:.2%}" for i, a in enumerate(head["accuracy_per_timestep"])),
             f"- sensor time read at full T: {head['sensor_ms_full']:.1f} ms on average",
             f"- oracle: {head['oracle_accuracy']:.2%} at {head['oracle_avg_timesteps']:.2f} steps "
             f"({head['oracle_sensor_ms']:.1f} ms); ideal exit at full-T accuracy: {head['ideal_avg_timesteps']:.2f} "
             f"steps ({head['ideal_sensor_ms']:.1f} ms)", "",
             "| threshold | accuracy | vs full T | avg timesteps | of full T | avg sensor ms | false exits |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['threshold']:g} | {r['accuracy']:.2%} | {(r['accuracy'] - full) * 100:+.2f} | "
                     f"{r['avg_timesteps']:.2f} | {r['avg_timesteps'] / t_max:.0%} | {r['avg_sensor_ms']:.1f} | "
                     f"{r['false_exits']} |")
    lines += ["", f"SEENN-I chosen on the validation split (fewest steps within {TOLERANCE * 50:.2g} points of "
                  f"validation full T), run by the step-by-step runner on the test split: threshold "
                  f"{chosen['threshold']:.6g}: {chosen['accuracy']:.2%} ({(chosen['accuracy'] - full) * 100:+.2f} points "
                  f"vs full T) at {chosen['avg_timesteps']:.2f} average timesteps ({chosen['avg_timesteps'] / t_max:.0%} "
                  f"of full T), {chosen['avg_sensor_ms']:.1f} ms of recording read on average against "
                  f"{head['sensor_ms_full']:.1f} ms; {chosen['false_exits']} false exits, {chosen['rescued']} rescued; "
                  f"runner {runner_seconds:.1f} s against {full_seconds:.1f} s for all {t_max} steps."]
    if calibrated:
        lines += ["", f"The run's calibrated rule (`seenn calibrate`, stored in its config): threshold "
                      f"{calibrated['threshold']:.6g}, temperature {calibrated.get('temperature', 1.0):g}: "
                      f"{calibrated['accuracy']:.2%} ({(calibrated['accuracy'] - full) * 100:+.2f} points) at "
                      f"{calibrated['avg_timesteps']:.2f} steps, {calibrated['avg_sensor_ms']:.1f} ms, "
                      f"{calibrated['false_exits']} false exits."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
