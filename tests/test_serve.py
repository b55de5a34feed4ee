"""seenn serve: answers equal offline eval sample for sample, bad requests are 4xx and the service keeps serving, the
queue is bounded, the audit's sequential test, and SIGTERM loses no accepted request."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from starlette.testclient import TestClient  # noqa: E402

from seenn.data import load_dataset  # noqa: E402
from seenn.errors import DataError  # noqa: E402
from seenn.exits import Confidence  # noqa: E402
from seenn.runs.store import load_run  # noqa: E402
from seenn.runtime.engine import EarlyExitRunner  # noqa: E402
from seenn.serve import Audit, QueueFull, ServingLoop, audit_stream, make_service  # noqa: E402

RUN = "fashion-mnist-convnet-t4"
NPY = {"content-type": "application/x-npy"}


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a))
    return buf.getvalue()


@pytest.fixture(scope="module")
def images():
    return load_dataset("fashion-mnist", "test", data_dir="embedded", limit=300)


def _rule():
    model, cfg = load_run(RUN)
    return Confidence(cfg["exit"]["confidence"]["threshold"])


def test_answers_equal_offline_eval_sample_for_sample(images):
    rule = _rule()
    model, _ = load_run(RUN)
    offline = EarlyExitRunner(model, rule, 4).predict_dataset(images, 256)
    svc = make_service(RUN, rule=rule, max_timesteps=4, max_batch=32)
    x = images.normalize(images.images)
    with TestClient(svc.app) as c, ThreadPoolExecutor(16) as pool:  # concurrent: requests share the batch
        answers = list(pool.map(lambda i: c.post("/v1/predict", content=_npy(x[i].numpy()), headers=NPY),
                                range(len(images))))
        assert all(r.status_code == 200 for r in answers)
        got = [r.json() for r in answers]
        assert [g["prediction"] for g in got] == offline.prediction.tolist()
        assert [g["exit_timestep"] for g in got] == offline.exit_timestep.tolist()
        assert got[0]["label"] == images.info.class_names[got[0]["prediction"]]
        # a PNG of the raw pixels is decoded and normalised by the run's pipeline: the same answers
        from PIL import Image

        for i in range(5):
            b = io.BytesIO()
            Image.fromarray(images.images[i, 0].numpy()).save(b, format="PNG")
            r = c.post("/v1/predict", content=b.getvalue(), headers={"content-type": "image/png"}).json()
            assert (r["prediction"], r["exit_timestep"]) == (got[i]["prediction"], got[i]["exit_timestep"])
        metrics = c.get("/metrics").text
        assert 'seenn_requests_total{outcome="200"} 305.0' in metrics
        assert "seenn_exit_timestep_bucket" in metrics and "seenn_latency_seconds_bucket" in metrics


def test_bad_requests_are_4xx_and_the_service_keeps_serving(images):
    svc = make_service(RUN, rule=_rule(), max_timesteps=4, max_body=50_000)
    good = _npy(images.normalize(images.images[:1])[0].numpy())
    with TestClient(svc.app) as c:
        cases = [(b"junk", {"content-type": "image/png"}, 400, "not a readable PNG"),
                 (_npy(np.zeros((3, 28, 28), np.float32)), NPY, 400, "shape [1, 28, 28]"),
                 (_npy(np.full((1, 28, 28), np.nan, np.float32)), NPY, 400, "NaN"),
                 (_npy(np.zeros((1, 28, 28), np.int64)), NPY, 400, "uint8 pixels or floats"),
                 (b"\x93NUMPY garbage", NPY, 400, "not a .npy"),
                 (good, {"content-type": "text/plain"}, 415, "unsupported content type"),
                 (b"x" * 60_000, NPY, 413, "over 50000 bytes")]
        for body, headers, status, message in cases:
            r = c.post("/v1/predict", content=body, headers=headers)
            assert r.status_code == status and message in r.json()["error"], (status, r.text)
        # a pickled object array is refused, never unpickled
        r = c.post("/v1/predict", content=_npy(np.array([{"a": 1}], dtype=object)), headers=NPY)
        assert r.status_code == 400
        assert c.post("/v1/predict", content=good, headers=NPY).status_code == 200
        assert c.get("/v1/predict").status_code == 405 and c.post("/v2/predict").status_code == 404
        assert c.get("/healthz").json() == {"status": "ready"}


def test_an_image_bomb_is_a_400(monkeypatch):
    from PIL import Image

    from seenn.data import dataset_info
    from seenn.serve.app import decode

    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="PNG")
    info = dataset_info("fashion-mnist")
    assert decode(buf.getvalue(), "image/png", (1, 28, 28), info).shape == (1, 28, 28)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 784 pixels: over twice the limit, PIL refuses
    with pytest.raises(DataError, match="not a readable PNG"):
        decode(buf.getvalue(), "image/png", (1, 28, 28), info)


def test_npy_bodies_read_as_numpy_reads_them():
    from seenn.serve.app import load_npy

    arrays = [np.random.default_rng(0).random((1, 28, 28), dtype=np.float32), np.arange(12, dtype=np.uint8).reshape(3, 4),
              np.asfortranarray(np.random.default_rng(1).random((3, 5))), np.ones(()), np.zeros((2, 0), np.float32)]
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, a)
        for _ in range(2):  # parsed, then from the cache of headers
            got = load_npy(buf.getvalue())
            assert got.shape == a.shape and got.dtype == a.dtype and np.array_equal(got, a)
    body = _npy(np.ones((1, 28, 28), np.float32))
    for bad in (body[:-4], body[:20], b"\x93NUMPY", _npy(np.array([{"a": 1}], dtype=object))):
        with pytest.raises(ValueError):
            load_npy(bad)


def test_the_queue_is_bounded():
    model, _ = load_run(RUN)
    loop = ServingLoop(model.eval(), Confidence(0.9), 4, max_queue=2)  # not started: nothing leaves the queue
    x = torch.zeros(1, 28, 28)
    loop.submit(x), loop.submit(x)
    with pytest.raises(QueueFull):
        loop.submit(x)
    svc = make_service(RUN, rule=_rule(), max_timesteps=4)
    with TestClient(svc.app) as c:
        def full(_x):
            raise QueueFull("2 requests are waiting")

        svc.loop.submit = full
        r = c.post("/v1/predict", content=_npy(np.zeros((1, 28, 28), np.float32)), headers=NPY)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_the_audit_is_quiet_under_the_bound_and_alarms_above_it():
    rng = np.random.default_rng(0)
    quiet = Audit(0.01, alpha=0.01)
    for x in rng.random(50_000) < 0.008:  # a rate under the bound, for a long time
        quiet.update(bool(x))
    assert not quiet.alarm
    loud = Audit(0.01, alpha=0.01)
    for i, x in enumerate(rng.random(5_000) < 0.05):  # five times the bound
        if loud.update(bool(x)):
            break
    assert loud.alarm and loud.alarm_at == i + 1 and i < 1_000
    loud.reset()
    assert not loud.alarm and loud.observations == 0
    # false alarms over many quiet runs stay near alpha
    alarms = 0
    for s in range(200):
        a = Audit(0.05, alpha=0.05)
        for x in np.random.default_rng(s).random(2_000) < 0.05:
            a.update(bool(x))
        alarms += a.alarm
    assert alarms <= 20  # 5% of 200 is 10
    out = audit_stream([0, 1, 2, 3] * 50, [0, 1, 2, 0] * 50, 0.01, 1.0)
    assert out["audited"] == 200 and out["disagreements"] == 50 and out["alarm"]


def test_audited_requests_run_to_full_t_and_full_t_mode(images):
    rule = _rule()
    model, _ = load_run(RUN)
    with torch.no_grad():
        logits = model(images.normalize(images.images[:64]), 4).transpose(0, 1)
    full = logits.sum(1).argmax(1)
    svc = make_service(RUN, rule=rule, max_timesteps=4, audit_fraction=1.0, bound=0.001, audit_alpha=0.2,
                       on_alarm="full-t")
    x = images.normalize(images.images[:64])
    with TestClient(svc.app, client=("127.0.0.1", 50000)) as c:
        early = [c.post("/v1/predict", content=_npy(x[i].numpy()), headers=NPY).json() for i in range(64)]
        audit = svc.audit
        for _ in range(200):  # the last audited requests were answered at their exit and are still stepping
            if audit.observations == 64:
                break
            time.sleep(0.01)
        disagree = sum(int(e["prediction"] != int(f)) for e, f in zip(early, full))
        assert audit.observations == 64 and audit.disagreements == disagree
        if not audit.alarm:  # force the alarm: every later answer runs to full T
            while not audit.update(True):
                pass
        r = c.post("/v1/predict", content=_npy(x[0].numpy()), headers=NPY).json()
        assert r["exit_timestep"] == 4 and "note" in r
        assert "seenn_audit_alarm" in c.get("/metrics").text
        assert c.post("/v1/audit/reset").status_code == 200  # (from loopback)
        assert c.post("/v1/predict", content=_npy(x[0].numpy()), headers=NPY).json()["exit_timestep"] == \
            early[0]["exit_timestep"]


def test_a_small_queue_still_warms_up_and_serve_refuses_bad_settings(images, capsys):
    from seenn.cli import main

    svc = make_service(RUN, rule=_rule(), max_timesteps=4, max_queue=1)  # the warm-up used to overflow it
    with TestClient(svc.app) as c:
        assert c.get("/healthz").status_code == 200
        x = images.normalize(images.images[:1])
        assert c.post("/v1/predict", content=_npy(x[0].numpy()), headers=NPY).status_code == 200
        assert c.post("/v1/audit/reset").status_code == 403  # TestClient's client is no loopback address
    for argv in (["--host", ""], ["--exit", "fixed", "--timesteps", "99"], ["--max-timesteps", "99"]):
        assert main(["serve", RUN, *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _wait_ready(url: str) -> None:
    """Until the service answers /healthz with 200 (at most about 30 s)."""
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("the service never became ready")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_every_accepted_request(images):
    import httpx

    port = _free_port()
    env = dict(os.environ, SEENN_DATA="", HOME=os.environ.get("HOME", "/tmp"))
    proc = subprocess.Popen([sys.executable, "-m", "seenn", "serve", RUN, "--port", str(port), "--audit-fraction",
                             "0"], stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        x = images.normalize(images.images[:200])
        bodies = [_npy(x[i].numpy()) for i in range(200)]

        def send(i):
            if i == 60:
                proc.send_signal(signal.SIGTERM)
            try:
                r = httpx.post(f"{url}/v1/predict", content=bodies[i], headers=NPY, timeout=30)
                return r.status_code
            except httpx.HTTPError:
                return None  # refused: never accepted

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(send, range(200)))
        rc = proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, err
    answered = sum(c == 200 for c in codes)
    assert 40 <= answered < 200 and all(c in (200, None, 503) for c in codes)  # the signal came mid-burst
    assert f"stopped after answering {answered} requests" in err  # every accepted request answered, once


def test_eval_runs_the_audit_offline(capsys):
    import json

    from seenn.cli import main

    assert main(["eval", RUN, "--data-dir", "embedded", "--limit", "500", "--audit-fraction", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    a = out["audit"]
    assert a["audited"] == 500 and 0.004 < a["bound"] < 0.006 and a["requests"] == 500
    assert a["disagreements"] >= out["exit"]["false_exits"]  # every false exit is a disagreement
    assert main(["eval", RUN, "--data-dir", "embedded", "--limit", "50", "--audit-fraction", "0.5",
                 "--audit-bound", "0"]) == 2


def test_16_bit_grey_is_scaled_and_huge_images_are_refused_from_their_header():
    import time as _time

    import numpy as np
    from PIL import Image

    from seenn.data import dataset_info
    from seenn.data.imagefolder import MAX_PIXELS
    from seenn.serve.app import decode

    info = dataset_info("fashion-mnist")
    ramp = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 83)  # 0 .. 65,000
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")  # a 16-bit grey PNG
    x = decode(buf.getvalue(), "image/png", (1, 28, 28), info)
    mean, std = info.mean[0], info.std[0]
    pixels = (x[0] * std + mean) * 255
    expected = torch.from_numpy(np.rint(ramp / 257.0)).float()
    assert torch.allclose(pixels, expected, atol=0.01)  # scaled to 8 bits, not clipped to 0 / 255
    assert len(torch.unique(pixels.round())) > 200
    buf = io.BytesIO()
    Image.new("L", (MAX_PIXELS + 1, 1)).save(buf, format="PNG")
    t0 = _time.perf_counter()
    with pytest.raises(DataError, match="pixels"):
        decode(buf.getvalue(), "image/png", (1, 28, 28), info)
    assert _time.perf_counter() - t0 < 1.0  # from the header, nothing decoded


def test_npy_headers_and_values_are_checked():
    import numpy as np

    from seenn.data import dataset_info
    from seenn.serve.app import decode

    info = dataset_info("fashion-mnist")
    good = _npy(np.zeros((1, 28, 28), np.float32))
    assert decode(good, "application/x-npy", (1, 28, 28), info).shape == (1, 28, 28)
    for shape in ((-1, 28, 28), (2 ** 64, 28, 28), (2 ** 32, 2 ** 32, 1)):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
        with pytest.raises(DataError, match="shape|truncated"):
            decode(buf.getvalue() + bytes(3136), "application/x-npy", (1, 28, 28), info)
    with pytest.raises(DataError, match="NaN or Inf"):
        decode(_npy(np.full((1, 28, 28), 1e300)), "application/x-npy", (1, 28, 28), info)


def test_a_port_in_use_is_one_line(capsys):
    from seenn.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", RUN, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "cannot listen" in err and len(err.strip().splitlines()) == 1


def test_slow_headers_are_closed_and_a_stalled_body_is_a_408(images):
    """Connections that never finish their request line and headers are closed after the header deadline; a body
    that stops arriving is answered 408; the service answers the others meanwhile."""
    import threading

    import httpx
    import uvicorn

    from seenn.serve import bind, header_deadline_protocol

    svc = make_service(RUN, rule=_rule(), max_timesteps=4, warmup=1, body_seconds=0.5)
    port = _free_port()
    sock = bind("127.0.0.1", port)
    config = uvicorn.Config(svc.app, log_level="warning", access_log=False, http=header_deadline_protocol(0.5))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        slow = []
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            c.settimeout(5)
            slow.append(c)
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        for c in slow:
            assert c.recv(100) == b""  # closed by the server, well before the 5 s this waits
            c.close()
        body = _npy(images.normalize(images.images[:1])[0].numpy())
        c = socket.create_connection(("127.0.0.1", port))
        c.settimeout(5)
        c.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:20])  # the rest never comes
        answer = c.recv(4096)
        c.close()
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        r = httpx.post(f"{url}/v1/predict", content=body, headers=NPY, timeout=10)  # a whole request: answered
        assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
        svc.loop.stop()
