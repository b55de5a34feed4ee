"""The fast recipe (`seenn train --recipe fast`), both paths, against the runs they replace.

    python benchmarks/fast_recipe.py --ann ANN_RUN --converted RUN --direct RUN [--replaced RUN ...] [--data-dir DIR]

- the QCFS ANN: accuracy on the test batch and its exact first 1,000 records; training wall time, time per epoch,
  the data pipeline's share of it, the first epoch at 90% on validation;
- the converted SNN: accuracy after T = 1 .. 32 steps beside the ANN; SEENN-I with the temperature and threshold
  chosen on validation (fewest steps within half of 0.5 points of validation T = 32) run by the step-by-step runner,
  and the run's calibrated rule;
- the directly trained LIF SNN: the same at its full T, held to 0.3 points; and its spiking test-time augmentation
  (`seenn.training.recipe.time_views`: another view of the image at each step), with the rule chosen on augmented validation;
- each replaced run's full-T accuracy and SEENN-I on the same test batch, in one table.

Writes the section "fast-recipe-PARTS" of docs/benchmarks.md, PARTS the paths given (with `--limit`: prints only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from _common import machine, publish, stored_rule, today

from seenn.analysis.evaluate import Evaluation
from seenn.analysis.metrics import accuracy_per_timestep, correct_per_timestep, exit_summary, ideal_timesteps
from seenn.data import Dataset, load_dataset
from seenn.data.augment import jpeg_recode
from seenn.exits import Confidence
from seenn.runs.store import load_run, resolve_run
from seenn.runtime.engine import posthoc_exits, step_logits
from seenn.training.recipe import time_views

GRID_T = (1.0, 2.0, 4.0, 8.0, 16.0)
GRID_TH = [0.5 + 0.01 * i for i in range(50)] + [1 - 10 ** -(2 + 0.25 * i) for i in range(17)]


def choose(val_logits, labels, reference_t: int, tolerance: float) -> Confidence:
    """The (temperature, threshold) with the fewest average validation steps whose validation accuracy is within
    half of ``tolerance`` of validation accuracy at ``reference_t`` (the other half: a margin for the test split)."""
    ref = accuracy_per_timestep(val_logits[:, :reference_t], labels)[-1]
    best = None
    for tau in GRID_T:
        for th in GRID_TH:
            rule = Confidence(th, temperature=tau)
            r = posthoc_exits(val_logits, rule)
            acc = (r.prediction == labels).double().mean().item()
            avg = r.exit_timestep.double().mean().item()
            if acc >= ref - tolerance / 2 and (best is None or avg < best[0]):
                best = (avg, rule)
    return best[1]


RECOMPRESSED = "exact 1,000 recompressed"
TEST_JPEG_QUALITY = 75  # the quality the JPEG-decoded part of the CIFAR-10 test batch was decoded from


def recompressed(data):
    """The exact first 1,000 records of the CIFAR-10 test batch recompressed as its other 9,000 were: the JPEG gap
    measured on the same images (the two parts of the batch are different images)."""
    n = min(1000, len(data))
    return Dataset(data.info, "test-recompressed", jpeg_recode(data.images[:n], TEST_JPEG_QUALITY).numpy(),
                   data.labels[:n].numpy())


def part_summary(logits, labels) -> dict:
    """Accuracy after each step and the ideal exit's average steps, of one part of the test split."""
    return {"accuracy_per_t": accuracy_per_timestep(logits, labels),
            "ideal": ideal_timesteps(correct_per_timestep(logits, labels)).double().mean().item()}


def parts_of(dataset: str, logits, labels) -> dict:
    parts = {"test": (logits, labels)}
    if dataset == "cifar10":  # the first 1,000 records of its test batch are the exact ones
        parts["exact 1,000"] = (logits[:1000], labels[:1000])
    return parts


# how each path's SEENN-I threshold is chosen on validation: (the step whose accuracy is the reference, None = full
# T; the accuracy it may give up, half of it on validation and half kept as a margin for the test split)
RULE_CHOICE = {"converted": (32, 0.005), "direct": (None, 0.003)}


