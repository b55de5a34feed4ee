"""seenn serve under load, loopback only: open-loop Poisson arrivals at increasing rates, p50 / p99 latency, and the
highest rate whose p99 stays under a budget, for the early-exit service and the same service at full T, in one run.

    python benchmarks/serve.py [--run fashion-mnist-convnet-t4] [--budget-ms 50] [--seconds 5]

Each service is a `seenn serve` process of its own (its model thread and HTTP handling on the same 2 cores as
this load generator: an async httpx client). Bounded: every rate runs `--seconds` and the script stops by itself.
Writes the section "serve" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
from _common import ROOT, machine, publish, today

RATES = (25, 50, 100, 150, 200, 300, 400, 600, 800)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bodies(n: int):
    from seenn.data import load_dataset

    test = load_dataset("fashion-mnist", "test", data_dir="embedded", limit=n)
    x = test.normalize(test.images).numpy()
    out = []
    for i in range(n):
        buf = io.BytesIO()
        np.save(buf, x[i])
        out.append(buf.getvalue())
    return out


async def _load(url: str, bodies, rate: float, seconds: float, seed: int):
    import httpx

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    gaps = rng.exponential(1.0 / rate, n)
    lat, codes = [], []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=512)) as client:
        async def one(i):
            t0 = time.perf_counter()
            try:
                r = await client.post(url, content=bodies[i % len(bodies)],
                                      headers={"content-type": "application/x-npy"})
                codes.append(r.status_code)
                steps.append(r.json().get("exit_timestep", 0) if r.status_code == 200 else 0)
            except httpx.HTTPError:
                codes.append(None)
            lat.append(time.perf_counter() - t0)

        steps = []
        tasks = []
        start = time.perf_counter()
        due = start
        for i in range(n):
            due += gaps[i]
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    ok = [l for l, c in zip(lat, codes) if c == 200]
    return {"rate": rate, "sent": n, "ok": len(ok), "achieved": len(ok) / wall,
            "p50_ms": float(np.percentile(ok, 50) * 1000) if ok else None,
            "p99_ms": float(np.percentile(ok, 99) * 1000) if ok else None,
            "avg_steps": float(np.mean([s for s in steps if s])) if steps else None}


def _serve(run: str, extra: list[str]):
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "seenn", "serve", run, "--port", str(port), "--audit-fraction", "0",
                             "--max-queue", "4096", *extra], stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=dict(os.environ))
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1/predict"
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the service never became ready")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="fashion-mnist-convnet-t4")
    p.add_argument("--budget-ms", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    bodies = _bodies(2000)
    modes = {"early exit (calibrated confidence)": [], "full T (--exit fixed)": ["--exit", "fixed", "--timesteps", "4"]}
    results = {}
    for name, extra in modes.items():
        proc, url = _serve(args.run, extra)
        try:
            rows = []
            for rate in RATES:
                r = asyncio.run(_load(url, bodies, rate, args.seconds, seed=int(rate)))
                rows.append(r)
                print(name, r, flush=True)
                if r["p99_ms"] is None or r["p99_ms"] > 4 * args.budget_ms or r["ok"] < 0.9 * r["sent"]:
                    break  # far past saturation: higher rates only queue
            results[name] = rows
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    def sustainable(rows):
        good = [r["achieved"] for r in rows if r["p99_ms"] is not None and r["p99_ms"] <= args.budget_ms
                and r["ok"] >= 0.99 * r["sent"]]
        return max(good) if good else 0.0

    lines = ["## seenn serve under load", "",
             f"{today()}, `python benchmarks/serve.py --run {args.run} --budget-ms {args.budget_ms:g} --seconds "
             f"{args.seconds:g}`, {machine()}; server and load generator on the same machine (loopback).", "",
             "Open-loop Poisson arrivals of single-image `.npy` requests; each rate runs "
             f"{args.seconds:g} s. 'sustainable' is the highest achieved rate with every request answered and p99 "
             f"latency within {args.budget_ms:g} ms.", "",
             "| service | offered req/s | answered req/s | p50 ms | p99 ms | avg exit step |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for r in rows:
            lines.append(f"| {name} | {r['rate']:g} | {r['achieved']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{r['avg_steps']:.2f} |" if r["p50_ms"] is not None else f"| {name} | {r['rate']:g} | 0 | - | - | - |")
    early, full = (sustainable(v) for v in results.values())
    lines += ["", f"Sustainable at p99 <= {args.budget_ms:g} ms: early exit {early:.0f} req/s, full T {full:.0f} req/s "
                  f"({early / full:.2f}x)." if full else f"Sustainable: early exit {early:.0f} req/s, full T none."]
    publish("serve", lines)


if __name__ == "__main__":
    main()
