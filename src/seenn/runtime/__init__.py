"""Running a network: the early-exit runner that stops stepping the samples that left
(:mod:`~seenn.runtime.engine`: ``EarlyExitRunner``, ``step_logits``, ``posthoc_exits``), the inference copy it
runs (:mod:`~seenn.runtime.inference`: BN folded, fast pools, packed convolutions, a precision from
:mod:`~seenn.runtime.precision`) and torchrun support (:mod:`~seenn.runtime.distributed`)."""

from __future__ import annotations

from .engine import EarlyExitRunner, ExitResult, posthoc_exits, step_logits
from .inference import inference_model

__all__ = ["EarlyExitRunner", "ExitResult", "inference_model", "posthoc_exits", "step_logits"]
