"""Conversion of run folders and users' files: ``convert_run`` (a ``seenn train --ann`` run), ``convert_file`` (a
user's own ANN from a Python file), with bias correction and the calibration images."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._version import __version__
from ..data import dataset_info, load_dataset
from ..data.sources import record_pipeline
from ..interop.base import input_affine
from ..interop.load import build_from_file, input_record, load_weights
from ..interop.trust import file_digest
from ..io.files import read_json
from ..io.schema import bounded
from ..nn.qcfs import QCFS
from ..runs.store import METRICS, load_run, resolve_run, save_run, weights_digest
from .bias import correct_biases
from .graph import ConversionError
from .snn import convert


def _check_corrections(timesteps: int, bias_correction: int | None, potential_correction: bool,
                       calibration_samples: int) -> None:
    """The horizon and the correction settings of a conversion, checked before any work."""
    bounded("timesteps", timesteps, "--timesteps")
    bounded("samples", calibration_samples, "--calibration-samples")
    if bias_correction is not None:
        bounded("timesteps", bias_correction, "--bias-correction")
        if bias_correction > timesteps:
            raise ConversionError(f"--bias-correction {bias_correction} is more than the run's {timesteps} timesteps")
    elif potential_correction:
        raise ConversionError("--potential-correction goes with --bias-correction STEPS (the steps it fits)")


def convert_run(ann_run, out_dir, *, timesteps: int = 64, bias_correction: int | None = None,
                calibration_samples: int = 256, data_dir=None, seed: int = 0, potential_correction: bool = False) -> dict:
    """Convert a QCFS ANN run (``seenn train --ann``) into an SNN run directory with ``timesteps`` max timesteps.
    With ``bias_correction`` (a number of steps), the biases are then corrected (:mod:`seenn.conversion.bias`) on
    ``calibration_samples`` images drawn (``seed``) from the run's training split, never its validation split;
    with ``potential_correction`` also each neuron's initial potentials, per channel. Returns the new run's config."""
    _check_corrections(timesteps, bias_correction, potential_correction, calibration_samples)
    src = resolve_run(ann_run)
    ann, config = load_run(src)
    if config.get("kind") != "ann":
        raise ConversionError(f"{ann_run} is a spiking run, not an ANN (train one with seenn train --ann)")
    m = config["model"]
    snn, model_cfg = convert(ann, input_shape=(m["in_channels"], m["image_size"], m["image_size"]))
    corrected = None
    if bias_correction is not None:
        images = calibration_images(config, calibration_samples, data_dir, seed)
        corrected = correct_biases(ann, snn, model_cfg, images, bias_correction, potential=potential_correction)
        corrected.update(split="train", seed=seed)
    ann_metrics = read_json(src / METRICS) if (src / METRICS).is_file() else {}
    thresholds = [s["threshold"] for s in model_cfg["layers"] if s["type"] == "neuron"]
    out = {"seenn_version": __version__, "dataset": config["dataset"], "max_timesteps": timesteps,
           "model": model_cfg, "training": config.get("training", {}),
           "converted_from": {"run": Path(src).name, "sha256": weights_digest(src), "model": m,
                              "neuron": "IF, reset by subtraction, v0 = theta/2"
                              + (", then corrected per channel" if potential_correction else ""),
                              "thresholds": thresholds,
                              "clip_values": [q.threshold.item() for q in ann.modules() if isinstance(q, QCFS)]}}
    if corrected is not None:
        out["converted_from"]["bias_correction"] = corrected
    if "data" in config:  # a prefixed dataset's recorded pipeline travels with the run
        out["data"] = config["data"]
    save_run(Path(out_dir), snn, out, {"ann_val_accuracy": ann_metrics.get("best_val_accuracy")})
    return out


def input_layer(record: dict) -> nn.Conv2d:
    """The user's input scaling as a first layer: the per-channel affine map of
    :func:`seenn.interop.base.input_affine` as a depthwise 1x1 convolution; the converter treats it as any
    convolution of the stem."""
    gain, shift = input_affine(record)
    conv = nn.Conv2d(len(gain), len(gain), 1, groups=len(gain))
    with torch.no_grad():
        conv.weight.copy_(gain.view(-1, 1, 1, 1))
        conv.bias.copy_(shift)
    return conv


def convert_file(source, out_dir, *, dataset: str, factory: str = "build", weights=None, timesteps: int = 64,
                 input: dict | None = None, calibration_samples: int = 256, percentile: float = 99.9,
                 bias_correction: int | None = None, potential_correction: bool = False, data_dir=None,
                 seed: int = 0, val_size: int = 5000) -> dict:
    """Convert a user's own ANN into an SNN run directory: ``factory()`` from the Python file ``source`` (run once,
    here, because the user asked: the SNN run holds only seenn layers and never runs the file), ``weights`` from
    safetensors or a ``weights_only`` state dict, the layers found by tracing its forward (never by attribute
    names). ``input``: the input it was trained on (default seenn's normalised images of ``dataset``); ReLU
    thresholds (and ``bias_correction``) from ``calibration_samples`` training images of ``dataset``. Returns the
    new run's config."""
    _check_corrections(timesteps, bias_correction, potential_correction, calibration_samples)
    info = dataset_info(dataset)
    record = input or input_record("normalized", info)
    ann, _ = build_from_file(source, factory)
    if weights is not None:
        load_weights(ann, weights, factory)
    if record["scale"] != "normalized":
        ann = nn.Sequential(input_layer(record), ann)
    config = {"dataset": dataset, "training": {"val_size": val_size}}
    images = calibration_images(config, calibration_samples, data_dir, seed)
    snn, model_cfg = convert(ann, input_shape=(info.channels, info.image_size, info.image_size),
                             calibration=images, percentile=percentile)
    corrected = None
    if bias_correction is not None:
        corrected = correct_biases(ann, snn, model_cfg, images, bias_correction, potential=potential_correction)
        corrected.update(split="train", seed=seed)
    source = Path(source).resolve()
    out = {"seenn_version": __version__, "dataset": dataset, "max_timesteps": timesteps, "model": model_cfg,
           "training": {"val_size": val_size},
           "converted_from": {"source": str(source), "sha256": file_digest(source), "factory": factory,
                              "weights": str(Path(weights).resolve()) if weights is not None else None,
                              "input": record, "calibration_samples": calibration_samples, "percentile": percentile,
                              "neuron": "IF, reset by subtraction, v0 = theta/2",
                              "thresholds": [s["threshold"] for s in model_cfg["layers"] if s["type"] == "neuron"]}}
    if corrected is not None:
        out["converted_from"]["bias_correction"] = corrected

    record_pipeline(out, info)  # an imagefolder: dataset's pipeline travels with the run
    save_run(Path(out_dir), snn, out)
    return out


def calibration_images(config: dict, samples: int, data_dir, seed: int) -> torch.Tensor:
    """``samples`` normalised images drawn at random from the run's training split (its validation split held out
    as at training)."""

    data = load_dataset(config["dataset"], "train", data_dir=data_dir, info=dataset_info(config["dataset"], config),
                        val_size=config.get("training", {}).get("val_size", 5000))
    if getattr(data, "time_varying", False):
        raise ConversionError("bias correction reads still images; this run's dataset is an event stream")
    pick = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))[:samples]
    return data.normalize(data.images[pick])
