"""The ``seenn`` command line: seenn eval, seenn bench, seenn serve."""

from __future__ import annotations

import time

import torch

from ..analysis.audit import audit_bound, audit_stream
from ..analysis.bench import benchmark
from ..analysis.evaluate import Evaluation
from ..errors import ConfigError
from ..exits import describe_text
from ..interop.load import describe_input
from ..runs.store import read_config, resolve_run
from ..runtime.distributed import finish, init_from_env
from ..runtime.engine import step_logits
from .common import _emit_json, _load, _load_with_rule, _log, _precision, _rule, _writable_file


def cmd_eval(args) -> int:
    rank, _ = init_from_env(args.device)  # under torchrun: each process evaluates its shard
    try:
        return _eval(args, rank)
    finally:
        finish()


def _eval(args, rank: int) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.dump:
        _writable_file(args.dump)
    model, config, data, max_t = _load(args, ann_ok=True)
    if max_t is None:
        return _eval_ann(args, model, data, rank)
    rule = _rule(args, config)
    if rule is not None and getattr(rule, "timesteps", 1) > max_t:
        raise ConfigError(f"--timesteps {rule.timesteps} is more than the max timesteps {max_t}")
    t0 = time.perf_counter()
    ev = Evaluation(model, data, max_t, batch_size=args.batch_size, device=args.device, progress=not args.json,
                    precision=_precision(args, config))
    result = ev.oracle() if rule is None else ev.run(rule)
    desc = {"rule": "oracle", "threshold": None} if rule is None else rule.describe()
    report = {**ev.header(), "exit": ev.summarize(desc, result)}
    if config["model"]["name"] == "peer":  # what the user's network is fed, and how its steps are read
        report["input"] = describe_input(config["model"].get("input"))
        report["readout"] = config["model"].get("readout") or "sum"
    if args.sweep:
        report["sweep"] = ev.sweep(args.exit if args.exit in ("confidence", "entropy") else "confidence")
    if args.audit_fraction:
        report["audit"] = audit_stream(result.prediction, ev.full_prediction, audit_bound(config, args.audit_bound),
                                       args.audit_fraction, alpha=args.audit_alpha)
    report["seconds"] = time.perf_counter() - t0
    if rank != 0:  # only rank 0 writes and prints
        return 0
    if args.dump:
        ev.dump(args.dump, rule, result)
    if args.json:
        _emit_json(report)
    else:
        _print_report(report)
    return 0


def cmd_serve(args) -> int:
    from ..serve import make_service, run_server

    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("seenn serve needs starlette, uvicorn and prometheus_client: pip install 'seenn[serve]'") \
            from None
    if not args.host.strip():
        raise ConfigError("--host '' would listen on every interface; name the address (0.0.0.0 for all, on "
                          "purpose)")
    config = read_config(resolve_run(args.run))
    rule = _rule(args, config)
    if rule is None:
        raise ConfigError("seenn serve needs an exit rule that runs without labels")
    if args.max_timesteps is not None and args.max_timesteps > config["max_timesteps"]:
        raise ConfigError(f"--max-timesteps {args.max_timesteps} is more than the run's {config['max_timesteps']}")
    if getattr(rule, "timesteps", 1) > (args.max_timesteps or config["max_timesteps"]):
        raise ConfigError(f"--timesteps {rule.timesteps} is more than the run's {config['max_timesteps']} timesteps")

    torch.set_num_threads(args.threads)
    max_t = args.max_timesteps or config["max_timesteps"]
    from ..serve import bind

    sock = bind(args.host, args.port)  # before the model loads and before it says it serves: a port in use is one line
    svc = make_service(args.run, rule=rule, max_timesteps=max_t, precision=args.precision, max_batch=args.max_batch,
                       max_queue=args.max_queue, audit_fraction=args.audit_fraction,
                       bound=args.audit_bound, audit_alpha=args.audit_alpha,
                       on_alarm=args.on_alarm, max_body=args.max_body, seed=args.seed)

    _log(f"seenn serve {args.run} on http://{args.host}:{args.port} ({describe_text(svc.rule_desc)}, "
         f"{svc.precision}, audit {args.audit_fraction:g} of requests)")
    run_server(svc.app, args.host, args.port, sock)
    _log(f"stopped after answering {svc.app.state.served['served']} requests")
    return 0