def training_summary(name: str) -> dict:
    metrics = json.loads((resolve_run(name) / "metrics.json").read_text())
    epochs = metrics.get("epochs", [])
    secs = [e["seconds"] for e in epochs]
    data = [e.get("data_seconds") for e in epochs if e.get("data_seconds") is not None]
    t, to90 = 0.0, None
    for e in epochs:
        t += e["seconds"]
        if to90 is None and e.get("val_accuracy", 0) >= 0.9:
            to90 = (e["epoch"], t)
    return {"epochs": len(epochs), "epoch_seconds": secs,
            "wall_seconds": metrics.get("train_seconds"),  # the epochs and each validation (BN re-estimated) in all
            "data_share": sum(data) / sum(secs[:len(data)]) if data else None, "to90": to90,
            "best_val": metrics.get("best_val_accuracy")}


def subset(data, n: int | None):
    """The first 1,000 test records (CIFAR-10's exact ones) and an evenly strided sample of the rest, ``n`` in all
    (the JPEG-decoded records are grouped by class: a stride keeps every class); None: all of it."""
    if n is None or n >= len(data):
        return data
    from seenn.data import Dataset

    rest = torch.arange(1000, len(data))
    pick = torch.cat([torch.arange(1000), rest[torch.linspace(0, len(rest) - 1, n - 1000).long()]])
    return Dataset(data.info, data.split, data.images[pick].numpy(), data.labels[pick].numpy())


def spiking(name: str, data_dir, limit, reference_t: int | None, tolerance: float, tta: bool, log,
            test_subset: int | None = None, val_limit: int | None = None) -> dict:
    model, cfg = load_run(name)
    t_max = cfg["max_timesteps"]
    ref_t = min(reference_t or t_max, t_max)
    test = subset(load_dataset(cfg["dataset"], "test", data_dir=data_dir, limit=limit), test_subset)
    val = load_dataset(cfg["dataset"], "val", data_dir=data_dir, limit=val_limit or limit,
                       val_size=cfg.get("training", {}).get("val_size", 5000))
    t0 = time.perf_counter()
    ev, val_ev = Evaluation(model, test, t_max), Evaluation(model, val, t_max)
    log(f"{name}: full-T passes {time.perf_counter() - t0:.0f} s")
    out = {"t_max": t_max, "reference_t": ref_t, "parts": {}, "rules": {}, "test_samples": len(test),
           "val_samples": len(val)}
    for part, (logits, labels) in parts_of(cfg["dataset"], ev.step_logits, ev.labels).items():
        out["parts"][part] = part_summary(logits, labels)
    rules = {"SEENN-I chosen on validation": choose(val_ev.step_logits, val_ev.labels, ref_t, tolerance),
             "calibrated (stored)": stored_rule(cfg)}
    for what, rule in rules.items():
        if rule is None:
            continue
        res = ev.run(rule)  # the step-by-step runner; its first rows are the exact part's
        out["rules"][what] = {part: {**rule.describe(), **exit_summary(res.prediction[:len(labels)],
                                                                       res.exit_timestep[:len(labels)], labels, t_max,
                                                                       ev.full_prediction[:len(labels)])}
                              for part, (_, labels) in parts_of(cfg["dataset"], ev.step_logits, ev.labels).items()}
    if cfg["dataset"] == "cifar10":  # the JPEG gap on the same images; post-hoc exits (the runner's, tested equal)
        rec = recompressed(test)
        logits = Evaluation(model, rec, t_max).step_logits
        out["parts"][RECOMPRESSED] = part_summary(logits, rec.labels)
        for what, rule in rules.items():
            if rule is not None:
                r = posthoc_exits(logits, rule)
                out["rules"][what][RECOMPRESSED] = {**rule.describe(), **exit_summary(
                    r.prediction, r.exit_timestep, rec.labels, t_max, logits.sum(1).argmax(1))}
    if tta:  # spiking TTA: frames of views, post-hoc exits (the runner's exits, tested equal)
        frames = lambda d: torch.cat([model_logits(model, time_views(x, t_max), t_max)  # noqa: E731
                                      for x, _ in d.batches(500)])
        model.eval()
        tl, vl = frames(test), frames(val)
        rule = choose(vl, val.labels, ref_t, tolerance)
        out["tta"] = {"rule": rule.describe(), "parts": {}}
        for part, (logits, labels) in parts_of(cfg["dataset"], tl, test.labels).items():
            r = posthoc_exits(logits, rule)
            out["tta"]["parts"][part] = {"accuracy_per_t": accuracy_per_timestep(logits, labels),
                                         **exit_summary(r.prediction, r.exit_timestep, labels, t_max,
                                                        logits.sum(1).argmax(1))}
    return out


