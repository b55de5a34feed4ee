"""The ``seenn`` command line: seenn pretrained, download and events."""

from __future__ import annotations

from ..data import download
from ..data.events import SensorModel, read_events, to_frames
from ..data.events.folder import emulate_folder
from ..runs.store import pretrained_anns, pretrained_runs
from .common import _emit_json, _log


def cmd_pretrained(args) -> int:
    runs, anns = pretrained_runs(), pretrained_anns()
    if args.json:
        _emit_json(anns if args.ann else runs)
    else:
        wn, wd = (max((len(r[k]) for r in runs + anns), default=0) for k in ("name", "dataset"))
        for r in [] if args.ann else runs:
            print(f"{r['name']:<{wn}}  {r['dataset']:<{wd}}  T={r['max_timesteps']:<4} {r['path']}")
        for r in anns:
            print(f"{r['name']:<{wn}}  {r['dataset']:<{wd}}  ANN    {r['path']}")
    return 0


def cmd_download(args) -> int:
    folder = download(args.dataset, args.data_dir, base_url=args.mirror)
    print(folder)
    return 0


def cmd_events_emulate(args) -> int:
    model = SensorModel(threshold=args.threshold, noise_hz=args.noise_hz)
    meta = emulate_folder(args.dataset, args.out, data_dir=args.data_dir, train_limit=args.train_limit,
                          test_limit=args.test_limit, model=model, seed=args.seed, overwrite=args.overwrite,
                          progress=None if args.quiet else (lambda s, i, n: _log(f"{s}: {i}/{n} recordings")))
    _log(f"emulated {meta['counts']['Train']} + {meta['counts']['Test']} recordings of {args.dataset} "
         f"({meta['motion']}, {meta['sensor'][1]}x{meta['sensor'][0]}, {meta['mean_events']} events each on average)")
    print(args.out)
    return 0


def cmd_events_info(args) -> int:
    sensor = tuple(args.sensor) if args.sensor else None
    ev = read_events(args.file, args.format, sensor)
    out = {"file": str(args.file), "events": len(ev), "on": int(ev.p.sum()), "off": int(len(ev) - ev.p.sum()),
           "duration_ms": round(ev.duration_us / 1000, 3), "sensor": list(ev.sensor),
           "x": [int(ev.x.min()), int(ev.x.max())] if len(ev) else None,
           "y": [int(ev.y.min()), int(ev.y.max())] if len(ev) else None,
           "t_us": [int(ev.t[0]), int(ev.t[-1])] if len(ev) else None}
    if args.frames:
        counts, ends = to_frames(ev, args.frames, args.frames_by)
        out["frames"] = {"split_by": args.frames_by, "events": counts.reshape(args.frames, -1).sum(1).tolist(),
                         "end_ms": [round(float(e), 3) for e in ends]}
    if args.json:
        _emit_json(out)
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0
