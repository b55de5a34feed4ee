"""Training any seenn network on the user's own data: :func:`fit` (``seenn.fit``).

``fit(model, train_data, timesteps=4, ...)`` trains a :class:`~seenn.models.SpikingNetwork` (a registry model, a
converted one, one the user built) on any iterable of ``(x, y)`` batches, a PyTorch ``DataLoader`` included, with
TET (the loss of every step's own logits, Deng et al. 2022) or the mean-logit cross-entropy, SGD with momentum and
a cosine or linear-decay schedule, and optional validation at full T after each epoch. It holds no files: ``seenn
train`` (:mod:`seenn.training.run`) is built on it and adds datasets by name, augmentation, recipes, resumable run
folders and the rest through its hooks.
"""

from __future__ import annotations

from .fit import FitResult, fit

__all__ = ["FitResult", "fit"]
