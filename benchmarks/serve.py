"""seenn serve under load, loopback only: open-loop Poisson arrivals at increasing rates, p50 / p99 latency, and the
highest rate whose p99 stays under a budget, for the early-exit service and the same service at full T, in one run.

    python benchmarks/serve.py [--run fashion-mnist-convnet-t4] [--budget-ms 50] [--seconds 5] [--rounds 2]

Each service is a `seenn serve` process of its own (its model thread and HTTP handling on the same 2 cores as
this load generator: an aiohttp client, whose C parser keeps the generator's own share of the cores small).
Bounded: every rate runs `--seconds`, each sweep stops two rates past the budget, and the script stops by itself.
Writes the section "serve" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
from _common import ROOT, machine, publish, today

RATES = (25, 50, 75, 100, 125, 150, 175, 200, 225, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 800, 1000)


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
    import aiohttp

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    gaps = rng.exponential(1.0 / rate, n)
    lat, codes, steps = [], [], []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024), timeout=timeout) as client:
        async def one(i):
            t0 = time.perf_counter()
            try:
                async with client.post(url, data=bodies[i % len(bodies)],
                                       headers={"content-type": "application/x-npy"}) as r:
                    body = await r.json() if r.status == 200 else None
                    codes.append(r.status)
                    steps.append(body.get("exit_timestep", 0) if body else 0)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                codes.append(None)
            lat.append(time.perf_counter() - t0)

        tasks = []
        start = due = time.perf_counter()
        for i in range(n):
            due += gaps[i]
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    ok = [l for l, c in zip(lat, codes) if c == 200]
    return {"rate": rate, "sent": n, "ok": len(ok), "achieved": len(ok) / wall, "latencies": ok,
            "p50_ms": float(np.percentile(ok, 50) * 1000) if ok else None,
            "p99_ms": float(np.percentile(ok, 99) * 1000) if ok else None,
            "avg_steps": float(np.mean([s for s in steps if s])) if any(steps) else None}


def _serve(run: str, extra: list[str]):
    import urllib.error
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "seenn", "serve", run, "--port", str(port), "--audit-fraction", "0",
                             "--max-queue", "4096", *extra], stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=dict(os.environ))
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, f"http://127.0.0.1:{port}/v1/predict"
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the service never became ready")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="fashion-mnist-convnet-t4")
    p.add_argument("--budget-ms", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2, help="sweeps of each service, alternating")
    args = p.parse_args()
    bodies = _bodies(2000)
    modes = {"early exit (calibrated confidence)": [], "full T (--exit fixed)": ["--exit", "fixed", "--timesteps", "4"]}

    def ok(r):
        return r["p99_ms"] is not None and r["p99_ms"] <= args.budget_ms and r["ok"] >= 0.99 * r["sent"]

    def sweep(name, extra):
        """One service at rising rates until two in a row fail the budget (or one is far past it)."""
        proc, url = _serve(args.run, extra)
        rows = []
        try:
            for rate in RATES:
                r = asyncio.run(_load(url, bodies, rate, args.seconds, seed=int(rate)))
                rows.append(r)
                print(name, {k: v for k, v in r.items() if k != "latencies"}, flush=True)
                if not ok(r) and (len(rows) > 1 and not ok(rows[-2]) or r["p99_ms"] is None
                                  or r["p99_ms"] > 4 * args.budget_ms):
                    break
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        return rows

    def pooled(rounds):
        """Per offered rate, every round's probes together: answered rate, p50 / p99 over all their latencies."""
        out = []
        for rate in sorted({r["rate"] for rows in rounds for r in rows}):
            probes = [r for rows in rounds for r in rows if r["rate"] == rate]
            lat = np.concatenate([r["latencies"] for r in probes]) if any(r["latencies"] for r in probes) else None
            steps = [r["avg_steps"] for r in probes if r["avg_steps"]]
            out.append({"rate": rate, "rounds": len(probes), "sent": sum(r["sent"] for r in probes),
                        "ok": sum(r["ok"] for r in probes), "achieved": float(np.mean([r["achieved"] for r in probes])),
                        "p50_ms": float(np.percentile(lat, 50) * 1000) if lat is not None else None,
                        "p99_ms": float(np.percentile(lat, 99) * 1000) if lat is not None else None,
                        "avg_steps": float(np.mean(steps)) if steps else None})
        return out

    def sustainable(rows):
        """The answered rate at the highest offered rate within budget, every lower one within budget too."""
        best = 0.0
        for r in rows:
            if not ok(r):
                break
            best = r["achieved"]
        return best

    gc.collect()
    gc.freeze()  # the generator's own collections out of its latency figures
    rounds = {name: [] for name in modes}
    for _ in range(args.rounds):  # alternating, each on a fresh service
        for name, extra in modes.items():
            rounds[name].append(sweep(name, extra))
    results = {name: pooled(v) for name, v in rounds.items()}

    lines = ["## seenn serve under load", "",
             f"{today()}, `python benchmarks/serve.py --run {args.run} --budget-ms {args.budget_ms:g} --seconds "
             f"{args.seconds:g} --rounds {args.rounds}`, {machine()}; server and load generator on the same machine "
             "(loopback).", "",
             f"Open-loop Poisson arrivals of single-image `.npy` requests, {args.seconds:g} s per rate, rising until "
             f"two rates in a row pass a p99 of {args.budget_ms:g} ms. The two services alternate, {args.rounds} "
             "rounds, each on a fresh process; the table pools each rate's rounds (p50 / p99 over all their "
             "latencies, answered rate averaged). 'sustainable' is the answered rate at the highest offered rate "
             "whose pooled p99 is within budget with every request answered, every lower rate within too. Load "
             "generator: aiohttp; server: uvicorn with httptools and uvloop (the `serve` extra).", "",
             "| service | offered req/s | rounds | answered req/s | p50 ms | p99 ms | avg exit step |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for r in rows:
            lines.append(f"| {name} | {r['rate']:g} | {r['rounds']} | {r['achieved']:.0f} | {r['p50_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['avg_steps']:.2f} |" if r["p50_ms"] is not None else
                         f"| {name} | {r['rate']:g} | {r['rounds']} | 0 | - | - | - |")
    early, full = (sustainable(v) for v in results.values())
    lines += ["", f"Sustainable at p99 <= {args.budget_ms:g} ms: early exit {early:.0f} req/s, full T {full:.0f} "
                  f"req/s: **{early / full:.2f}x**." if full else f"Sustainable: early exit {early:.0f} req/s, full T none."]
    publish("serve", lines)


if __name__ == "__main__":
    main()
