"""The ``seenn`` command line: seenn calibrate, robustness, explain, report, energy and policy train."""

from __future__ import annotations

from pathlib import Path

import torch

from ..analysis.calibration import calibrate, calibration_lines, store_in_run
from ..analysis.energy import count_operations, energy_report
from ..analysis.evaluate import Evaluation
from ..analysis.explain import explain, explanation_lines
from ..analysis.report import build_report, frames_figure
from ..analysis.robustness import robustness_lines, robustness_report
from ..data import atomic_write_bytes, load_dataset
from ..errors import ConfigError
from ..exits import Fixed
from ..exits.policy import load_policy, save_policy
from ..io.files import PRETRAINED_DIR, check_out_dir, staged_dir
from ..runs.store import read_config, resolve_run
from ..runtime.engine import EarlyExitRunner, step_logits
from ..runtime.inference import inference_model
from ..training.policy import check_policy_args, train_and_choose
from .common import (_dataset_folder, _emit_json, _load, _load_with_rule, _log, _parse_betas, _rule, _run_dir_or_none,
                     _timed, _writable_dir)


def cmd_calibrate(args) -> int:
    if args.split != "val":
        raise ConfigError(f"calibration certifies on held-out data: use --split val, not {args.split} (the training "
                          "split was fitted on, the test split is for the final report)")
    src = resolve_run(args.run).resolve()
    if args.out is None and PRETRAINED_DIR.resolve() in src.parents:
        raise ConfigError(f"{args.run} is a shipped run and stays unchanged; write a calibrated copy with --out DIR")
    if args.out:
        check_out_dir(args.out, overwrite=args.overwrite, source=src,
                      inputs=[_dataset_folder(read_config(src)["dataset"], args.data_dir, args.split)])
    model, config, data, max_t = _load(args)
    precision = args.precision or "fp32"
    logits = step_logits(inference_model(model.to(args.device), precision), data, max_t, device=args.device,
                         progress=not args.json)
    result = calibrate(logits, data.labels, max_accuracy_drop=args.max_accuracy_drop,
                       confidence_level=args.confidence_level, per_step=args.per_step,
                       temperature=args.temperature)
    result.update({"dataset": data.info.name, "split": data.split, "precision": precision})
    dest, kept = store_in_run(src, result, precision, out=args.out, overwrite=args.overwrite,
                              allow_no_early_exit=args.allow_no_early_exit)
    if kept:
        th = kept.get("thresholds") or kept.get("threshold")
        msg = (f"no threshold could be certified on {result['certified_samples']} validation samples at "
               f"{args.max_accuracy_drop:g} / {args.confidence_level:g}: kept the run's threshold {th} in {dest} "
               "(pass --allow-no-early-exit to store 'never exit early' instead)")
        if args.json:
            _emit_json({**result, "kept": kept})
            _log(msg)
        else:
            print(msg)
        return 0
    if args.json:
        _emit_json(result)
        return 0
    print("\n".join(calibration_lines(result, dest, precision)))
    return 0


def cmd_robustness(args) -> int:
    model, config, data, max_t, rule = _load_with_rule(args, "robustness")
    calib = config.get("exit", {}).get(args.exit, {}).get("calibration") if args.threshold is None else None
    report = robustness_report(model, data, rule, max_t, args.corruption, args.severity, seed=args.seed,
                               batch_size=args.batch_size, device=args.device, calibration=calib,
                               data_dir=args.data_dir)
    if args.json:
        _emit_json(report)
        return 0
    print("\n".join(robustness_lines(report)))
    return 0


def cmd_explain(args) -> int:
    model, config, data, max_t, rule = _load_with_rule(args, "explain")
    if args.png and not getattr(data, "time_varying", False):
        raise ConfigError("--png draws the frames a recording's sample read; this run's inputs are images")
    report = explain(model, data, args.index, rule, max_t)
    if args.png:
        i = args.index
        atomic_write_bytes(Path(args.png), frames_figure([(f"#{i}", data.images[i], report["exit_timestep"],
                                                           data.ends[i], report["prediction_name"],
                                                           report["label_name"])]))
    if args.json:
        _emit_json(report)
        return 0
    print("\n".join(explanation_lines(report)))
    return 0


def cmd_report(args) -> int:
    check_out_dir(args.out, overwrite=args.overwrite, inputs=[_run_dir_or_none(args.run)])
    model, config, data, max_t, rule = _load_with_rule(args, "the report")
    _writable_dir(args.out)
    ev = Evaluation(model, data, max_t, batch_size=args.batch_size, device=args.device, progress=True)
    energy = energy_report(count_operations(model, data, max_t), ev.run(rule).exit_timestep)
    # SEENN-II / learned-rule points: the run's own policies (a policies/ folder beside it) and any --policies
    folders = sorted(p for p in (resolve_run(args.run) / "policies").glob("*") if (p / "policy.json").is_file())
    points = {}
    for folder in folders + [Path(p) for p in args.policies or []]:
        prule = load_policy(folder, max_t, config)
        e = ev.summarize(prule.describe(), ev.run(prule))
        points[f"{prule.name}: {folder.name}"] = (e["avg_timesteps"], e["accuracy"])
    page = build_report(ev, rule, Path(args.out), f"seenn report: {Path(str(args.run)).name} on {data.info.name}",
                        policy_points=points, energy=energy)
    print(page)
    return 0


