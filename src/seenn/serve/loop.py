"""Push-style continuous batching for a service: ``submit(x) -> Future``, answered the moment the sample exits.

One thread owns the model and steps one running batch. Between steps it takes the requests that arrived (up to
``max_batch`` rows in all): they join at the end of the batch with their membranes at rest, exactly as the
runner's :meth:`~seenn.runtime.engine.EarlyExitRunner.stream` does, so a request's answers equal the offline runner's. A
sample whose rule fires is answered at once and leaves the batch (and every membrane), so an easy image does not
wait for a hard one. An audited sample (a random ``audit_fraction`` of requests) is answered at its exit too but
keeps stepping to full T; its early and full-T predictions feed the :class:`~seenn.analysis.audit.Audit`. In
``full-t`` mode (``on_alarm="full-t"`` once the alarm is raised, until :meth:`reset_audit`) nobody exits early.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from ..analysis.audit import Audit
from ..runtime.engine import retain


class QueueFull(Exception):
    """More requests are waiting than ``max_queue``."""


@dataclass
class _Job:
    x: torch.Tensor  # [C, H, W] (or frames [T, C, H, W])
    future: Future
    audit: bool
    t0: float


class ServingLoop:
    def __init__(self, model, rule, max_timesteps: int, *, max_batch: int = 64, max_queue: int = 256,
                 audit: Audit | None = None, audit_fraction: float = 0.0, on_alarm: str = "report", seed: int = 0,
                 on_answer=None, on_audit=None):
        if on_alarm not in ("report", "full-t"):
            raise ValueError(f"on_alarm must be report or full-t, got {on_alarm!r}")
        self.model, self.rule, self.t_max = model, rule, int(max_timesteps)
        self.neurons = model.neurons()
        self.max_batch, self.max_queue = int(max_batch), int(max_queue)
        self.audit, self.audit_fraction, self.on_alarm = audit, float(audit_fraction), on_alarm
        self.on_answer, self.on_audit = on_answer, on_audit  # metric hooks: (result dict), (disagree, alarm)
        self._gen = torch.Generator().manual_seed(seed)
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0  # submitted, not yet in the batch
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="seenn-serve", daemon=True)
        self.running = 0  # rows in the batch
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ the caller's side

    def start(self) -> "ServingLoop":
        self._thread.start()
        return self

    def submit(self, x: torch.Tensor, audit: bool | None = None) -> Future:
        """Queue one sample; ``audit``: None draws whether it is audited, False never (the warm-up)."""
        fut: Future = Future()
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting (--max-queue {self.max_queue})")
            self._waiting += 1
        picked = audit is None and self.audit is not None and self.audit_fraction > 0 and \
            float(torch.rand((), generator=self._gen)) < self.audit_fraction
        self._queue.put(_Job(x, fut, picked, time.perf_counter()))
        return fut

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def full_t(self) -> bool:
        return self.on_alarm == "full-t" and self.audit is not None and self.audit.alarm

    def reset_audit(self) -> None:
        if self.audit is not None:
            self.audit.reset()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every request already submitted, then stop the thread."""
        self._stop.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the model's thread

    def _take(self, room: int, block: bool) -> list[_Job]:
        jobs = []
        try:
            if block:
                jobs.append(self._queue.get(timeout=0.05))
            while len(jobs) < room:
                jobs.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        if jobs:
            with self._lock:
                self._waiting -= len(jobs)
        return jobs

    def _serve(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        except BaseException as e:  # noqa: BLE001 - every waiting caller hears of it, the service reports it
            self.error = e
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                job.future.set_exception(e)
            raise

    def _loop(self) -> None:
        model, rule, t_max = self.model, self.rule, self.t_max
        jobs: list[_Job] = []
        encoded = summed = steps = early = audited = None
        frames = False
        for n in self.neurons:
            n.reset()
        while True:
            new = self._take(self.max_batch - len(jobs), block=not jobs)
            if not jobs and not new:
                if self._stop.is_set() and self._queue.empty():
                    break
                continue
            if new:
                x = torch.stack([j.x for j in new])
                if not jobs:
                    frames = x.dim() == 5
                fresh = x if frames else model.encode(x)
                k = len(new)
                flags = torch.tensor([j.audit for j in new], dtype=torch.bool)
                if not jobs:
                    encoded, steps, audited = fresh, torch.zeros(k, dtype=torch.long), flags
                    summed, early = None, torch.full((k,), -1, dtype=torch.long)
                else:  # they join at the end, at rest (the neurons hold state for the rows before them only)
                    encoded = torch.cat([encoded, fresh])
                    steps = torch.cat([steps, steps.new_zeros(k)])
                    summed = torch.cat([summed, summed.new_zeros(k, summed.shape[1])])
                    early = torch.cat([early, early.new_full((k,), -1)])
                    audited = torch.cat([audited, flags])
                jobs += new
            self.running = len(jobs)
            inp = model.encode(encoded[torch.arange(len(jobs)), steps]) if frames else encoded
            out = model.step(inp).float()
            summed = out if summed is None else summed + out
            steps += 1
            score = rule.score(summed, steps)
            last = steps >= t_max
            fire = last if self.full_t else (rule.exits(score, steps) | last)
            answer = fire & (early < 0)
            pred = summed.argmax(dim=1)
            if answer.any():
                rows = answer.nonzero().flatten()
                early[rows] = pred[rows]
                now = time.perf_counter()
                for i, p, st, sc in zip(rows.tolist(), pred[rows].tolist(), steps[rows].tolist(),
                                        score[rows].tolist()):
                    j = jobs[i]
                    result = {"prediction": p, "exit_timestep": st, "score": float(sc),
                              "latency_ms": (now - j.t0) * 1000.0, "audited": j.audit}
                    if self.on_answer is not None:
                        self.on_answer(result)
                    j.future.set_result(result)
            done = last | ((early >= 0) & ~audited)  # answered, or audited and at full T
            if self.audit is not None:
                checked = last & audited
                if checked.any():
                    for e, p in zip(early[checked].tolist(), pred[checked].tolist()):
                        disagree = e != p
                        alarm = self.audit.update(disagree)
                        if self.on_audit is not None:
                            self.on_audit(disagree, alarm)
            if not done.any():
                continue
            jobs = [j for j, d in zip(jobs, done.tolist()) if not d]
            encoded, summed, steps, early, audited = retain(self.neurons, ~done, encoded, summed, steps, early,
                                                            audited)
            self.running = len(jobs)