def _eval_ann(args, model, data, rank: int) -> int:
    """An ANN run (before conversion): its accuracy, one pass per image."""
    t0 = time.perf_counter()
    logits = step_logits(model.to(args.device), data, 1, batch_size=args.batch_size, device=args.device)[:, 0]
    acc = (logits.argmax(1) == data.labels).sum().item() / len(data)
    report = {"dataset": data.info.name, "split": args.split, "samples": len(data), "kind": "ann",
              "accuracy": acc, "seconds": time.perf_counter() - t0}
    if rank == 0:
        if args.json:
            _emit_json(report)
        else:
            print(f"{data.info.name} {args.split}: {len(data)} samples, ANN accuracy {acc:.4f} (convert it to "
                  f"early-exit: seenn convert {args.run} --out DIR)")
    return 0


def _print_report(r: dict) -> None:
    kind = " (emulated event recordings)" if r.get("emulated") else ""
    print(f"{r['dataset']}{kind} / {r['split']}: {r['samples']} samples, max {r['max_timesteps']} timesteps")
    if "input" in r:
        print(f"input: {r['input']}; readout: {r['readout']}")
    print("accuracy per timestep: " + "  ".join(f"t={i + 1}: {a:.2%}" for i, a in enumerate(r["accuracy_per_timestep"])))
    print(f"oracle: {r['oracle_accuracy']:.2%} at {r['oracle_avg_timesteps']:.3f} avg timesteps; "
          f"ideal exit keeping the full-T accuracy: {r['ideal_avg_timesteps']:.3f}")
    e = r["exit"]
    th = "" if e.get("threshold") is None else f" > {e['threshold']:g}"
    print(f"exit rule {e['rule']}{th}: accuracy {e['accuracy']:.2%} at {e['avg_timesteps']:.3f} avg timesteps, "
          f"exits per step {e['exit_histogram']}, false exits {e['false_exits']}, rescued {e['rescued']}")
    if "audit" in r:
        a = r["audit"]
        print(f"audit of {a['audited']} of {a['requests']} samples ({a['fraction']:g}): {a['disagreements']} disagree "
              f"with full T (bound {a['bound']:g}); " + (f"ALARM after {a['alarm_after_requests']} samples"
                                                         if a["alarm"] else "no alarm"))
    if "sensor_ms_full" in r:
        print(f"sensor time read: {e['avg_sensor_ms']:.1f} ms on average at the exit, {r['sensor_ms_full']:.1f} ms at "
              f"full T (oracle {r['oracle_sensor_ms']:.1f}, ideal {r['ideal_sensor_ms']:.1f})")
    if "sweep" in r:
        _print_sweep(r["sweep"], r["accuracy_per_timestep"][-1])
    print(f"({r['seconds']:.1f} s)")


def _print_sweep(rows, full_accuracy: float) -> None:
    print(f"{'rule':<11}{'threshold':>10}{'accuracy':>10}{'vs full T':>11}{'avg steps':>11}  exits per step")
    for row in rows:
        th = "per-step" if row.get("threshold") is None else f"{row['threshold']:.4g}"
        if row.get("temperature"):
            th = "calib " + th
        print(f"{row['rule']:<11}{th:>10}{row['accuracy']:>10.2%}"
              f"{(row['accuracy'] - full_accuracy) * 100:>+10.2f}p{row['avg_timesteps']:>11.3f}  {row['exit_histogram']}")


def cmd_bench(args) -> int:
    for flag in ("batch_size", "repeats"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.latency_samples < 1:
        raise ConfigError(f"--latency-samples must be >= 1, got {args.latency_samples}")
    model, config, data, max_t, rule = _load_with_rule(args, "timing")
    r = benchmark(model, data, rule, max_t, batch_size=args.batch_size, repeats=args.repeats,
                  latency_samples=args.latency_samples, device=args.device, compile=args.compile,
                  precision=_precision(args, config))
    if args.json:
        _emit_json(r)
        return 0
    print(f"{r['samples']} samples, batch {r['batch_size']}, T = {r['max_timesteps']}, {r['precision']}, "
          f"{r['rule']['rule']} exit: {r['avg_timesteps']:.3f} avg timesteps")
    print(f"full T {r['full_seconds']:.3f} s, early exit {r['early_exit_seconds']:.3f} s: speedup {r['speedup']:.2f}x "
          f"of an ideal {r['ideal_speedup']:.2f}x (efficiency {r['efficiency']:.2f}); continuous batching "
          f"{r['streaming_speedup']:.2f}x (efficiency {r['streaming_efficiency']:.2f})")
    lat = r["batch1_latency_ms"]
    print(f"batch-1 p50 latency: full {lat['full']:.2f} ms, early exit {lat['early_exit']:.2f} ms "
          f"({r['batch1_speedup']:.2f}x of an ideal {r['batch1_ideal_speedup']:.2f}x)")
    sps = r["samples_per_second"]
    print(f"samples/s: full {sps['full']:.0f}, early exit {sps['early_exit']:.0f}, streaming {sps['streaming']:.0f}")
    return 0
