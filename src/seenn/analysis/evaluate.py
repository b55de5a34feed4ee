"""Evaluation: accuracy per timestep, the oracle and the ideal limit (post hoc, from one full-T pass), and an
exit rule run for real by the early-exit runner."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset, atomic_write_bytes
from ..exits import Confidence, ExitRule, make_rule
from ..io.schema import bounded, memory_check
from ..models import SpikingNetwork
from ..runtime.distributed import world
from ..runtime.engine import EarlyExitRunner, ExitResult, posthoc_exits, score_matrix
from ..runtime.engine import step_logits as full_step_logits
from ..runtime.inference import inference_model
from .metrics import accuracy_per_timestep, correct_per_timestep, exit_summary, ideal_timesteps, oracle_timesteps

SWEEP_THRESHOLDS = {
    "confidence": (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999),
    "entropy": (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999),
}


class Evaluation:
    """One model on one dataset split: the full-T step logits, computed once, and what follows from them."""

    def __init__(self, model: SpikingNetwork, data: Dataset, max_timesteps: int, *, batch_size: int = 500,
                 device: str = "cpu", progress: bool = False, precision: str = "fp32"):

        bounded("timesteps", max_timesteps, "max_timesteps")
        k = data.info.num_classes
        memory_check(4.0 * len(data) * max_timesteps * k * 3, f"evaluating {len(data)} samples x {max_timesteps} "
                     f"timesteps x {k} classes", "evaluate fewer samples (--limit) or fewer timesteps")
        # one inference model (BN folded) for the full-T pass and the runner, so both see the same arithmetic
        self.model = inference_model(model.to(device), precision)
        self.precision = getattr(self.model, "precision", "fp32")
        self.data, self.max_timesteps = data, max_timesteps
        self.batch_size, self.device = batch_size, device
        self.labels = data.labels
        # under torchrun each process computes its shard [rank::world] and all of them get every row back
        self.rank, self.world = world()
        self._local = data if self.world == 1 else data.shard(self.rank, self.world)
        self.step_logits = self._gather(full_step_logits(self.model, self._local, max_timesteps, batch_size, device,
                                                         progress and self.rank == 0))
        self.correct = correct_per_timestep(self.step_logits, self.labels)
        self.full_prediction = self.step_logits.sum(dim=1).argmax(dim=1)

    def header(self) -> dict:
        oracle = oracle_timesteps(self.correct)
        extra = {}
        if hasattr(self.data, "sensor_ms"):  # recordings: the sensor time the steps cover
            full = torch.full((len(self.data),), self.max_timesteps)
            extra["sensor_ms_full"] = self.data.sensor_ms(full).double().mean().item()
            extra["oracle_sensor_ms"] = self.data.sensor_ms(oracle).double().mean().item()
            extra["ideal_sensor_ms"] = self.data.sensor_ms(ideal_timesteps(self.correct)).double().mean().item()
            extra["emulated"] = self.data.emulated
        return {
            "dataset": self.data.info.name,
            "split": self.data.split,
            "samples": len(self.data),
            "max_timesteps": self.max_timesteps,
            "precision": self.precision,
            "accuracy_per_timestep": accuracy_per_timestep(self.step_logits, self.labels),
            "oracle_avg_timesteps": oracle.double().mean().item(),
            "oracle_accuracy": self.correct.any(dim=1).double().mean().item(),
            "ideal_avg_timesteps": ideal_timesteps(self.correct).double().mean().item(),
            **extra,
        }

    def run(self, rule: ExitRule, batch_size: int | None = None) -> ExitResult:
        """The rule run for real: step by step, exited samples dropped from the batch."""
        runner = EarlyExitRunner(self.model, rule, self.max_timesteps, self.device)
        r = runner.predict_dataset(self._local, batch_size or self.batch_size)
        return ExitResult(*(self._gather(getattr(r, f)) for f in ("prediction", "exit_timestep", "score", "logits")))

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        """The rows of every process's shard, back in dataset order."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, local.cpu())
        out = torch.empty((len(self.data), *local.shape[1:]), dtype=local.dtype)
        for r, part in enumerate(parts):
            out[r::self.world] = part
        return out

    def oracle(self) -> ExitResult:
        t = oracle_timesteps(self.correct)
        rows = torch.arange(len(t))
        summed = self.step_logits.cumsum(dim=1)[rows, t - 1]
        return ExitResult(summed.argmax(dim=1), t, torch.ones(len(t)), summed)

    def summarize(self, rule_desc: dict, result: ExitResult) -> dict:
        out = {**rule_desc, **exit_summary(result.prediction, result.exit_timestep, self.labels,
                                           self.max_timesteps, self.full_prediction)}
        if hasattr(self.data, "sensor_ms"):  # recordings: how much of each one was read before the answer
            out["avg_sensor_ms"] = self.data.sensor_ms(result.exit_timestep).double().mean().item()
        return out

    def sweep(self, rule_name: str, thresholds=None) -> list[dict]:
        """Accuracy and average timesteps over a grid of thresholds (post hoc, from the full-T logits)."""
        thresholds = thresholds or SWEEP_THRESHOLDS[rule_name]
        scores = score_matrix(self.step_logits, make_rule(rule_name, threshold=0.5))
        rows = []
        for th in thresholds:
            rule = make_rule(rule_name, threshold=th)
            res = posthoc_exits(self.step_logits, rule, scores)
            rows.append(self.summarize(rule.describe(), res))
        return rows

    def dump(self, path: Path, rule: ExitRule | None, result: ExitResult) -> None:
        scores = score_matrix(self.step_logits, rule if rule is not None else Confidence(0.5))
        buf = io.BytesIO()
        np.savez(buf, step_logits=self.step_logits.numpy(), labels=self.labels.numpy(),
                 prediction=result.prediction.numpy(), exit_timestep=result.exit_timestep.numpy(),
                 score=scores.numpy())
        atomic_write_bytes(Path(path), buf.getvalue())