def cmd_energy(args) -> int:
    for flag in ("pj_per_ac", "pj_per_mac"):
        v = getattr(args, flag)
        if not (v >= 0 and v < float("inf")):
            raise ConfigError(f"--{flag.replace('_', '-')} must be a non-negative number, got {v}")
    model, config, data, max_t = _load(args)
    rule = _rule(args, config)
    ev = Evaluation(model, data, max_t, batch_size=args.batch_size, device=args.device)
    result = ev.oracle() if rule is None else ev.run(rule)
    counts = count_operations(model, data, max_t)
    rep = energy_report(counts, result.exit_timestep, pj_per_ac=args.pj_per_ac, pj_per_mac=args.pj_per_mac)
    rep = {"dataset": data.info.name, "split": data.split,
           "rule": {"rule": "oracle", "threshold": None} if rule is None else rule.describe(),
           "accuracy": (result.prediction == data.labels).double().mean().item(), **rep}
    if args.json:
        _emit_json(rep)
        return 0
    ps = rep["per_sample"]
    print(f"{rep['dataset']} / {rep['split']}: {rep['samples']} samples, {rep['avg_timesteps']:.3f} avg timesteps "
          f"of {rep['max_timesteps']}, accuracy {rep['accuracy']:.2%}")
    print(f"{'per sample':<12}{'MACs':>12}{'ACs':>14}{'energy (uJ)':>14}")
    for k in ("early_exit", "full", "ann"):
        print(f"{k:<12}{ps[k]['macs']:>12,.0f}{ps[k]['acs']:>14,.0f}{ps[k]['energy_uj']:>14.3f}")
    share = (lambda r: "n/a" if r is None else f"{r:.1%}")  # n/a: zero energy (0 pJ per operation)
    print(f"early exit uses {share(rep['early_exit_vs_full'])} of the full-T energy and "
          f"{share(rep['early_exit_vs_ann'])} of the ANN's ({rep['pj_per_ac']} pJ/AC, {rep['pj_per_mac']} pJ/MAC)")
    print("spike rate per layer and step: " + "; ".join(
        f"{n}: {' '.join(f'{r:.3f}' for r in v)}" for n, v in rep["spike_rates"].items()))
    return 0


def cmd_policy_train(args) -> int:
    betas = _parse_betas(args.beta)
    for beta in betas:  # before the SNN's long pass over the training split
        check_policy_args(kind=args.kind, objective=args.objective, epochs=args.epochs, lr=args.lr, beta=beta,
                          hidden=args.hidden, members=args.members)

    src = resolve_run(args.run)
    check_out_dir(args.out, overwrite=args.overwrite, source=src,
                  inputs=[_dataset_folder(read_config(src)["dataset"], args.data_dir)])
    args.split, args.max_timesteps = "train", None
    model, config, train_data, max_t = _load(args)
    if args.kind == "policy" and getattr(train_data, "time_varying", False):
        raise ConfigError("a SEENN-II policy picks the steps from the image before step 1; an event recording has "
                          "no image before its frames: use --kind learned (or the confidence rule) on event runs")
    _log(f"the frozen SNN's step logits on {len(train_data)} training images ...")
    train_ev = Evaluation(model, train_data, max_t, progress=True)
    val_data = load_dataset(train_data.info.name, "val", data_dir=args.data_dir, info=train_data.info,
                            val_size=config.get("training", {}).get("val_size", 5000))
    val = Evaluation(model, val_data, max_t)
    net, info, rule = train_and_choose(train_data, train_ev.step_logits, val, kind=args.kind, betas=betas,
                                       max_accuracy_drop=args.max_accuracy_drop, out=args.out, log=_log,
                                       weighting=args.weighting, objective=args.objective, epochs=args.epochs,
                                       lr=args.lr, seed=args.seed, hidden=args.hidden, members=args.members)
    res = val.run(rule)
    info["validation"] = val.summarize(rule.describe(), res)
    info["validation"]["full_accuracy"] = val.header()["accuracy_per_timestep"][-1]
    # the policy's own cost, timed against one SNN step on the same 256 images: the SEENN-II network once per
    # image, the learned rule once per image and step
    x = val_data.normalize(val_data.images[:256])
    step = EarlyExitRunner(model, Fixed(1), max_t)
    with torch.inference_mode():
        if args.kind == "policy":
            t_policy = min(_timed(lambda: net(x)) for _ in range(5))
        else:
            logits = val.step_logits[:256, 0]
            t_policy = min(_timed(lambda: rule.score(logits, 1)) for _ in range(5))
    t_step = min(_timed(lambda: step.predict(x)) for _ in range(5))
    info["policy_time_per_snn_step"] = t_policy / t_step
    info.update({"run": str(args.run), "dataset": val_data.info.name})
    with staged_dir(args.out, overwrite=args.overwrite) as stage:
        save_policy(stage, net, info)
    v = info["validation"]
    print(f"{args.kind} written to {args.out}: validation accuracy {v['accuracy']:.2%} (full T {v['full_accuracy']:.2%}) "
          f"at {v['avg_timesteps']:.3f} avg timesteps, exits per step {v['exit_histogram']}"
          + f"; the {args.kind} costs {info['policy_time_per_snn_step']:.1%} of one SNN step")
    return 0