@torch.no_grad()
def model_logits(model, frames, t):
    return model(frames, t).transpose(0, 1).float()


def ann_accuracy(name: str, data_dir, limit) -> dict:
    model, cfg = load_run(name)
    test = load_dataset(cfg["dataset"], "test", data_dir=data_dir, limit=limit)
    pred = step_logits(model, test, 1)[:, 0].argmax(1)
    out = {part: (p == lab).double().mean().item()
           for part, (p, lab) in parts_of(cfg["dataset"], pred, test.labels).items()}
    if cfg["dataset"] == "cifar10":
        rec = recompressed(test)
        out[RECOMPRESSED] = (step_logits(model, rec, 1)[:, 0].argmax(1) == rec.labels).double().mean().item()
    return out


def pct(x) -> str:
    return "-" if x is None else f"{x:.2%}"


def render(args, ann, conv, direct, replaced, command) -> list[str]:
    lines = ["## The fast recipe: CIFAR-10 in CPU hours", "", f"{today()}, `{command}`, {machine()}.", ""]
    if ann:
        tr = ann["training"]
        lines += [f"QCFS ANN `{args.ann}`: test batch {pct(ann['acc']['test'])}, exact 1,000 "
                  f"{pct(ann['acc'].get('exact 1,000'))}"
                  + (f" (recompressed at quality {TEST_JPEG_QUALITY} as the rest of the batch was: "
                     f"{pct(ann['acc'][RECOMPRESSED])})" if RECOMPRESSED in ann["acc"] else "")
                  + f"; {tr['epochs']} epochs in {sum(tr['epoch_seconds']) / 60:.1f} "
                  f"min of training steps"
                  + (f", {tr['wall_seconds'] / 60:.1f} min in all with validation" if tr["wall_seconds"] else "")
                  + f" ({', '.join(f'{s:.0f}' for s in tr['epoch_seconds'])} s an epoch; the data "
                  f"pipeline {pct(tr['data_share'])} of it); best validation {pct(tr['best_val'])}"
                  + (f"; 90% on validation after epoch {tr['to90'][0]} ({tr['to90'][1] / 60:.1f} min)"
                     if tr["to90"] else "; never 90% on validation") + ".", ""]
    for label, name, r in (("Converted SNN", args.converted, conv), ("Directly trained LIF SNN", args.direct, direct)):
        if not r:
            continue
        shown = [t for t in (1, 2, 3, 4, 8, 16, 32, 64) if t <= r["t_max"]]
        lines += [f"### {label} `{name}`", "",
                  f"Test samples: {r['test_samples']}" + (" (the exact first 1,000 and an evenly strided sample of "
                                                          "the JPEG-decoded rest)" if r["test_samples"] < 10000 else
                                                          " (the whole test batch)")
                  + f"; the rule chosen on {r['val_samples']} validation images.", "",
                  "| part | " + " | ".join(f"T={t}" for t in shown) + " | ideal |",
                  "|---|" + "---|" * (len(shown) + 1)]
        for part, p in r["parts"].items():
            lines.append(f"| {part} | " + " | ".join(pct(p["accuracy_per_t"][t - 1]) for t in shown)
                         + f" | {p['ideal']:.2f} |")
        if r.get("tta"):
            for part, p in r["tta"]["parts"].items():
                lines.append(f"| {part}, spiking TTA | " + " | ".join(pct(p["accuracy_per_t"][t - 1]) for t in shown)
                             + " | |")
        lines += ["", f"| rule | part | accuracy | vs T={r['reference_t']} | avg timesteps | false exits |",
                  "|---|---|---|---|---|---|"]
        for what, per in r["rules"].items():
            for part, c in per.items():
                ref = r["parts"][part]["accuracy_per_t"][r["reference_t"] - 1]
                lines.append(f"| {what}: temperature {c.get('temperature', 1.0):.6g}, threshold {c['threshold']:.6g}"
                             f" | {part} | {pct(c['accuracy'])} | {(c['accuracy'] - ref) * 100:+.2f} | "
                             f"{c['avg_timesteps']:.2f} | {c.get('false_exits', '-')} |")
        if r.get("tta"):
            c = r["tta"]["rule"]
            for part, p in r["tta"]["parts"].items():
                ref = p["accuracy_per_t"][r["reference_t"] - 1]
                lines.append(f"| spiking TTA, SEENN-I chosen on augmented validation: temperature "
                             f"{c.get('temperature', 1.0):.6g}, threshold {c['threshold']:.6g} | {part} | "
                             f"{pct(p['accuracy'])} | {(p['accuracy'] - ref) * 100:+.2f} | {p['avg_timesteps']:.2f} | "
                             f"{p.get('false_exits', '-')} |")
        lines.append("")
    if replaced:
        lines += ["### Beside the runs they replace (the same test batch)", "",
                  "| run | full T | accuracy at full T | SEENN-I chosen on validation | avg timesteps | training |",
                  "|---|---|---|---|---|---|"]
        for name, r in replaced:
            c = r["rules"]["SEENN-I chosen on validation"]["test"]
            lines.append(f"| `{name}` | {r['t_max']} | {pct(r['parts']['test']['accuracy_per_t'][-1])} | "
                         f"{pct(c['accuracy'])} | {c['avg_timesteps']:.2f} | see the README |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ann", help="the QCFS ANN run trained with --recipe fast --ann")
    p.add_argument("--converted", help="the run converted from it")
    p.add_argument("--direct", help="the LIF run trained with --recipe fast")
    p.add_argument("--replaced", nargs="*", default=[], help="shipped runs they replace")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N test and validation images only (a quick check; writes nothing)")
    p.add_argument("--converted-test", type=int, help="the converted run on the exact 1,000 and a strided sample of "
                                                      "the rest, N test images in all (its full-T pass is 8x the LIF's)")
    p.add_argument("--converted-val", type=int, help="the converted run's rule chosen on the first N validation "
                                                     "images")
    args = p.parse_args()
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    ann = conv = direct = None
    if args.ann:
        ann = {"acc": ann_accuracy(args.ann, args.data_dir, args.limit), "training": training_summary(args.ann)}
        log(f"ANN {ann}")
    if args.converted:
        conv = spiking(args.converted, args.data_dir, args.limit, *RULE_CHOICE["converted"], False, log,
                       args.converted_test, args.converted_val)
    if args.direct:
        direct = spiking(args.direct, args.data_dir, args.limit, *RULE_CHOICE["direct"], True, log)
    # a replaced run's rule is chosen as the path's it stands beside, so the two rows compare like with like
    beside = RULE_CHOICE["direct" if args.direct else "converted"]
    replaced = [(n, spiking(n, args.data_dir, args.limit, *beside, False, log)) for n in args.replaced]
    command = "python benchmarks/fast_recipe.py" + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}" for k in ("ann", "converted", "direct", "converted_test",
                                                                 "converted_val") if getattr(args, k)) + \
        (" --replaced " + " ".join(args.replaced) if args.replaced else "")
    body = render(args, ann, conv, direct, replaced, command)
    if args.limit is None:  # one section per path measured, so the paths can be measured in separate runs
        publish("fast-recipe-" + "-".join(k for k in ("ann", "converted", "direct") if getattr(args, k)), body)
    else:
        print("\n".join(body))


if __name__ == "__main__":
    main()
