"""The ``seenn`` command line: seenn export, import, convert, adapt and trust: networks in and out of seenn."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..conversion import convert_file, convert_run
from ..data import dataset_info, load_dataset
from ..data.sources import record_pipeline
from ..errors import ConfigError, SeennError
from ..interop import load_peer, peer_run_config
from ..interop.load import describe_input, input_record, scale_accuracy
from ..interop.nir import export_nir, import_nir
from ..interop.trust import trust, trust_store
from ..io.files import check_out_dir, staged_dir
from ..io.schema import bounded
from ..runs.store import copy_run, load_run, read_config, resolve_run, save_run
from .common import _dataset_folder, _log, _rule


def cmd_export(args) -> int:
    if args.format not in ("nir", "run"):
        raise ConfigError(f"unknown export format {args.format!r}; choose nir or run")
    if args.format == "run":
        given = [f for f, v in (("--threshold", args.threshold), ("--timesteps", args.timesteps), ("--dt", args.dt))
                 if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} describe a NIR graph; --format run copies the run as it is")
        copy_run(args.run, Path(args.out), weights=args.weights or "fp16", overwrite=args.overwrite)
        print(args.out)
        return 0
    if args.weights is not None:
        raise ConfigError("--weights is for --format run (a NIR graph stores its weights as float arrays)")
    model, config = load_run(args.run)
    if config.get("kind") == "ann":
        raise ConfigError(f"{args.run} is an ANN run: convert it first (seenn convert {args.run} --out DIR)")
    rule = _rule(args, config)
    if rule is not None and getattr(rule, "timesteps", 1) > config["max_timesteps"]:
        raise ConfigError(f"--timesteps {rule.timesteps} is more than the run's {config['max_timesteps']} timesteps")

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    check_out_dir(out.parent, overwrite=True, what="the folder of --out")
    export_nir(model, config, out, None if rule is None else rule.describe(), dt=args.dt, peer=args.peer)
    print(args.out)
    return 0


def cmd_import(args) -> int:
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
    record_pipeline(config, info)  # an imagefolder: or events: run records its pipeline
    with staged_dir(args.out, overwrite=args.overwrite) as stage:
        save_run(stage, model, config)
    print(args.out)
    return 0


def cmd_convert(args) -> int:
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
    record_pipeline(config, info)  # an imagefolder: or events: run records its pipeline
    with staged_dir(args.out, overwrite=args.overwrite) as stage:
        save_run(stage, net, config)

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


def cmd_trust(args) -> int:
    path, digest = trust(args.file)
    _log(f"trusted {path} (SHA-256 {digest}) in {trust_store()}: peer runs built by it may run it while it is "
         "unchanged")
    return 0
