"""The ``seenn`` command line: seenn train and seenn demo."""

from __future__ import annotations

import time
from pathlib import Path

from ..analysis.evaluate import Evaluation
from ..data import EMBEDDED, dataset_info, load_dataset
from ..errors import ConfigError
from ..exits import make_rule
from ..io.files import check_out_dir, drop_aside, set_aside
from ..runs.store import load_run, read_config, resolve_run
from ..runtime.distributed import finish, world
from ..training import run as training_run
from ..training.distill import check_teacher
from ..training.recipe import recipe_settings
from ..training.run import TrainConfig
from ..training.state import resume_finished
from .common import (DEMO_RUN, DEMO_THRESHOLDS, _dataset_folder, _dataset_present, _emit_json, _log, _run_dir_or_none,
                     _writable_dir)
from .evaluate import _print_sweep

_RECIPE_FIELDS = ("model", "epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "decoupled",
                  "bias_lr", "head_scale", "frozen_bn_scale", "bn_momentum", "schedule", "warmup", "final_lr",
                  "label_smoothing", "whiten", "whiten_bias_epochs", "whiten_eps", "dirac", "lookahead", "translate",
                  "translate_padding", "flip", "compile", "jpeg", "bn_reestimate", "precision")


def _train_config(args):
    given = {k: getattr(args, k) for k in _RECIPE_FIELDS if getattr(args, k, None) is not None}
    return TrainConfig(**{**recipe_settings(args.recipe), **given},
                       dataset=args.dataset, width=args.width, timesteps=args.timesteps, recipe=args.recipe,
                       loss=args.loss, tet_lambda=args.tet_lambda, tet_phi=args.tet_phi, surrogate=args.surrogate,
                       seed=args.seed, limit=args.limit, val_size=args.val_size, augment=not args.no_augment,
                       init=args.init, distill=args.distill,
                       **{k: getattr(args, k) for k in ("distill_weight", "distill_temperature", "distill_flip")
                          if getattr(args, k) is not None},
                       exit_aware=args.exit_aware, ann=args.ann, quant_levels=args.quant_levels, clip_init=args.clip_init,
                       image_size=args.image_size, frames_by=args.frames_by)


def cmd_train(args) -> int:
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
        if cfg.distill:
            check_teacher(cfg.distill, cfg.dataset)
        _dataset_present(cfg.dataset, args.data_dir, cfg.image_size, cfg.timesteps, cfg.frames_by)
        check_out_dir(args.out, overwrite=args.overwrite, source=cfg.init and _run_dir_or_none(cfg.init),
                      inputs=[_dataset_folder(cfg.dataset, args.data_dir),
                              cfg.distill and _run_dir_or_none(cfg.distill)])
    aside = None
    if args.out:
        if world()[0] == 0 and Path(args.out).is_dir() and args.overwrite:
            aside = set_aside(Path(args.out))  # the old run stays whole until the new one is written
            if aside is not None:
                _log(f"the old contents of {args.out} are kept in {aside} until the new run is complete")
        _writable_dir(args.out)
    try:
        metrics = training_run.train(_train_config(args), out, data_dir=args.data_dir, progress=not args.quiet,
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


def cmd_demo(args) -> int:
    t0 = time.perf_counter()
    run = DEMO_RUN
    if args.train:
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
        training_run.train(cfg, run, data_dir=args.data_dir, progress=True, log=_log)
        drop_aside(aside)
    model, config = load_run(run)
    # the test split shipped inside the package comes first: the main job runs offline, with no dataset installed
    data_dir = args.data_dir if args.data_dir is not None else \
        (EMBEDDED if config["dataset"] == "fashion-mnist" else None)
    data = load_dataset(config["dataset"], "test", data_dir=data_dir, limit=args.limit,
                        info=dataset_info(config["dataset"], config))
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
