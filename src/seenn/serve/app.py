"""The HTTP side of ``seenn serve``: a Starlette app over a :class:`~seenn.serve.loop.ServingLoop`.

- ``POST /v1/predict``: one PNG / JPEG image (``image/png``, ``image/jpeg``: converted to the run's channels, resized
  to its size, normalised by its pipeline) or one ``.npy`` array (``application/x-npy``, never unpickled: uint8
  pixels ``[C, H, W]`` or ``[H, W]`` are normalised like an image; a float array is the model's input as ``seenn
  eval`` feeds it, already normalised; an event run takes frames ``[T, 2, H, W]``). Answers ``prediction``,
  ``label``, ``exit_timestep``, ``score``, ``rule``, ``latency_ms``.
- ``GET /healthz``: 200 once the model is loaded and warmed up (503 before).
- ``GET /metrics``: Prometheus text format (requests, latency and exit-step histograms, queue depth, the audit).
- ``POST /v1/audit/reset``: an operator's reset of the audit (and of ``--on-alarm full-t``); from loopback
  clients only (403 otherwise).

Every bad request is a 4xx with a one-line JSON ``error``; a full queue is 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import numpy as np
import torch

from ..data.imagefolder import as_8bit
from ..errors import DataError
from .loop import QueueFull, ServingLoop

MAX_BODY = 8 * 1024 * 1024  # bytes of one request body
BODY_SECONDS = 30.0  # a request body must arrive whole this long after its headers (a stalled upload gets 408)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (never the client's global one)."""

    def __init__(self, t_max: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("seenn_requests", "Requests by outcome", ["outcome"], registry=r)
        self.latency = Histogram("seenn_latency_seconds", "Time from arrival to answer",
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=r)
        self.exit_step = Histogram("seenn_exit_timestep", "Timestep each answer left at",
                                   buckets=tuple(range(1, t_max + 1)), registry=r)
        self.queue = Gauge("seenn_queue_depth", "Requests waiting to join the batch", registry=r)
        self.batch = Gauge("seenn_batch_rows", "Samples in the running batch", registry=r)
        self.audited = Counter("seenn_audit_requests", "Requests also run to full T", registry=r)
        self.disagreements = Counter("seenn_audit_disagreements", "Audited requests whose early answer differs "
                                                                  "from full T", registry=r)
        self.alarm = Gauge("seenn_audit_alarm", "1 once the live false-exit rate exceeds the certified bound "
                                                "(anytime-valid test)", registry=r)
        self.rate = Gauge("seenn_audit_disagreement_rate", "Disagreements per audited request", registry=r)
        self.bound = Gauge("seenn_audit_bound", "The certified false-exit bound the audit tests", registry=r)
        self.log_wealth = Gauge("seenn_audit_log_wealth", "The test's log wealth (alarm at log(1 / alpha))",
                                registry=r)

        self.ok = self.requests.labels(outcome="200")  # the hot path's child, bound once

    def answered(self, result: dict) -> None:
        self.latency.observe(result["latency_ms"] / 1000.0)
        self.exit_step.observe(result["exit_timestep"])


def decode(body: bytes, content_type: str, shape: tuple, info) -> torch.Tensor:
    """One request body as the model's input of ``shape`` (see the module docstring)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in ("image/png", "image/jpeg"):
        if len(shape) != 3:
            raise DataError("this run takes event frames: send them as application/x-npy [T, 2, H, W]")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(body)) as im:
                im = as_8bit(im, "L" if shape[0] == 1 else "RGB", "the image")  # bounded before decoding
                if im.size != (shape[2], shape[1]):
                    im = im.resize((shape[2], shape[1]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"the body is not a readable {kind.split('/')[1].upper()} image ({type(e).__name__})") \
                from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return _normalise(torch.from_numpy(arr.copy()), info)
    if kind in ("application/x-npy", "application/octet-stream"):
        try:
            arr = load_npy(body)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"the body is not a .npy array ({str(e).splitlines()[0] if str(e) else 'unreadable'})") \
                from None
        if arr.dtype == np.uint8:
            if arr.ndim == len(shape) - 1:
                arr = arr[None]
            _check_array(arr, shape)
            x = torch.from_numpy(np.array(arr, order="C"))
            return x.float() if len(shape) == 4 else _normalise(x, info)
        if arr.dtype.kind != "f":
            raise DataError(f"a .npy input must be uint8 pixels or floats, got {arr.dtype}")
        if arr.ndim == len(shape) - 1 and shape[0] == 1:
            arr = arr[None]
        if tuple(arr.shape) == tuple(shape):
            with np.errstate(over="ignore", invalid="ignore"):
                arr = np.array(arr, dtype=np.float32, order="C")  # float64 beyond float32's range becomes inf here
        _check_array(arr, shape)  # ... and is refused here
        return torch.from_numpy(arr)
    raise DataError(f"unsupported content type {content_type!r}: send image/png, image/jpeg or application/x-npy")


_NPY_HEADERS: dict[bytes, tuple] = {}  # header bytes -> (shape, fortran order, dtype), for the few a service sees


def load_npy(body: bytes) -> np.ndarray:
    """One ``.npy`` body, as ``np.load(..., allow_pickle=False)`` reads it, with the parse of its header cached: numpy
    parses every header with ``ast.literal_eval``, a quarter of a request's time on the event loop, and a service
    sees the same few headers again and again. The array is read-only (it views ``body``)."""
    fp = io.BytesIO(body)
    version = np.lib.format.read_magic(fp)
    if version not in ((1, 0), (2, 0)):
        return np.load(io.BytesIO(body), allow_pickle=False)
    start = fp.tell()
    size = int.from_bytes(body[start:start + (2 if version == (1, 0) else 4)], "little")
    header = body[start:start + (2 if version == (1, 0) else 4) + size]
    parsed = _NPY_HEADERS.get(header)
    if parsed is None:
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        parsed = read(fp)
        if parsed[2].hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        if len(_NPY_HEADERS) < 64:
            _NPY_HEADERS[header] = parsed
    shape, fortran, dtype = parsed
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise ValueError(f"the array header names an impossible shape {shape}")
    count = 1
    for d in shape:  # in Python integers: a header's 2^64-sized dimension cannot wrap around
        count *= d
    offset = start + len(header)
    if len(body) - offset < count * dtype.itemsize:
        raise ValueError(f"the array data is truncated: {len(body) - offset} bytes for {count} {dtype} values")
    arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


def _check_array(arr: np.ndarray, shape: tuple) -> None:
    """A decoded array has the run's input shape and only finite values (checked in numpy: cheaper than on a tensor,
    and on the request's own thread)."""
    if tuple(arr.shape) != tuple(shape):
        raise DataError(f"expected an input of shape {list(shape)}, got {list(arr.shape)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError("the input holds NaN or Inf values")


def _normalise(x: torch.Tensor, info) -> torch.Tensor:
    mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)
    return (x.float() / 255.0 - mean) / std


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_app(loop: ServingLoop, *, shape: tuple, info, rule_desc: dict, metrics: Metrics, warmup=None,
              max_body: int = MAX_BODY, body_seconds: float = BODY_SECONDS):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    names = list(info.class_names) if info.class_names else None
    state = {"ready": False, "served": 0}

    def error(status: int, message: str, **headers) -> tuple[int, dict, dict]:
        metrics.requests.labels(outcome=str(status)).inc()
        return status, {"error": message}, headers

    async def predict(headers: dict, receive) -> tuple[int, dict, dict]:
        """(status, JSON payload, extra headers) for one POST /v1/predict."""
        if not state["ready"]:
            return error(503, "the model is still warming up", **{"Retry-After": "1"})
        size = headers.get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > max_body):
            return error(413, f"the body is over {max_body} bytes")
        body = bytearray()
        deadline = asyncio.get_running_loop().time() + body_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                return error(408, f"the body did not arrive within {body_seconds:g} s", Connection="close")
            if message["type"] == "http.disconnect":
                return 499, {}, {}  # the client left: nothing to answer
            body += message.get("body", b"")
            if len(body) > max_body:
                return error(413, f"the body is over {max_body} bytes")
            if not message.get("more_body", False):
                break
        kind = headers.get(b"content-type", b"").decode("latin-1")
        try:
            if kind.startswith("image/"):  # decoding an image takes milliseconds: off the event loop, so /healthz and
                # the other requests never wait for it (a .npy body is a view: decoded in place, microseconds)
                x = await asyncio.get_running_loop().run_in_executor(None, decode, bytes(body), kind, shape, info)
            else:
                x = decode(bytes(body), kind, shape, info)
        except DataError as e:
            return error(415 if "content type" in str(e) else 400, str(e))
        try:
            fut = loop.submit(x)
        except QueueFull as e:
            return error(503, str(e), **{"Retry-After": "1"})
        metrics.queue.set(loop.waiting)
        result = await asyncio.wrap_future(fut)
        state["served"] += 1
        metrics.ok.inc()
        metrics.batch.set(loop.running)
        out = {"prediction": result["prediction"],
               "label": names[result["prediction"]] if names else None,
               "exit_timestep": result["exit_timestep"], "score": result["score"], "rule": rule_desc,
               "latency_ms": round(result["latency_ms"], 3)}
        if loop.full_t:
            out["note"] = "the audit's alarm is raised: every request runs to full T until POST /v1/audit/reset"
        return 200, out, {}

    async def predict_asgi(scope, receive, send) -> None:
        try:
            status, payload, extra = await predict(dict(scope["headers"]), receive)
        except Exception as e:  # noqa: BLE001 - the model's thread (or the service) failed: a 500 with its reason
            metrics.requests.labels(outcome="500").inc()
            status, payload, extra = 500, {"error": f"internal error: {type(e).__name__}: {e}"}, {}
        if status == 499:
            return
        body = json.dumps(payload, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()  # any name
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *((k.lower().encode(), v.encode()) for k, v in extra.items())]})
        await send({"type": "http.response.body", "body": body})

    async def wrong_method(request):
        return JSONResponse({"error": "POST an image or a .npy array to /v1/predict"}, status_code=405,
                            headers={"Allow": "POST"})

    async def healthz(request):
        if loop.error is not None:
            return JSONResponse({"status": "failed", "error": str(loop.error)}, status_code=500)
        if not state["ready"]:
            return JSONResponse({"status": "warming up"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def prom(request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.queue.set(loop.waiting)
        metrics.batch.set(loop.running)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def reset(request):
        host = request.client.host if request.client else ""
        if not _loopback(host):  # an operator's action: from the machine itself, never from the network
            return JSONResponse({"error": "the audit is reset from the serving machine itself (loopback) only"},
                                status_code=403)
        loop.reset_audit()
        metrics.alarm.set(0)
        return JSONResponse({"audit": "reset"})

    def audited(disagree: bool, alarm: bool) -> None:  # called on the model's thread
        metrics.audited.inc()
        metrics.disagreements.inc(int(disagree))
        metrics.alarm.set(int(alarm))
        metrics.rate.set(loop.audit.disagreements / max(1, loop.audit.observations))
        metrics.log_wealth.set(loop.audit.log_wealth)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loop.start()
        if warmup is not None:  # a few requests through the loop before the service says it is ready
            for w in warmup:  # one at a time: the warm-up never needs more than one place in the queue
                await asyncio.wrap_future(loop.submit(w, audit=False))
        loop.on_answer = metrics.answered  # the warm-up is not traffic: neither audited nor counted
        loop.on_audit = audited
        if loop.audit is not None:
            metrics.bound.set(loop.audit.bound)
        state["ready"] = True
        yield
        loop.stop()  # uvicorn has finished every accepted request; the loop has nothing left

    rest = Starlette(routes=[Route("/v1/predict", wrong_method), Route("/healthz", healthz), Route("/metrics", prom),
                             Route("/v1/audit/reset", reset, methods=["POST"])], lifespan=lifespan)
    rest.state.served = state
    return _App(predict_asgi, rest)


class _App:
    """The service's ASGI app: ``POST /v1/predict``, the hot path, straight to its handler (no router, middleware or
    request object: a third of the event loop's time per request); everything else (lifespan, the other endpoints,
    404 / 405) through the Starlette app."""

    def __init__(self, predict, rest):
        self.predict, self.rest = predict, rest
        self.state = rest.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/predict":
            await self.predict(scope, receive, send)
        else:
            await self.rest(scope, receive, send)
