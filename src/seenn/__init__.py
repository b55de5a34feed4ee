"""seenn: spiking neural networks that stop as soon as they know (temporal early exit, SEENN).

Everything a notebook needs is a name here::

    import seenn

    run = seenn.load_run("fashion-mnist-convnet-t4")         # a shipped run, or a run folder
    result = run.runner().predict(x)                          # x: [B, C, H, W] normalised images
    result.prediction, result.exit_timestep                   # per sample: the class, the steps it ran

    net = seenn.build_model("convnet", in_channels=1, image_size=28, num_classes=10)
    seenn.fit(net, train_loader, timesteps=4, epochs=3)      # any iterable of (x, y): a DataLoader
    cal = seenn.calibrate(net, val_loader, timesteps=4, max_accuracy_drop=0.01)
    seenn.EarlyExitRunner(net, cal.rule(), 4).predict(x)

    snn, model_config = seenn.convert(ann, input_shape=(3, 32, 32), calibration=x)   # your ANN, traced
    peer = seenn.adapt(spikingjelly_net)                      # another framework's SNN, stepped live

Tensor layouts, one name each, kept by every public function:

- ``images`` ``[B, C, H, W]``: normalised, ``(x / 255 - mean) / std``; the same input at every step.
- ``frames`` ``[B, T, C, H, W]``: a time-varying input (event counts), batch first; step t reads frame t.
- ``time-major logits`` ``[T, B, K]``: what a network's ``model(x, timesteps)`` returns, each step's own logits.
- ``sample-major logits`` ``[N, T, K]``: what ``step_logits``, ``calibrate`` and the metrics read.

Names are imported on first use, so ``import seenn`` itself is instant.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# public name -> (module, attribute)
_NAMES = {
    "SpikingNetwork": ("seenn.models.base", "SpikingNetwork"),
    "LIF": ("seenn.nn.neuron", "LIF"),
    "IF": ("seenn.nn.neuron", "IF"),
    "build_model": ("seenn.models", "build_model"),
    "list_models": ("seenn.models", "list_models"),
    "ExitRule": ("seenn.exits", "ExitRule"),
    "Confidence": ("seenn.exits", "Confidence"),
    "Entropy": ("seenn.exits", "Entropy"),
    "Fixed": ("seenn.exits", "Fixed"),
    "EarlyExitRunner": ("seenn.runtime.engine", "EarlyExitRunner"),
    "ExitResult": ("seenn.runtime.engine", "ExitResult"),
    "posthoc_exits": ("seenn.runtime.engine", "posthoc_exits"),
    "step_logits": ("seenn.runtime.engine", "step_logits"),
    "tet_loss": ("seenn.training.losses", "tet_loss"),
    "fit": ("seenn.training", "fit"),
    "FitResult": ("seenn.training", "FitResult"),
    "calibrate": ("seenn.analysis.calibration", "calibrate_network"),
    "Calibration": ("seenn.analysis.calibration", "Calibration"),
    "convert": ("seenn.conversion", "convert"),
    "adapt": ("seenn.interop", "adapt"),
    "load_run": ("seenn.runs", "load_run"),
    "save_run": ("seenn.runs", "save_run"),
    "Run": ("seenn.runs", "Run"),
    "load_dataset": ("seenn.data", "load_dataset"),
    "SeennError": ("seenn.errors", "SeennError"),
}

__all__ = sorted(_NAMES) + ["__version__"]


def __getattr__(name: str):
    try:
        module, attr = _NAMES[name]
    except KeyError:
        raise AttributeError(f"module 'seenn' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
