"""``seenn serve``: an inference service where early exit cuts latency under load, and which notices when its early
exits stop being safe.

- :mod:`.loop`: ``ServingLoop``, push-style continuous batching (``submit(x) -> Future``, answered at the exit).
- :mod:`.audit`: the live audit, an anytime-valid sequential test of the disagreement rate of a random share of
  requests also run to full T against the run's certified false-exit bound.
- :mod:`.app`: the HTTP endpoints (Starlette, served by uvicorn), decoding, Prometheus metrics.

Entry point: :func:`make_service` (what the CLI runs; tests and benchmarks build the app the same way).
"""

from __future__ import annotations

import gc
import socket
from dataclasses import dataclass

from ..analysis.audit import Audit, audit_bound, audit_stream
from ..data import dataset_info
from ..errors import ConfigError
from ..io.schema import bounded
from ..runs.store import load_run
from ..runtime.inference import inference_model
from .app import BODY_SECONDS, MAX_BODY, Metrics, build_app
from .loop import QueueFull, ServingLoop

__all__ = ["Audit", "QueueFull", "ServingLoop", "Service", "audit_bound", "audit_stream", "make_service",
           "run_server"]


DRAIN_SECONDS = 10  # SIGTERM: requests still unanswered this long after it are dropped (a stalled upload)
MAX_CONNECTIONS = 1024  # open connections at once; more are answered 503 at once
MAX_HEADER_BYTES = 64 * 1024  # request line and headers (the h11 parser; httptools has its own 80 KiB bound)
HEADER_SECONDS = 10.0  # a connection that has not sent a whole request line and headers this long after it opened
# (or after its last answer) is closed: clients that never finish their headers do not hold connections


def bind(host: str, port: int):
    """The listening socket, bound before the service says it serves: a port in use or an address this machine
    does not have is one line (``ConfigError``), not uvicorn's exit 3 after a "serving on" line."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def run_server(app, host: str, port: int, sock=None) -> None:
    """uvicorn, with one change: after a graceful shutdown on SIGTERM / SIGINT (stop accepting, answer every request
    already accepted, for at most ``DRAIN_SECONDS``) the process returns normally (exit 0) instead of re-raising
    the signal. ``sock``: a socket from :func:`bind` (else one is bound here)."""
    import uvicorn

    sock = sock if sock is not None else bind(host, port)

    class _Server(uvicorn.Server):
        def capture_signals(self):
            server = super().capture_signals()
            self._captured_signals = []  # re-raised by uvicorn's own handler at its end: none
            return _forgetting(server, self)

    gc.collect()
    gc.freeze()  # the model and all loaded so far leave the collector's scans: shorter pauses under load
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=DRAIN_SECONDS, limit_concurrency=MAX_CONNECTIONS,
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES, http=header_deadline_protocol())
    _Server(config).run(sockets=[sock])


def header_deadline_protocol(seconds: float | None = None):
    """uvicorn's HTTP protocol (httptools where installed, else h11) with a deadline on the request line and
    headers: a connection that has not started a request ``seconds`` (default ``HEADER_SECONDS``) after it opened,
    or after its last answer, is closed. A request whose body is slow is the app's to time out (408)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    limit = HEADER_SECONDS if seconds is None else seconds

    class HeaderDeadline(AutoHTTPProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self):
            self.loop.call_later(limit, self._headers_late, self.cycle)

        def _headers_late(self, cycle):
            if self.cycle is cycle and not self.transport.is_closing():  # no request began since it was armed
                self.transport.close()

    return HeaderDeadline


class _forgetting:
    """uvicorn's signal capture, with the captured signals forgotten before it would re-raise them."""

    def __init__(self, inner, server):
        self.inner, self.server = inner, server

    def __enter__(self):
        return self.inner.__enter__()

    def __exit__(self, *exc):
        self.server._captured_signals = []
        return self.inner.__exit__(*exc)


@dataclass
class Service:
    app: object
    loop: ServingLoop
    rule_desc: dict
    audit: Audit | None
    precision: str


def make_service(run, *, rule, max_timesteps: int, precision: str = "fp32", max_batch: int = 64,
                 max_queue: int = 256, audit_fraction: float = 0.0, bound: float | None = None,
                 audit_alpha: float = 0.01, on_alarm: str = "report", max_body: int | None = None,
                 seed: int = 0, warmup: int = 8, body_seconds: float | None = None) -> Service:
    """The service for a run folder (or shipped run name) with an exit rule; nothing is started."""
    import torch


    model, config = load_run(run)
    if config.get("kind") == "ann":
        raise ConfigError(f"{run} is an ANN run: turn it into an SNN first (seenn convert)")

    bounded("batch_size", max_batch, "--max-batch")
    bounded("samples", max_queue, "--max-queue")
    if not 0.0 <= audit_fraction <= 1.0:
        raise ConfigError(f"--audit-fraction must be in [0, 1], got {audit_fraction}")
    if getattr(rule, "budget", None) is not None:
        raise ConfigError("seenn serve runs rules that decide after each step (confidence, entropy, learned, fixed)")
    info = dataset_info(config["dataset"], config)
    m = config["model"]
    events = (config.get("data") or {}).get("events")
    shape = ((events["frames"],) if events else ()) + (m["in_channels"], m["image_size"], m["image_size"])
    audit = None
    if audit_fraction > 0:
        try:
            audit = Audit(audit_bound(config, bound), audit_alpha)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    net = inference_model(model.eval(), precision)
    loop = ServingLoop(net, rule, max_timesteps, max_batch=max_batch, max_queue=max_queue, audit=audit,
                       audit_fraction=audit_fraction, on_alarm=on_alarm, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    warm = [torch.randn(shape, generator=gen) for _ in range(warmup)]
    desc = rule.describe()
    app = build_app(loop, shape=shape, info=info, rule_desc=desc, metrics=Metrics(max_timesteps), warmup=warm,
                    max_body=max_body or MAX_BODY, body_seconds=body_seconds or BODY_SECONDS)
    return Service(app, loop, desc, audit, getattr(net, "precision", "fp32"))
