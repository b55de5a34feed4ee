"""The ``seenn`` command line: train, eval, demo, pretrained, download.

Every user mistake (missing or corrupt file, impossible argument) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import ConfigError, SeennError

DEMO_RUN = "fashion-mnist-convnet-t4"
DATASET_NAMES = ["fashion-mnist", "mnist", "cifar10", "cifar100"]
DEMO_THRESHOLDS = (0.9, 0.99, 0.999)


def _dataset_name(text: str) -> str:
    if text.startswith(("imagefolder:", "events:")) and not text.split(":", 1)[1].strip():
        raise argparse.ArgumentTypeError(f"{text} needs a folder after the colon (imagefolder:PATH, events:PATH)")
    if text in DATASET_NAMES or text.startswith(("imagefolder:", "events:")):
        return text
    raise argparse.ArgumentTypeError(f"must be one of {DATASET_NAMES}, imagefolder:PATH or events:PATH, got {text!r}")


def _writable_dir(path) -> Path:
    """Create an output folder up front, so a path that cannot be written fails before any work is done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the output folder {path}: {e.strerror}") from None
    return path


def _writable_file(path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: {path.parent} is not a folder")
    return path


def _emit_json(obj) -> None:
    print(json.dumps(obj, indent=2, allow_nan=False))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


# ------------------------------------------------------------------------------------------- train


_RECIPE_FIELDS = ("model", "epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "decoupled",
                  "bias_lr", "head_scale", "frozen_bn_scale", "bn_momentum", "schedule", "warmup", "final_lr",
                  "label_smoothing", "whiten", "whiten_bias_epochs", "dirac", "lookahead", "translate",
                  "translate_padding", "flip", "compile", "jpeg", "bn_reestimate")


def _train_config(args):
    from .recipe import recipe_settings
    from .train import TrainConfig

    given = {k: getattr(args, k) for k in _RECIPE_FIELDS if getattr(args, k, None) is not None}
    return TrainConfig(**{**recipe_settings(args.recipe), **given},
                       dataset=args.dataset, width=args.width, timesteps=args.timesteps, recipe=args.recipe,
                       loss=args.loss, tet_lambda=args.tet_lambda, tet_phi=args.tet_phi, surrogate=args.surrogate,
                       seed=args.seed, limit=args.limit, val_size=args.val_size, augment=not args.no_augment,
                       precision=args.precision, init=args.init,
                       exit_aware=args.exit_aware, ann=args.ann, quant_levels=args.quant_levels, clip_init=args.clip_init,
                       image_size=args.image_size, frames_by=args.frames_by)


def cmd_train(args) -> int:
    from .checkpoint import check_out_dir, drop_aside, set_aside
    from .distributed import finish, world
    from .train import resume_finished, train

    if args.resume is not None:
        if args.out is not None:
            raise ConfigError("--resume continues RUN_DIR in place and takes no --out (copy the run folder first to "
                              "continue it elsewhere)")
        if resume_finished(args.resume, args.epochs):  # also checks the state is sound before anything is written
            _log(f"{args.resume} has finished all its epochs: nothing to resume, nothing changed")
            print(args.resume)
            return 0
    elif args.out is None:
        raise ConfigError("seenn train needs --out RUN_DIR (or --resume RUN_DIR)")
    out = args.resume or args.out
    if args.out:
        cfg = _train_config(args)
        cfg.validate()  # argument mistakes first, then the data, then the folder
        _dataset_present(cfg.dataset, args.data_dir, cfg.image_size, cfg.timesteps, cfg.frames_by)
        check_out_dir(args.out, overwrite=args.overwrite, source=cfg.init and _run_dir_or_none(cfg.init),
                      inputs=[_dataset_folder(cfg.dataset, args.data_dir)])
    aside = None
    if args.out:
        if world()[0] == 0 and Path(args.out).is_dir() and args.overwrite:
            aside = set_aside(Path(args.out))  # the old run stays whole until the new one is written
            if aside is not None:
                _log(f"the old contents of {args.out} are kept in {aside} until the new run is complete")
        _writable_dir(args.out)
    try:
        metrics = train(_train_config(args), out, data_dir=args.data_dir, progress=not args.quiet,
                        device=args.device, log=_log, resume=args.resume is not None,
                        resume_epochs=args.epochs if args.resume is not None else None,
                        resume_bn_reestimate=args.bn_reestimate if args.resume is not None else None)
        if world()[0] == 0:
            drop_aside(aside)
            _log(f"best validation accuracy {metrics['best_val_accuracy']}; run written to {out}")
            print(out)
    finally:
        finish()
    return 0


def _dataset_present(name: str, data_dir, image_size=None, frames=None, split_by="time") -> None:
    from .data import find_dataset
    from .sources import is_prefixed, prepare

    if is_prefixed(name):
        prepare(name, image_size=image_size, frames=frames, split_by=split_by)
    else:
        find_dataset(name, data_dir, "train")


def _dataset_folder(name: str, data_dir, split: str | None = None):
    """The folder a dataset is read from (for the --out checks); None where it is not found (reported later)."""
    from .data import find_dataset
    from .sources import is_prefixed

    if is_prefixed(name):
        return Path(name.split(":", 1)[1] or ".")
    try:
        return find_dataset(name, data_dir, split)
    except SeennError:
        return None


def _record_pipeline(config: dict, info) -> None:
    """An imagefolder: or events: run records its pipeline (size, channels, mean, std, classes; frames)."""
    from .sources import record_pipeline

    record_pipeline(config, info)


def _run_dir_or_none(run):
    from .checkpoint import resolve_run

    try:
        return resolve_run(run)
    except SeennError:
        return None


# ------------------------------------------------------------------------------------------- eval


def _load(args, ann_ok: bool = False):
    from .checkpoint import load_run
    from .data import load_dataset
    from .sources import adopt_for_run

    model, config = load_run(args.run, device=args.device)
    if config.get("kind") == "ann" and not ann_ok:
        raise ConfigError(f"{args.run} is an ANN run: turn it into an SNN first (seenn convert {args.run} --out DIR)")
    if getattr(args, "exit", None) in ("policy", "learned") and getattr(args, "policy", None):
        _rule(args, config)  # a policy that does not fit the run is refused before the data is read
    dataset = args.dataset or config["dataset"]
    adopt_for_run(config, dataset)
    data = load_dataset(dataset, args.split, data_dir=args.data_dir, limit=args.limit,
                        val_size=config.get("training", {}).get("val_size", 5000))
    m = config["model"]
    want = (m["in_channels"], m["image_size"], m["image_size"])
    frames = getattr(data, "time_varying", False)
    have = tuple(data.images.shape[2 if frames else 1:])
    if want != have:
        raise ConfigError(f"the run expects {'frames' if frames else 'images'} of shape {want}, {dataset} has {have}")
    if config.get("kind") == "ann":
        return model, config, data, None
    max_t = config["max_timesteps"] if args.max_timesteps is None else args.max_timesteps
    if max_t < 1:
        raise ConfigError(f"--max-timesteps must be >= 1, got {max_t}")
    if frames and max_t > data.images.shape[1]:
        raise ConfigError(f"--max-timesteps {max_t} is more than the {data.images.shape[1]} frames each recording "
                          "of this run is cut into")
    return model, config, data, max_t


DEFAULT_THRESHOLD = 0.9


def _load_with_rule(args, purpose: str):
    """_load plus the exit rule, for commands that run the rule without labels (not the oracle)."""
    model, config, data, max_t = _load(args)
    rule = _rule(args, config)
    if rule is None:
        raise ConfigError(f"{purpose} needs an exit rule that runs without labels (not the oracle)")
    return model, config, data, max_t, rule


def _rule(args, config):
    """The exit rule asked for; without --threshold, the run's calibrated setting (seenn calibrate), else 0.9."""
    from .exits import make_rule

    if args.exit == "oracle":
        return None
    if args.exit in ("policy", "learned"):
        from .policy import LearnedExitRule, PolicyRule, load_policy

        if not getattr(args, "policy", None):
            raise ConfigError(f"--exit {args.exit} needs --policy POLICY_DIR (seenn policy train makes one)")
        rule = load_policy(args.policy, config["max_timesteps"], config)
        want = PolicyRule if args.exit == "policy" else LearnedExitRule
        if not isinstance(rule, want):
            raise ConfigError(f"{args.policy} is a {rule.name!r} policy; use --exit {rule.name}")
        return rule
    if args.exit in ("confidence", "entropy") and args.threshold is None:
        stored = config.get("exit", {}).get(args.exit)
        if stored:
            threshold = stored["thresholds"] if stored.get("thresholds") else stored["threshold"]
            return make_rule(args.exit, threshold=threshold, temperature=stored.get("temperature", 1.0))
        return make_rule(args.exit, threshold=DEFAULT_THRESHOLD)
    return make_rule(args.exit, threshold=args.threshold, timesteps=args.timesteps)


def _precision(args, config) -> str:
    """--precision, else the precision the run's calibrated threshold was certified for, else fp32. A precision
    other than the certified one is run as asked, with a note (the guarantee was made for the other)."""
    stored = (config.get("exit") or {}).get("confidence") or {}
    certified = stored.get("precision", "fp32") if stored.get("calibration") else None
    chosen = args.precision or certified or "fp32"
    uses_stored = getattr(args, "exit", None) == "confidence" and getattr(args, "threshold", None) is None
    if certified and chosen != certified and uses_stored and not getattr(args, "json", False):
        _log(f"note: the run's threshold was certified for {certified}; running {chosen} (seenn calibrate "
             f"--precision {chosen} certifies one for it)")
    return chosen


def cmd_eval(args) -> int:
    from .distributed import finish, init_from_env

    rank, _ = init_from_env(args.device)  # under torchrun: each process evaluates its shard
    try:
        return _eval(args, rank)
    finally:
        finish()


def _eval(args, rank: int) -> int:
    from .evaluate import Evaluation

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.dump:
        _writable_file(args.dump)
    model, config, data, max_t = _load(args, ann_ok=True)
    if max_t is None:
        return _eval_ann(args, model, data, rank)
    rule = _rule(args, config)
    if rule is not None and getattr(rule, "timesteps", 1) > max_t:
        raise ConfigError(f"--timesteps {rule.timesteps} is more than the max timesteps {max_t}")
    t0 = time.perf_counter()
    ev = Evaluation(model, data, max_t, batch_size=args.batch_size, device=args.device, progress=not args.json,
                    precision=_precision(args, config))
    result = ev.oracle() if rule is None else ev.run(rule)
    desc = {"rule": "oracle", "threshold": None} if rule is None else rule.describe()
    report = {**ev.header(), "exit": ev.summarize(desc, result)}
    if config["model"]["name"] == "peer":  # what the user's network is fed, and how its steps are read
        from .interop.load import describe_input

        report["input"] = describe_input(config["model"].get("input"))
        report["readout"] = config["model"].get("readout") or "sum"
    if args.sweep:
        report["sweep"] = ev.sweep(args.exit if args.exit in ("confidence", "entropy") else "confidence")
    if args.audit_fraction:
        from .serve import audit_bound, audit_stream

        report["audit"] = audit_stream(result.prediction, ev.full_prediction, audit_bound(config, args.audit_bound),
                                       args.audit_fraction, alpha=args.audit_alpha)
    report["seconds"] = time.perf_counter() - t0
    if rank != 0:  # only rank 0 writes and prints
        return 0
    if args.dump:
        ev.dump(args.dump, rule, result)
    if args.json:
        _emit_json(report)
    else:
        _print_report(report)
    return 0


def cmd_serve(args) -> int:
    from .checkpoint import read_config, resolve_run
    from .serve import make_service, run_server

    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("seenn serve needs starlette, uvicorn and prometheus_client: pip install 'seenn[serve]'") \
            from None
    if not args.host.strip():
        raise ConfigError("--host '' would listen on every interface; name the address (0.0.0.0 for all, on "
                          "purpose)")
    config = read_config(resolve_run(args.run))
    rule = _rule(args, config)
    if rule is None:
        raise ConfigError("seenn serve needs an exit rule that runs without labels")
    if args.max_timesteps is not None and args.max_timesteps > config["max_timesteps"]:
        raise ConfigError(f"--max-timesteps {args.max_timesteps} is more than the run's {config['max_timesteps']}")
    if getattr(rule, "timesteps", 1) > (args.max_timesteps or config["max_timesteps"]):
        raise ConfigError(f"--timesteps {rule.timesteps} is more than the run's {config['max_timesteps']} timesteps")
    import torch

    torch.set_num_threads(args.threads)
    max_t = args.max_timesteps or config["max_timesteps"]
    from .serve import bind

    sock = bind(args.host, args.port)  # before the model loads and before it says it serves: a port in use is one line
    svc = make_service(args.run, rule=rule, max_timesteps=max_t, precision=args.precision, max_batch=args.max_batch,
                       max_queue=args.max_queue, audit_fraction=args.audit_fraction,
                       bound=args.audit_bound, audit_alpha=args.audit_alpha,
                       on_alarm=args.on_alarm, max_body=args.max_body, seed=args.seed)
    from .exits import describe_text

    _log(f"seenn serve {args.run} on http://{args.host}:{args.port} ({describe_text(svc.rule_desc)}, "
         f"{svc.precision}, audit {args.audit_fraction:g} of requests)")
    run_server(svc.app, args.host, args.port, sock)
    _log(f"stopped after answering {svc.app.state.served['served']} requests")
    return 0


def _eval_ann(args, model, data, rank: int) -> int:
    """An ANN run (before conversion): its accuracy, one pass per image."""
    from .train import step_logits

    t0 = time.perf_counter()
    logits = step_logits(model.to(args.device), data, 1, batch_size=args.batch_size, device=args.device)[:, 0]
    acc = (logits.argmax(1) == data.labels).sum().item() / len(data)
    report = {"dataset": data.info.name, "split": args.split, "samples": len(data), "kind": "ann",
              "accuracy": acc, "seconds": time.perf_counter() - t0}
    if rank == 0:
        if args.json:
            _emit_json(report)
        else:
            print(f"{data.info.name} {args.split}: {len(data)} samples, ANN accuracy {acc:.4f} (convert it to "
                  f"early-exit: seenn convert {args.run} --out DIR)")
    return 0


def _print_report(r: dict) -> None:
    kind = " (emulated event recordings)" if r.get("emulated") else ""
    print(f"{r['dataset']}{kind} / {r['split']}: {r['samples']} samples, max {r['max_timesteps']} timesteps")
    if "input" in r:
        print(f"input: {r['input']}; readout: {r['readout']}")
    print("accuracy per timestep: " + "  ".join(f"t={i + 1}: {a:.2%}" for i, a in enumerate(r["accuracy_per_timestep"])))
    print(f"oracle: {r['oracle_accuracy']:.2%} at {r['oracle_avg_timesteps']:.3f} avg timesteps; "
          f"ideal exit keeping the full-T accuracy: {r['ideal_avg_timesteps']:.3f}")
    e = r["exit"]
    th = "" if e.get("threshold") is None else f" > {e['threshold']:g}"
    print(f"exit rule {e['rule']}{th}: accuracy {e['accuracy']:.2%} at {e['avg_timesteps']:.3f} avg timesteps, "
          f"exits per step {e['exit_histogram']}, false exits {e['false_exits']}, rescued {e['rescued']}")
    if "audit" in r:
        a = r["audit"]
        print(f"audit of {a['audited']} of {a['requests']} samples ({a['fraction']:g}): {a['disagreements']} disagree "
              f"with full T (bound {a['bound']:g}); " + (f"ALARM after {a['alarm_after_requests']} samples"
                                                         if a["alarm"] else "no alarm"))
    if "sensor_ms_full" in r:
        print(f"sensor time read: {e['avg_sensor_ms']:.1f} ms on average at the exit, {r['sensor_ms_full']:.1f} ms at "
              f"full T (oracle {r['oracle_sensor_ms']:.1f}, ideal {r['ideal_sensor_ms']:.1f})")
    if "sweep" in r:
        _print_sweep(r["sweep"], r["accuracy_per_timestep"][-1])
    print(f"({r['seconds']:.1f} s)")


def _print_sweep(rows, full_accuracy: float) -> None:
    print(f"{'rule':<11}{'threshold':>10}{'accuracy':>10}{'vs full T':>11}{'avg steps':>11}  exits per step")
    for row in rows:
        th = "per-step" if row.get("threshold") is None else f"{row['threshold']:.4g}"
        if row.get("temperature"):
            th = "calib " + th
        print(f"{row['rule']:<11}{th:>10}{row['accuracy']:>10.2%}"
              f"{(row['accuracy'] - full_accuracy) * 100:>+10.2f}p{row['avg_timesteps']:>11.3f}  {row['exit_histogram']}")


def cmd_bench(args) -> int:
    from .bench import benchmark

    for flag in ("batch_size", "repeats"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.latency_samples < 1:
        raise ConfigError(f"--latency-samples must be >= 1, got {args.latency_samples}")
    model, config, data, max_t, rule = _load_with_rule(args, "timing")
    r = benchmark(model, data, rule, max_t, batch_size=args.batch_size, repeats=args.repeats,
                  latency_samples=args.latency_samples, device=args.device, compile=args.compile,
                  precision=_precision(args, config))
    if args.json:
        _emit_json(r)
        return 0
    print(f"{r['samples']} samples, batch {r['batch_size']}, T = {r['max_timesteps']}, {r['precision']}, "
          f"{r['rule']['rule']} exit: {r['avg_timesteps']:.3f} avg timesteps")
    print(f"full T {r['full_seconds']:.3f} s, early exit {r['early_exit_seconds']:.3f} s: speedup {r['speedup']:.2f}x "
          f"of an ideal {r['ideal_speedup']:.2f}x (efficiency {r['efficiency']:.2f}); continuous batching "
          f"{r['streaming_speedup']:.2f}x (efficiency {r['streaming_efficiency']:.2f})")
    lat = r["batch1_latency_ms"]
    print(f"batch-1 p50 latency: full {lat['full']:.2f} ms, early exit {lat['early_exit']:.2f} ms "
          f"({r['batch1_speedup']:.2f}x of an ideal {r['batch1_ideal_speedup']:.2f}x)")
    sps = r["samples_per_second"]
    print(f"samples/s: full {sps['full']:.0f}, early exit {sps['early_exit']:.0f}, streaming {sps['streaming']:.0f}")
    return 0


def cmd_calibrate(args) -> int:
    from .calibration import calibrate, calibration_lines, store_in_run
    from .checkpoint import PRETRAINED_DIR, check_out_dir, read_config, resolve_run
    from .fold import inference_model
    from .train import step_logits

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
    from .robustness import robustness_lines, robustness_report

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
    from .explain import explain, explanation_lines

    model, config, data, max_t, rule = _load_with_rule(args, "explain")
    if args.png and not getattr(data, "time_varying", False):
        raise ConfigError("--png draws the frames a recording's sample read; this run's inputs are images")
    report = explain(model, data, args.index, rule, max_t)
    if args.png:
        from .data import atomic_write_bytes
        from .report import frames_figure

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
    from .checkpoint import resolve_run
    from .energy import count_operations, energy_report
    from .evaluate import Evaluation
    from .policy import load_policy
    from .report import build_report

    from .checkpoint import check_out_dir

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
    from .energy import count_operations, energy_report
    from .evaluate import Evaluation

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


def cmd_export(args) -> int:
    from .checkpoint import load_run
    from .nir_io import export_nir

    if args.format != "nir":
        raise ConfigError(f"unknown export format {args.format!r}; choose nir")
    model, config = load_run(args.run)
    if config.get("kind") == "ann":
        raise ConfigError(f"{args.run} is an ANN run: convert it first (seenn convert {args.run} --out DIR)")
    rule = _rule(args, config)
    if rule is not None and getattr(rule, "timesteps", 1) > config["max_timesteps"]:
        raise ConfigError(f"--timesteps {rule.timesteps} is more than the run's {config['max_timesteps']} timesteps")
    from .checkpoint import check_out_dir

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    check_out_dir(out.parent, overwrite=True, what="the folder of --out")
    export_nir(model, config, out, None if rule is None else rule.describe(), dt=args.dt, peer=args.peer)
    print(args.out)
    return 0


def cmd_import(args) -> int:
    from .checkpoint import save_run
    from .data import dataset_info
    from .nir_io import import_nir

    from .checkpoint import check_out_dir, staged_dir

    info = dataset_info(args.dataset)
    check_out_dir(args.out, overwrite=args.overwrite, inputs=[args.file])
    model, config = import_nir(Path(args.file), dataset=args.dataset, max_timesteps=args.timesteps, dt=args.dt,
                               discretisation=args.discretisation)
    m = config["model"]
    if (m["in_channels"], m["image_size"]) != (info.channels, info.image_size):
        raise ConfigError(f"the graph takes {m['in_channels']}x{m['image_size']}x{m['image_size']} images, "
                          f"{args.dataset} has {info.channels}x{info.image_size}x{info.image_size}")
    if m["num_classes"] != info.num_classes:
        raise ConfigError(f"the graph gives {m['num_classes']} outputs, {args.dataset} has {info.num_classes} classes")
    if config["imported_from"]["max_timesteps_from"] == "default":
        _log(f"neither --timesteps nor the graph's metadata gives the timesteps: using {config['max_timesteps']}")
    _record_pipeline(config, info)
    with staged_dir(args.out, overwrite=args.overwrite) as stage:
        save_run(stage, model, config)
    print(args.out)
    return 0


def cmd_convert(args) -> int:
    from .checkpoint import check_out_dir, read_config, resolve_run, staged_dir
    from .conversion import convert_run
    from .schema import bounded

    bounded("timesteps", args.timesteps, "--timesteps")
    if (args.run is None) == (args.network is None):
        raise ConfigError("seenn convert takes an ANN run directory or --network FILE (one of them)")
    if args.network is not None:
        return _convert_file(args)
    for flag in ("weights", "dataset", "mean", "std"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag} goes with --network (an ANN run knows its own)")
    src = resolve_run(args.run)
    check_out_dir(args.out, overwrite=args.overwrite, source=src,  # never onto its own source or its data
                  inputs=[_dataset_folder(read_config(src)["dataset"], args.data_dir)])
    with staged_dir(args.out, overwrite=args.overwrite) as stage:
        config = convert_run(args.run, stage, timesteps=args.timesteps, bias_correction=args.bias_correction,
                             calibration_samples=args.calibration_samples, data_dir=args.data_dir, seed=args.seed,
                             potential_correction=args.potential_correction)
    th = config["converted_from"]["thresholds"]
    _log(f"{len(th)} IF layers, thresholds {' '.join(f'{t:.3g}' for t in th)}; max timesteps {args.timesteps}")
    bc = config["converted_from"].get("bias_correction")
    if bc:
        _log(f"biases corrected for steps 1..{bc['steps']} on {bc['samples']} training images: {bc['layers']} layers"
             + (f", {bc['skipped']} without a weighted input skipped" if bc["skipped"] else "")
             + (f"; initial potentials of {len(bc['mean_offset_over_threshold'])} neuron layers corrected per channel"
                if bc.get("potential") else ""))
    print(args.out)
    return 0


def _convert_file(args) -> int:
    """seenn convert --network FILE: the user's own ANN."""
    from .checkpoint import check_out_dir, staged_dir
    from .conversion import convert_file
    from .data import dataset_info
    from .interop.load import describe_input, input_record

    if args.dataset is None:
        raise ConfigError("--network needs --dataset (the images it classifies; calibration images come from them)")
    info = dataset_info(args.dataset)
    check_out_dir(args.out, overwrite=args.overwrite,
                  inputs=[args.network, args.weights, _dataset_folder(args.dataset, args.data_dir)])
    record = input_record(args.input_scale, info, args.mean, args.std)
    with staged_dir(args.out, overwrite=args.overwrite) as stage:
        config = convert_file(args.network, stage, dataset=args.dataset, factory=args.factory, weights=args.weights,
                              timesteps=args.timesteps, input=record, calibration_samples=args.calibration_samples,
                              percentile=args.percentile, bias_correction=args.bias_correction,
                              potential_correction=args.potential_correction, data_dir=args.data_dir, seed=args.seed,
                              val_size=args.val_size)
    th = config["converted_from"]["thresholds"]
    _log(f"input: {describe_input(record)}; {len(th)} IF layers, thresholds {' '.join(f'{t:.3g}' for t in th)}; "
         f"max timesteps {args.timesteps}")
    print(args.out)
    return 0


def cmd_adapt(args) -> int:
    """Another framework's trained network as a seenn run folder, early-exited live (seenn.interop)."""
    import torch

    from .checkpoint import check_out_dir, save_run, staged_dir
    from .data import dataset_info
    from .interop import load_peer, peer_run_config

    from .interop.load import describe_input, input_record

    info = dataset_info(args.dataset)
    check_out_dir(args.out, overwrite=args.overwrite, inputs=[args.network, args.weights])
    record = input_record(args.input_scale, info, args.mean, args.std)
    net = load_peer(args.network, args.factory, args.weights, args.framework, args.output, args.readout, record,
                    step=args.step, frames=args.dataset.startswith("events:"))
    with torch.no_grad():
        try:
            probe = torch.randn(2, info.channels, info.image_size, info.image_size,
                                generator=torch.Generator().manual_seed(0))
            out = net(probe, 2)
        except Exception as e:  # the user's forward: whatever it raises, one line
            raise ConfigError(f"the network does not run on {args.dataset} images "
                              f"[B, {info.channels}, {info.image_size}, {info.image_size}]: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if out.shape[-1] != info.num_classes:
        raise ConfigError(f"the network gives {out.shape[-1]} scores per image, {args.dataset} has "
                          f"{info.num_classes} classes (--output picks another element of a tuple output)")
    if not torch.isfinite(out).all():
        raise ConfigError("the network's scores hold NaN or Inf on a test input: seenn would rank them as "
                          "nonsense; fix the network (or its weights) first")
    _check_input_scale(net, record, info, args)
    config = peer_run_config(args.network, args.factory, net.framework, args.output, dataset=args.dataset,
                             max_timesteps=args.timesteps, info=info, readout=args.readout, input=record,
                             step=args.step)
    _record_pipeline(config, info)
    with staged_dir(args.out, overwrite=args.overwrite) as stage:
        save_run(stage, net, config)
    from .interop.trust import trust

    path, digest = trust(args.network)  # the user asked for this file to be run: its runs may run it, as it is now
    _log(f"input: {describe_input(record)}; readout: {args.readout}")
    _log(f"{net.framework} network from {args.network} ({args.factory}()), {args.timesteps} timesteps; every seenn "
         f"command takes {args.out} now (it runs {path}, trusted as it is now, SHA-256 {digest[:16]}...)")
    print(args.out)
    return 0


def _check_input_scale(net, record: dict, info, args) -> None:
    """The peer's full-T accuracy on a few hundred validation images under the chosen input scale and the other one
    (normalized / unit): a warning when the other scores far better (a net trained on [0, 1] pixels fed normalised
    ones loses most of its accuracy, silently)."""
    if not args.check_images or info.name.startswith("events:"):
        return
    from .data import load_dataset
    from .interop.load import describe_input, input_record, scale_accuracy

    try:
        data = load_dataset(args.dataset, "val", data_dir=args.data_dir, val_size=args.check_images)
    except SeennError as e:
        _log(f"note: the input-scale check did not run ({e})")
        return
    other = input_record("unit" if record["scale"] != "unit" else "normalized", info)
    mine, theirs = (scale_accuracy(net, r, data, args.timesteps) for r in (record, other))
    _log(f"input-scale check on {len(data)} validation images at T = {args.timesteps}: {mine:.2%} as "
         f"{record['scale']}, {theirs:.2%} as {other['scale']}")
    if theirs >= mine + 0.2:
        print(f"seenn: warning: the network scores {theirs:.1%} with input {describe_input(other)} and {mine:.1%} "
              f"with {describe_input(record)}: it was probably trained on the former; pass --input-scale "
              f"{other['scale']} (the run keeps what you chose)", file=sys.stderr)


def cmd_policy_train(args) -> int:
    import torch

    from .data import load_dataset
    from .engine import EarlyExitRunner
    from .evaluate import Evaluation
    from .exits import Fixed
    from .policy import (LearnedExitRule, PolicyRule, check_policy_args, choose_learned_threshold, save_policy,
                         train_policy)

    betas = _parse_betas(args.beta)
    for beta in betas:  # before the SNN's long pass over the training split
        check_policy_args(kind=args.kind, objective=args.objective, epochs=args.epochs, lr=args.lr, beta=beta,
                          hidden=args.hidden, members=args.members)
    from .checkpoint import check_out_dir, read_config, resolve_run, staged_dir

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
    val_data = load_dataset(train_data.info.name, "val", data_dir=args.data_dir,
                            val_size=config.get("training", {}).get("val_size", 5000))
    val = Evaluation(model, val_data, max_t)
    full_val = val.header()["accuracy_per_timestep"][-1]
    candidates = []
    for beta in betas if args.kind == "policy" else [betas[0]]:
        net, info = train_policy(train_data, train_ev.step_logits, kind=args.kind, beta=beta,
                                 weighting=args.weighting, objective=args.objective, epochs=args.epochs, lr=args.lr,
                                 seed=args.seed, hidden=args.hidden, members=args.members, log=_log)
        if len(betas) > 1 and args.kind == "policy":  # pick beta on validation for the accuracy target
            e = val.summarize({}, val.run(PolicyRule(net)))
            ok = e["accuracy"] >= full_val - args.max_accuracy_drop - 1e-12
            candidates.append(((not ok, e["avg_timesteps"] if ok else -e["accuracy"]), beta, net, info))
            _log(f"beta {beta:g}: validation accuracy {e['accuracy']:.2%} at {e['avg_timesteps']:.3f} steps")
        else:
            candidates.append(((False, 0.0), beta, net, info))
    _, beta, net, info = min(candidates, key=lambda c: c[0])
    if len(candidates) > 1:
        info["beta_candidates"] = betas
        info["beta_rule"] = f"fewest validation timesteps within {args.max_accuracy_drop:g} of full T"
    if args.kind == "learned":
        info["threshold"] = choose_learned_threshold(net, val.step_logits, val.labels)
        rule = LearnedExitRule(net, info["threshold"], max_t, args.out)
    else:
        rule = PolicyRule(net, args.out)
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


def _parse_betas(spec: str) -> list[float]:
    """'2', or 'auto' (a grid), or '1,2,5'."""
    text = "0.5,1,2,5,10,20" if spec == "auto" else spec
    try:
        betas = [float(b) for b in text.split(",")]
    except ValueError:
        raise ConfigError(f"--beta must be a number, a list like 1,2,5 or auto; got {spec!r}") from None
    if not betas or any(not (b >= 0) or b == float("inf") for b in betas):
        raise ConfigError(f"--beta values must be >= 0, got {spec!r}")
    return betas


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    from .checkpoint import load_run, resolve_run
    from .data import load_dataset
    from .evaluate import Evaluation
    from .exits import make_rule

    from .data import EMBEDDED

    t0 = time.perf_counter()
    run = DEMO_RUN
    if args.train:
        from .checkpoint import check_out_dir, drop_aside, read_config, set_aside
        from .train import TrainConfig, train

        shipped = dict(read_config(resolve_run(DEMO_RUN))["training"])
        shipped.pop("extra", None)
        cfg = TrainConfig(**shipped)
        if args.epochs is not None:
            cfg.epochs = args.epochs
        if args.limit is not None:
            cfg.limit = args.limit
        cfg.validate()  # before the folder, the folder before the hours of training
        _dataset_present(cfg.dataset, args.data_dir)
        check_out_dir(args.out, overwrite=args.overwrite, inputs=[_dataset_folder(cfg.dataset, args.data_dir)])
        aside = set_aside(Path(args.out)) if args.overwrite else None  # kept until the new run is complete
        run = args.out
        _log(f"training {cfg.model} on {cfg.dataset} for {cfg.epochs} epochs into {run} ...")
        train(cfg, run, data_dir=args.data_dir, progress=True, log=_log)
        drop_aside(aside)
    model, config = load_run(run)
    # the test split shipped inside the package comes first: the main job runs offline, with no dataset installed
    data_dir = args.data_dir if args.data_dir is not None else \
        (EMBEDDED if config["dataset"] == "fashion-mnist" else None)
    data = load_dataset(config["dataset"], "test", data_dir=data_dir, limit=args.limit)
    max_t = config["max_timesteps"]
    ev = Evaluation(model, data, max_t)
    rules = [make_rule(name, threshold=th) for name, th in [("confidence", t) for t in DEMO_THRESHOLDS]
             + [("entropy", 0.9)]]
    stored = config.get("exit", {}).get("confidence")
    if stored:  # the run's calibrated rule (seenn calibrate) comes first
        rules.insert(0, make_rule("confidence", threshold=stored.get("thresholds") or stored["threshold"],
                                  temperature=stored.get("temperature", 1.0)))
    rows = [ev.summarize(rule.describe(), ev.run(rule)) for rule in rules]
    report = {**ev.header(), "run": str(run), "exits": rows, "seconds": time.perf_counter() - t0}
    if args.json:
        _emit_json(report)
        return 0
    print(f"seenn demo: {config['model']['name']} SNN on {report['dataset']} ({report['samples']} test images), "
          f"T = {max_t}")
    print("accuracy per timestep (logits summed over steps 1..t):")
    for i, a in enumerate(report["accuracy_per_timestep"]):
        print(f"  t={i + 1}: {a:.2%}")
    print("temporal early exit, run step by step with exited samples dropped from the batch:")
    if stored and stored.get("calibration"):
        c = stored["calibration"]
        print(f"(first row: the run's calibrated threshold, at most {c['max_accuracy_drop'] * 100:g} points below "
              f"full T with {c['confidence_level']:.0%} confidence; `seenn calibrate`)")
    _print_sweep(rows, report["accuracy_per_timestep"][-1])
    print(f"oracle (each sample leaves at its first correct step): {report['oracle_accuracy']:.2%} at "
          f"{report['oracle_avg_timesteps']:.3f} avg timesteps")
    print(f"ideal exit that keeps the full-T accuracy: {report['ideal_avg_timesteps']:.3f} avg timesteps")
    print(f"done in {report['seconds']:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------- misc


def cmd_pretrained(args) -> int:
    from .checkpoint import pretrained_runs

    runs = pretrained_runs()
    if args.json:
        _emit_json(runs)
    else:
        wn, wd = (max((len(r[k]) for r in runs), default=0) for k in ("name", "dataset"))
        for r in runs:
            print(f"{r['name']:<{wn}}  {r['dataset']:<{wd}}  T={r['max_timesteps']:<4} {r['path']}")
    return 0


def cmd_trust(args) -> int:
    from .interop.trust import trust, trust_store

    path, digest = trust(args.file)
    _log(f"trusted {path} (SHA-256 {digest}) in {trust_store()}: peer runs built by it may run it while it is "
         "unchanged")
    return 0


def cmd_download(args) -> int:
    from .data import download

    folder = download(args.dataset, args.data_dir, base_url=args.mirror)
    print(folder)
    return 0


def cmd_events_emulate(args) -> int:
    from .events import SensorModel, emulate_folder

    model = SensorModel(threshold=args.threshold, noise_hz=args.noise_hz)
    meta = emulate_folder(args.dataset, args.out, data_dir=args.data_dir, train_limit=args.train_limit,
                          test_limit=args.test_limit, model=model, seed=args.seed, overwrite=args.overwrite,
                          progress=None if args.quiet else (lambda s, i, n: _log(f"{s}: {i}/{n} recordings")))
    _log(f"emulated {meta['counts']['Train']} + {meta['counts']['Test']} recordings of {args.dataset} "
         f"({meta['motion']}, {meta['sensor'][1]}x{meta['sensor'][0]}, {meta['mean_events']} events each on average)")
    print(args.out)
    return 0


def cmd_events_info(args) -> int:
    from .events import read_events, to_frames

    sensor = tuple(args.sensor) if args.sensor else None
    ev = read_events(args.file, args.format, sensor)
    out = {"file": str(args.file), "events": len(ev), "on": int(ev.p.sum()), "off": int(len(ev) - ev.p.sum()),
           "duration_ms": round(ev.duration_us / 1000, 3), "sensor": list(ev.sensor),
           "x": [int(ev.x.min()), int(ev.x.max())] if len(ev) else None,
           "y": [int(ev.y.min()), int(ev.y.max())] if len(ev) else None,
           "t_us": [int(ev.t[0]), int(ev.t[-1])] if len(ev) else None}
    if args.frames:
        counts, ends = to_frames(ev, args.frames, args.frames_by)
        out["frames"] = {"split_by": args.frames_by, "events": counts.reshape(args.frames, -1).sum(1).tolist(),
                         "end_ms": [round(float(e), 3) for e in ends]}
    if args.json:
        _emit_json(out)
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


# ------------------------------------------------------------------------------------------- parser


def _data_args(p) -> None:
    p.add_argument("--data-dir", help="folder holding the datasets (default: $SEENN_DATA, the user cache, "
                                      "/usr/share/datasets)")


def _n(name: str, lo: int = 1):
    """An argparse type: an integer in ``[lo, LIMITS[name]]`` (the documented bound on that size)."""
    from .schema import LIMITS

    hi = LIMITS[name]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {value}")
        return value

    parse.__name__ = name
    return parse


def _x(lo: float, hi: float, open_lo: bool = False, open_hi: bool = False):
    """An argparse type: a finite number in the given range."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > lo if open_lo else value >= lo) and (value < hi if open_hi else
                                                                                     value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number in {'(' if open_lo else '['}{lo:g}, {hi:g}"
                                             f"{')' if open_hi else ']'}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


ALL_RULES = ["confidence", "entropy", "fixed", "policy", "learned", "oracle"]
REAL_RULES = ALL_RULES[:5]  # the rules that run without labels


def _audit_args(p, default: float = 0.0) -> None:
    p.add_argument("--audit-fraction", type=_x(0, 1), default=default, metavar="F",
                   help="run this share of the samples to full T as well and test, without labels, whether the "
                        "early exits' disagreement with full T stays within the certified false-exit bound"
                        + (f" (default {default:g})" if default else ""))
    p.add_argument("--audit-bound", type=_x(0, 1, open_lo=True, open_hi=True),
                   help="the false-exit rate the audit holds the exits to (default: the run's calibrated bound)")
    p.add_argument("--audit-alpha", type=_x(0, 1, open_lo=True, open_hi=True), default=0.01,
                   help="the audit's false-alarm probability over the whole run (default 0.01)")


def _run_parser(sub, name: str, help: str, *, split: str = "test", rules=REAL_RULES, batch_size: int | None = 500,
                limit: int | None = None, json_flag: bool = True, precision: bool = False):
    """A sub-command that evaluates a run on a dataset split: the arguments they all share."""
    p = sub.add_parser(name, help=help)
    p.add_argument("run", help="a run directory or the name of a shipped run")
    p.add_argument("--dataset", help="default: the run's dataset")
    p.add_argument("--split", default=split, choices=["train", "val", "test"])
    if rules:
        p.add_argument("--exit", default="confidence", choices=rules)
        p.add_argument("--threshold", type=float, help="exit threshold in [0, 1] (default: the run's calibrated "
                                                       "threshold, else 0.9)")
        p.add_argument("--timesteps", type=_n("timesteps"), help="steps for --exit fixed")
        p.add_argument("--policy", help="policy folder or shipped policy name for --exit policy / learned")
    p.add_argument("--max-timesteps", type=_n("timesteps"), help="default: the run's T (at most 1024)")
    p.add_argument("--limit", type=_n("samples"), default=limit, help="only the first N samples of the split")
    if batch_size:
        p.add_argument("--batch-size", type=_n("batch_size"), default=batch_size)
    p.add_argument("--device", default="cpu")
    if precision:
        p.add_argument("--precision", choices=["fp32", "bf16", "int8"],
                       help="the convolutions that read spikes in fp32, bf16 or int8 (membranes, stem and logits stay "
                            "fp32; default: the precision the run's threshold was certified for, else fp32)")
    if json_flag:
        p.add_argument("--json", action="store_true")
    _data_args(p)
    return p


class _Parser(argparse.ArgumentParser):
    """Argument mistakes are user mistakes too: one line, exit code 2 (through SeennError), no usage dump."""

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="seenn", description="Spiking neural networks with temporal early exit (SEENN).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a spiking network directly (BPTT, TET loss)")
    t.add_argument("--dataset", default="fashion-mnist", type=_dataset_name,
                   help="fashion-mnist, mnist, cifar10, cifar100, imagefolder:PATH (one folder per class) or "
                        "events:PATH (event recordings, Train/CLASS/ and Test/CLASS/; --timesteps frames each)")
    t.add_argument("--image-size", type=_n("image_size"), help="imagefolder: the square size images are resized to "
                                                               "(default 32)")
    t.add_argument("--frames-by", choices=["time", "count"], default="time",
                   help="events: cut each recording into --timesteps frames of equal time (default) or equal event "
                        "counts")
    t.add_argument("--recipe", choices=["fast"],
                   help="start from a named set of training settings, each still overridable by its own flag: fast "
                        "= the CIFAR-10 speed-record recipe (airbench network, whitening, decoupled Nesterov SGD "
                        "at batch 1024, warm-up and linear decay, lookahead, alternating flip; 10 epochs)")
    t.add_argument("--model", help="convnet (28x28, the default), vgg, resnet19, resnet20 or airbench (32x32)")
    t.add_argument("--width", type=_x(0, 16, open_lo=True), default=1.0, help="channel width multiplier, in (0, 16]")
    t.add_argument("--timesteps", type=_n("timesteps"), default=4, help="timesteps T used in training (1 to 1024)")
    t.add_argument("--epochs", type=_n("epochs"), help="default 10; with --resume: a new length for the run (more or "
                                                      "fewer epochs; the learning rate from then on is the "
                                                      "schedule's of a run of that length)")
    t.add_argument("--batch-size", type=_n("batch_size"), help="default 64")
    t.add_argument("--lr", type=float, help="default 0.1 (with --decoupled: per 1024 examples)")
    t.add_argument("--momentum", type=_x(0, 1), help="SGD momentum in [0, 1), default 0.9")
    t.add_argument("--weight-decay", type=_x(0, 1), help="default 5e-4 (with --decoupled: per 1024 examples)")
    _bool = dict(action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--nesterov", **_bool, help="Nesterov momentum")
    t.add_argument("--decoupled", **_bool, help="learning rate and weight decay per 1024 examples, decoupled from "
                                               "each other and from the momentum (seenn.recipe.param_groups)")
    t.add_argument("--bias-lr", type=float, metavar="X", help="batch norm biases learn X times faster (decoupled)")
    t.add_argument("--head-scale", type=float, metavar="S", help="the readout trained as if multiplied by S "
                                                                 "(decoupled)")
    t.add_argument("--frozen-bn-scale", **_bool, help="batch norm's scale stays 1")
    t.add_argument("--bn-momentum", type=float, help="weight of a new batch in BN's running statistics, default 0.1")
    t.add_argument("--schedule", choices=["cosine", "linear"], help="cosine (default) or linear: warm-up from 0.2 "
                                                                    "then linear decay")
    t.add_argument("--warmup", type=float, metavar="FRACTION", help="share of the steps spent warming up")
    t.add_argument("--final-lr", type=float, metavar="FACTOR", help="the schedule's last factor, default 0")
    t.add_argument("--label-smoothing", type=float, help="default 0")
    t.add_argument("--whiten", **_bool, help="first layer set from training-image patches and frozen (airbench)")
    t.add_argument("--whiten-bias-epochs", type=_n("epochs", 0), help="epochs the whitening bias trains, default 3")
    t.add_argument("--dirac", **_bool, help="3x3 convolutions start as identities")
    t.add_argument("--lookahead", **_bool, help="lookahead weight averaging")
    t.add_argument("--bn-reestimate", type=_n("repeats", 0), metavar="BATCHES",
                   help="re-estimate batch norm's statistics on this many training batches before each validation "
                        "(default 0; also with --resume: evaluation only, the weights' path is unchanged)")
    t.add_argument("--translate", type=int, metavar="PIXELS", help="augmentation shift, 0 to 8, default 4")
    t.add_argument("--translate-padding", choices=["zeros", "reflect"], help="borders of a shifted image")
    t.add_argument("--flip", choices=["random", "alternate"], help="mirror at random (default) or in alternate "
                                                                   "epochs")
    t.add_argument("--loss", default="tet", choices=["tet", "mean-ce"])
    t.add_argument("--tet-lambda", type=float, default=1e-3)
    t.add_argument("--tet-phi", type=float, default=1.0)
    t.add_argument("--surrogate", default="tanh", choices=["tanh", "triangle", "rectangle"])
    t.add_argument("--seed", type=_n("seed", 0), default=0)
    t.add_argument("--limit", type=_n("samples"), help="train on the first N training samples only")
    t.add_argument("--val-size", type=_n("samples", 0), default=5000, help="training samples held out for validation")
    t.add_argument("--no-augment", action="store_true", help="no random crop / flip (32x32 only)")
    t.add_argument("--jpeg", type=_x(0, 1), metavar="P",
                   help="re-encode each training image as JPEG with probability P, quality drawn in [40, 95] "
                        "(robustness to compression artifacts)")
    t.add_argument("--compile", **_bool,
                   help="torch.compile the neurons' BPTT loops: faster training after a one-off compile")
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: convolutions and linear layers under bf16 autocast (membranes, BN and the loss stay "
                        "fp32); fast only where the CPU has bf16 arithmetic (AVX512-BF16 / AMX) or on a GPU")
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--out", help="run directory to write")
    t.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (its own settings are used)")
    t.add_argument("--init", metavar="RUN", help="start from this run's weights (fine-tuning; same model and width; an ANN run starts a "
                        "LIF network, a converted run is fine-tuned as it is: its layers, IF neurons and horizon)")
    t.add_argument("--exit-aware", type=float, default=0.0, metavar="W",
                   help="weight in [0, 1] of the exit-aware loss (accumulated-logit cross-entropy weighted toward "
                        "early steps); with --init: exit-aware fine-tuning")
    t.add_argument("--ann", action="store_true",
                   help="train an ANN with QCFS activations instead (convnet, vgg, resnet19, resnet20), to turn into an SNN with "
                        "seenn convert")
    t.add_argument("--quant-levels", type=_n("quant_levels"), default=8, metavar="L", help="QCFS quantization levels (with --ann)")
    t.add_argument("--clip-init", type=float, default=2.0, metavar="LAM",
                   help="QCFS initial clip value (with --ann; learned from there)")
    _data_args(t)
    t.set_defaults(func=cmd_train)

    e = _run_parser(sub, "eval", "evaluate a run with temporal early exit", rules=ALL_RULES, precision=True)
    e.add_argument("--sweep", action="store_true", help="also sweep a grid of thresholds")
    e.add_argument("--dump", help="write per-sample arrays to this .npz file")
    _audit_args(e)
    e.set_defaults(func=cmd_eval)

    sv = sub.add_parser("serve", help="an HTTP inference service with early exit and a live audit of its exits")
    sv.add_argument("run", help="a run directory or the name of a shipped run")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_n("port", 0), default=8000)
    sv.add_argument("--exit", default="confidence", choices=["confidence", "entropy", "fixed", "learned"])
    sv.add_argument("--threshold", type=float, help="default: the run's calibrated threshold, else 0.9")
    sv.add_argument("--timesteps", type=_n("timesteps"), help="steps for --exit fixed")
    sv.add_argument("--policy", help="learned exit rule folder for --exit learned")
    sv.add_argument("--max-timesteps", type=_n("timesteps"), help="default: the run's T")
    sv.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    sv.add_argument("--max-batch", type=_n("batch_size"), default=64, help="samples stepped together at most")
    sv.add_argument("--max-queue", type=_n("samples"), default=256,
                    help="requests waiting to join the batch at most; beyond it 503 with Retry-After")
    sv.add_argument("--max-body", type=_n("samples"), default=8 * 1024 * 1024, help="bytes of one request body")
    sv.add_argument("--on-alarm", choices=["report", "full-t"], default="report",
                    help="full-t: stop exiting early once the audit raises its alarm, until POST /v1/audit/reset")
    sv.add_argument("--seed", type=_n("seed", 0), default=0, help="which requests are audited")
    sv.add_argument("--threads", type=_n("threads"), default=1,
                    help="PyTorch threads of the model (default 1: at the small batches a service steps, more threads "
                         "spin-wait on the cores the HTTP side needs)")
    _audit_args(sv, default=0.03)
    sv.set_defaults(func=cmd_serve)

    b = _run_parser(sub, "bench", "time early exit against full T (same samples, side by side)", batch_size=256,
                    limit=4096, precision=True)
    b.add_argument("--repeats", type=_n("repeats"), default=3)
    b.add_argument("--latency-samples", type=_n("samples"), default=100)
    b.add_argument("--compile", action="store_true",
                   help="batch-1 paths (early exit and every full-T path alike) through torch.compile")
    b.set_defaults(func=cmd_bench)

    c = _run_parser(sub, "calibrate", "choose the exit threshold with a statistical guarantee", split="val",
                    rules=None, batch_size=None, precision=True)
    c.add_argument("--max-accuracy-drop", type=_x(0, 1, True, True), default=0.005, help="e.g. 0.005 = half a point")
    c.add_argument("--confidence-level", type=_x(0, 1, True, True), default=0.95)
    c.add_argument("--per-step", action="store_true", help="one threshold per timestep")
    c.add_argument("--allow-no-early-exit", action="store_true",
                   help="when no threshold can be certified, store 'never exit early' even over a working threshold")
    c.add_argument("--temperature", action="store_true", help="fit a softmax temperature first")
    c.add_argument("--out", help="write a calibrated copy of the run here instead of updating it")
    c.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    c.set_defaults(func=cmd_calibrate)

    r = _run_parser(sub, "robustness", "early exit under corrupted inputs (distribution shift)")
    r.add_argument("--corruption", default="gaussian-noise", choices=["gaussian-noise", "blur", "contrast", "jpeg"],
                   help="jpeg: the JPEG part of the CIFAR-10 test batch against its exact part")
    r.add_argument("--severity", default="1..5", help="1..5, 3 or 1,3,5")
    r.add_argument("--seed", type=_n("seed", 0), default=0)
    r.set_defaults(func=cmd_robustness)

    x = _run_parser(sub, "explain", "why one sample exited when it did", batch_size=None)
    x.add_argument("--index", type=int, required=True)
    x.add_argument("--png", metavar="FILE", help="event runs: draw the frames the sample read before it left")
    x.set_defaults(func=cmd_explain)

    rp = _run_parser(sub, "report", "write an HTML report with plots", json_flag=False)
    rp.add_argument("--out", required=True, help="folder for index.html and its PNG plots")
    rp.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    rp.add_argument("--policies", nargs="*", help="policy folders to plot beside the threshold sweeps")
    rp.set_defaults(func=cmd_report)

    en = _run_parser(sub, "energy", "synaptic operations and energy per sample under early exit", rules=ALL_RULES)
    en.add_argument("--pj-per-ac", type=float, default=0.9, help="picojoules per accumulate (45 nm: 0.9)")
    en.add_argument("--pj-per-mac", type=float, default=4.6, help="picojoules per multiply-accumulate (45 nm: 4.6)")
    en.set_defaults(func=cmd_energy)

    ex = sub.add_parser("export", help="write a run as a NIR graph")
    ex.add_argument("run")
    ex.add_argument("--format", default="nir", help="nir")
    ex.add_argument("--out", required=True)
    ex.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    ex.add_argument("--exit", default="confidence", choices=["confidence", "entropy", "fixed"])
    ex.add_argument("--threshold", type=float, help="stored in the graph's metadata (default: the run's own)")
    ex.add_argument("--timesteps", type=_n("timesteps"))
    ex.add_argument("--dt", type=_x(0, 1e6, open_lo=True),
                    help="the time step the graph's time constants are written for (default: the one the --for "
                         "importer assumes: 1 for nir, 1e-4 for snntorch and spikingjelly, 1e-3 for norse)")
    ex.add_argument("--for", dest="peer", default="nir", choices=["nir", "norse", "snntorch", "spikingjelly"],
                    help="the importer that will read the file: norse also gets LIF thresholds in units of r = 1 "
                         "and average pools as convolutions, which is all its from_nir maps (the same network)")
    ex.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="turn a NIR graph (snnTorch, Norse, SpikingJelly, seenn) into a seenn run")
    im.add_argument("file")
    im.add_argument("--out", required=True, help="run directory to write")
    im.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    im.add_argument("--dataset", required=True, type=_dataset_name,
                    help="the data pipeline (normalisation) the graph was trained with")
    im.add_argument("--timesteps", type=_n("timesteps"), help="max timesteps (default: the graph's metadata, else 4)")
    im.add_argument("--dt", type=_x(0, 1e6, open_lo=True),
                    help="the time step the graph's time constants assume (default: its metadata, else 1)")
    im.add_argument("--discretisation", default="euler", choices=["euler", "exp"],
                    help="forward Euler (snnTorch, SpikingJelly) or exact exponential decay (sinabs, Norse-style)")
    im.set_defaults(func=cmd_import)

    cv = sub.add_parser("convert", help="turn an ANN into an SNN run (IF neurons): a QCFS ANN run (seenn train "
                                        "--ann), or your own ANN (--network FILE)")
    cv.add_argument("run", nargs="?", help="the ANN run directory (or give --network)")
    cv.add_argument("--network", metavar="FILE",
                    help="your own ANN instead of a run: a Python file whose factory function builds it (ReLU or "
                         "QCFS activations, average pooling, residual adds: traced from its forward), run once here")
    cv.add_argument("--factory", default="build", help="with --network: the function that returns the ANN")
    cv.add_argument("--weights", help="with --network: its trained weights (.safetensors, or a state_dict saved "
                                      "with torch.save, read with weights_only=True)")
    cv.add_argument("--dataset", type=_dataset_name,
                    help="with --network: the images it classifies (calibration images come from its training "
                         "split)")
    cv.add_argument("--input-scale", default="normalized", choices=["normalized", "unit"],
                    help="with --network: what the ANN was trained on (see seenn adapt --help); recorded in the run")
    cv.add_argument("--mean", type=float, nargs="+", help="with --network: custom input (x / 255 - mean) / std")
    cv.add_argument("--std", type=float, nargs="+", help="with --network: with --mean")
    cv.add_argument("--val-size", type=_n("samples", 0), default=5000,
                    help="with --network: the last training images held out as the run's validation split (for "
                         "calibrate; calibration images for the conversion come from the rest; default 5000)")
    cv.add_argument("--percentile", type=_x(0, 100, open_lo=True), default=99.9,
                    help="with --network: a ReLU's threshold is this percentile of its activations on the "
                         "calibration images (default 99.9)")
    cv.add_argument("--out", required=True, help="SNN run directory to write")
    cv.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    cv.add_argument("--timesteps", type=_n("timesteps"), default=64, help="max timesteps of the SNN run")
    cv.add_argument("--bias-correction", type=_n("timesteps"), metavar="STEPS",
                    help="correct each layer's bias so that its mean output over steps 1..STEPS matches the ANN "
                         "(calibration images from the training split; better early steps, so earlier exits)")
    cv.add_argument("--potential-correction", action="store_true",
                    help="with --bias-correction: fit each channel's output over those steps as rate x t + offset; "
                         "the rate's error goes into the bias, the offset into the neuron's initial potential "
                         "(better first steps without losing the late ones)")
    cv.add_argument("--calibration-samples", type=_n("samples"), default=256,
                    help="training images for --bias-correction (default 256)")
    cv.add_argument("--seed", type=_n("seed", 0), default=0, help="which calibration images are drawn")
    _data_args(cv)
    cv.set_defaults(func=cmd_convert)

    ad = sub.add_parser("adapt", help="early exit for a SpikingJelly / snnTorch / Norse network: a run folder that "
                                      "steps it live")
    ad.add_argument("network", help="a Python file whose factory function builds the network")
    ad.add_argument("--factory", default="build", help="the function in that file that returns the network")
    ad.add_argument("--weights", help="its trained weights: .safetensors, or a state_dict saved with torch.save "
                                      "(read with weights_only=True)")
    ad.add_argument("--step", metavar="NAME",
                    help="for a network whose forward is not one step (an snnTorch tutorial's forward loops over "
                         "num_steps): a method of the network, or a function step(net, x, state) -> (out, state) in "
                         "the file, that takes one step (state None at rest); implies the explicit adapter")
    ad.add_argument("--framework", choices=["spikingjelly", "snntorch", "norse", "explicit"],
                    help="default: detected from the network's neurons; explicit: forward(x, state) -> (out, state)")
    ad.add_argument("--output", type=int, default=None, choices=range(-8, 8), metavar="K",
                    help="which element of a tuple the network returns holds the class scores (required when it "
                         "returns a tuple: snnTorch's (spk, mem) is 0 for spike counts, 1 for the membrane)")
    ad.add_argument("--readout", default="sum", choices=["sum", "max", "last", "mean"],
                    help="how the steps' outputs become class scores: sum (default; SEENN-I's summed logits), max "
                         "(running maximum over steps, Norse's usual decoder), last (the latest step's output), mean "
                         "(the sum over t: same ranking as sum, a flatter softmax); the runner still sums, each step "
                         "giving the readout's change")
    ad.add_argument("--dataset", required=True, type=_dataset_name,
                    help="the images the network classifies (their classes, size and channels)")
    ad.add_argument("--input-scale", default="normalized", choices=["normalized", "unit"],
                    help="what the network was trained on: normalized (default), (x / 255 - mean) / std with the "
                         "dataset's constants (seenn's pipeline: `seenn datasets` lists them); unit, x / 255 in [0, 1] "
                         "(SpikingJelly's and snnTorch's tutorials: ToTensor without Normalize). Recorded in the run "
                         "and printed by eval; adapt warns when the other scale scores far better")
    ad.add_argument("--mean", type=float, nargs="+", help="custom input: (x / 255 - mean) / std, one per channel")
    ad.add_argument("--std", type=float, nargs="+", help="custom input: with --mean")
    ad.add_argument("--check-images", type=_n("samples", 0), default=256,
                    help="validation images the input-scale check runs at full T (0: no check; default 256)")
    ad.add_argument("--data-dir", help="where the dataset is (for the input-scale check)")
    ad.add_argument("--timesteps", type=_n("timesteps"), default=8, help="max timesteps (default 8)")
    ad.add_argument("--out", required=True, help="run directory to write")
    ad.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    ad.set_defaults(func=cmd_adapt)

    po = sub.add_parser("policy", help="SEENN-II policies and learned exit rules")
    posub = po.add_subparsers(dest="policy_command", required=True)
    pt = posub.add_parser("train", help="train a policy on a frozen SNN run")
    pt.add_argument("run")
    pt.add_argument("--dataset", help="default: the run's dataset")
    pt.add_argument("--kind", default="policy", choices=["policy", "learned"],
                    help="policy: SEENN-II (steps chosen from the image); learned: exit rule after each step")
    pt.add_argument("--beta", default="2", help="penalty for a wrong prediction (SEENN-II): a number, a list "
                                                "1,2,5, or auto; with several, the one picked on validation wins")
    pt.add_argument("--max-accuracy-drop", type=_x(0, 1, open_hi=True), default=0.001,
                    help="accuracy target for picking beta on validation (default 0.1 points)")
    pt.add_argument("--weighting", default="authors", choices=["authors", "none"])
    pt.add_argument("--objective", default="exact", choices=["exact", "reinforce"])
    pt.add_argument("--epochs", type=_n("epochs"), default=5)
    pt.add_argument("--hidden", type=_n("hidden"), default=32, help="learned rule: hidden units of each MLP")
    pt.add_argument("--members", type=_n("members"), default=5, help="learned rule: MLPs in the ensemble (probabilities averaged)")
    pt.add_argument("--lr", type=float, default=1e-3)
    pt.add_argument("--seed", type=_n("seed", 0), default=0)
    pt.add_argument("--limit", type=_n("samples"), help="train on the first N training images")
    pt.add_argument("--device", default="cpu")
    pt.add_argument("--out", required=True)
    pt.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    _data_args(pt)
    pt.set_defaults(func=cmd_policy_train)

    d = sub.add_parser("demo", help="the main job: the shipped Fashion-MNIST SNN with early exit")
    d.add_argument("--train", action="store_true", help="train the model from scratch first")
    d.add_argument("--epochs", type=_n("epochs"), help="with --train: override the shipped run's epochs")
    d.add_argument("--out", default="runs/demo", help="with --train: run directory to write")
    d.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    d.add_argument("--limit", type=_n("samples"), help="evaluate (and with --train, train) on the first N samples")
    d.add_argument("--json", action="store_true")
    _data_args(d)
    d.set_defaults(func=cmd_demo)

    pr = sub.add_parser("pretrained", help="list the shipped runs")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_pretrained)

    tr = sub.add_parser("trust", help="let peer runs run this Python file (as it is now; seenn adapt does it for "
                                      "the file it is given)")
    tr.add_argument("file", help="the Python file that builds a peer network")
    tr.set_defaults(func=cmd_trust)

    ev = sub.add_parser("events", help="event-camera recordings: read one, or emulate a dataset from real images")
    evsub = ev.add_subparsers(dest="events_command", required=True)
    em = evsub.add_parser("emulate", help="turn mnist / fashion-mnist / cifar10 images into emulated DVS recordings "
                                          "(N-MNIST's layout and format; use as --dataset events:OUT)")
    em.add_argument("--dataset", required=True, choices=["mnist", "fashion-mnist", "cifar10"])
    em.add_argument("--out", required=True, help="folder to write (Train/CLASS/*.bin, Test/CLASS/*.bin, events.json)")
    em.add_argument("--train-limit", type=_n("samples"), help="emulate the first N training images only")
    em.add_argument("--test-limit", type=_n("samples"), help="emulate the first N test images only")
    em.add_argument("--threshold", type=_x(0.01, 5), default=0.35, help="contrast threshold, log intensity")
    em.add_argument("--noise-hz", type=_x(0, 1000), default=0.5, help="shot-noise events per pixel and second")
    em.add_argument("--seed", type=_n("seed", 0), default=0)
    em.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    em.add_argument("--quiet", action="store_true")
    _data_args(em)
    em.set_defaults(func=cmd_events_emulate)
    ei = evsub.add_parser("info", help="read one recording and summarise it (checks the file)")
    ei.add_argument("file")
    ei.add_argument("--format", choices=["nmnist", "aedat2", "aedat3"], help="default: from the file name")
    ei.add_argument("--sensor", type=_n("image_size"), nargs=2, metavar=("H", "W"),
                    help="sensor size (default: 34 34 for N-MNIST, 128 128 for AEDAT)")
    ei.add_argument("--frames", type=_n("timesteps"), help="also cut it into this many frames")
    ei.add_argument("--frames-by", choices=["time", "count"], default="time")
    ei.add_argument("--json", action="store_true")
    ei.set_defaults(func=cmd_events_info)

    dl = sub.add_parser("download", help="download a dataset (needs the internet)")
    dl.add_argument("dataset", choices=DATASET_NAMES)
    dl.add_argument("--mirror", help="base URL holding the same file names")
    _data_args(dl)
    dl.set_defaults(func=cmd_download)
    return p


def main(argv=None) -> int:
    rc = _main(argv)
    from .distributed import left_group

    if left_group() and argv is None:  # a torchrun worker: end without the interpreter's teardown (see left_group)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(argv=None) -> int:
    try:
        from .alloc import tune_allocator

        tune_allocator()  # freed tensor memory kept for reuse: no paging in on every large tensor (see seenn.alloc)
        args = build_parser().parse_args(argv)
        if getattr(args, "device", None) is not None:
            from .schema import check_device

            args.device = check_device(args.device)
        return args.func(args)
    except SeennError as e:
        print(f"seenn: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (permissions, a file where a folder should be, a full disk)
        where = f": {e.filename}" if e.filename else ""
        print(f"seenn: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seenn: interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        print("seenn: error: an input is nested too deeply", file=sys.stderr)
        return 2
    except Exception as e:  # PyTorch and NumPy refusing an input, a peer network's own code failing: one line
        if os.environ.get("SEENN_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"seenn: error: {type(e).__name__}: {first[:300]} (SEENN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
