"""seenn against SpikingJelly and snnTorch: the same 3-block conv SNN (32/64/128 channels, LIF decay 0.5,
threshold 1, hard reset, T = 4), the same weights, measured side by side in one run.

    pip install -e '.[bench]' && pip install --no-deps spikingjelly    # SpikingJelly's declared deps pull CUDA
    python benchmarks/peers.py [--batch-size 64] [--infer-batch-size 256] [--repeats 5]

First checks that the three give the same spikes (every layer) and outputs on real Fashion-MNIST images, then
measures training-step throughput, inference throughput and the peak memory of one training step (peak resident
memory of a fresh process, above its level just before the step). Writes the section "peers" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from _common import ROOT, allocator, machine, publish, today
from torch import nn

from seenn.models import build_model
from seenn.runs.store import load_run, pretrained_runs

T = 4
SHIPPED = "fashion-mnist-convnet-t4"


def seenn_net():
    if any(r["name"] == SHIPPED for r in pretrained_runs()):
        return load_run(SHIPPED)[0]
    torch.manual_seed(0)
    return build_model("convnet", in_channels=1, image_size=28, num_classes=10).eval()


def _layers(ref):
    """(conv, bn) pairs and the readout of the seenn convnet, in order."""
    convs = [ref.stem[0]] + [m for m in ref.body if isinstance(m, nn.Conv2d)]
    bns = [ref.stem[1]] + [m for m in ref.body if isinstance(m, nn.BatchNorm2d)]
    return list(zip(convs, bns)), ref.body[-1]


def _copy(dst, src):
    dst.load_state_dict(src.state_dict())
    return dst


class SJNet(nn.Module):
    """SpikingJelly activation_based, multi-step mode: input [T, B, C, H, W] (the image repeated T times)."""

    def __init__(self, ref):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        pairs, fc = _layers(ref)
        mods = []
        for i, (c, b) in enumerate(pairs):
            mods += [_copy(layer.Conv2d(c.in_channels, c.out_channels, 3, padding=1, bias=False), c),
                     _copy(layer.BatchNorm2d(c.out_channels), b),
                     neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                                    surrogate_function=surrogate.Sigmoid(), step_mode="m"),
                     layer.AvgPool2d(2)]
        mods += [layer.Flatten(), _copy(layer.Linear(fc.in_features, fc.out_features), fc)]
        self.net = nn.Sequential(*mods)
        from spikingjelly.activation_based import functional

        functional.set_step_mode(self.net, "m")
        self._functional = functional

    def forward(self, x, timesteps):
        self._functional.reset_net(self.net)
        return self.net(x.unsqueeze(0).repeat(timesteps, 1, 1, 1, 1))

    def spiking_layers(self):
        from spikingjelly.activation_based import neuron

        return [m for m in self.net if isinstance(m, neuron.LIFNode)]


class SnnTorchNet(nn.Module):
    """snnTorch: a loop over T, one Leaky per layer (reset to zero, beta 0.5, threshold 1)."""

    def __init__(self, ref):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        pairs, fc = _layers(ref)
        self.convs = nn.ModuleList(_copy(nn.Conv2d(c.in_channels, c.out_channels, 3, padding=1, bias=False), c)
                                   for c, _ in pairs)
        self.bns = nn.ModuleList(_copy(nn.BatchNorm2d(b.num_features), b) for _, b in pairs)
        self.lifs = nn.ModuleList(snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero",
                                            spike_grad=surrogate.fast_sigmoid()) for _ in pairs)
        self.fc = _copy(nn.Linear(fc.in_features, fc.out_features), fc)
        self.record = None  # list of per-layer spike lists when recording

    def forward(self, x, timesteps):
        for lif in self.lifs:
            lif.reset_mem()
        outs = []
        for _ in range(timesteps):
            h = x
            for i, (conv, bn, lif) in enumerate(zip(self.convs, self.bns, self.lifs)):
                spk, _ = lif(bn(conv(h)))
                if self.record is not None:
                    self.record[i].append(spk)
                h = F.avg_pool2d(spk, 2)
            outs.append(self.fc(h.flatten(1)))
        return torch.stack(outs)


def build(lib: str):
    ref = seenn_net()
    net = {"seenn": lambda: ref, "spikingjelly": lambda: SJNet(ref), "snntorch": lambda: SnnTorchNet(ref)}[lib]()
    return net.eval()


def real_batch(n: int):
    from seenn.data import load_dataset

    try:
        x, y = next(load_dataset("fashion-mnist", "test", limit=n).batches(n))
    except Exception:  # no dataset: random images still exercise every path
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return x, y


# ------------------------------------------------------------------------------------------- equivalence


@torch.no_grad()
def check_equivalence(n: int = 256) -> dict:
    x, _ = real_batch(n)
    ref = seenn_net()
    spikes = {}  # neuron index -> its spikes at each step (seenn's inference runs step by step)
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: spikes.setdefault(k, []).append(o))
             for k, m in enumerate(ref.neurons())]
    out_seenn = ref(x, T)
    for h in hooks:
        h.remove()
    seenn_spikes = [torch.stack(spikes[k]) for k in sorted(spikes)]

    sj = build("spikingjelly")
    sj_spikes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: sj_spikes.append(o)) for m in sj.spiking_layers()]
    out_sj = sj(x, T)
    for h in hooks:
        h.remove()

    st = build("snntorch")
    st.record = [[] for _ in st.lifs]
    out_st = st(x, T)
    st_spikes = [torch.stack(r) for r in st.record]

    report = {}
    for name, out, spk in (("spikingjelly", out_sj, sj_spikes), ("snntorch", out_st, st_spikes)):
        mism = sum(int((a != b).sum()) for a, b in zip(seenn_spikes, spk))
        total = sum(a.numel() for a in seenn_spikes)
        report[name] = {"spike_mismatches": mism, "spikes_compared": total,
                        "spike_rate": sum(float(a.sum()) for a in seenn_spikes) / total,
                        "max_output_difference": float((out - out_seenn).abs().max()),
                        "same_predictions": bool(torch.equal(out.sum(0).argmax(1), out_seenn.sum(0).argmax(1)))}
    return report


# ------------------------------------------------------------------------------------------- timing


def train_step_fn(lib: str, batch: int):
    if lib == "seenn-compiled-bf16":  # `seenn train --compile --precision bf16`
        inner = train_step_fn("seenn-compiled", batch)

        def bf16_step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                inner()

        return bf16_step
    if lib == "seenn-compiled":
        from seenn.nn.neuron import set_compile

        inner = train_step_fn("seenn", batch)

        def compiled_step():
            set_compile(True)
            try:
                inner()
            finally:
                set_compile(False)

        return compiled_step
    net = build(lib).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x, y = real_batch(batch)

    def step():
        out = net(x, T).float()  # [T, B, K]
        loss = F.cross_entropy(out.flatten(0, 1), y.repeat(T))  # the TET per-step cross-entropy
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_fn(lib: str, batch: int):
    if lib.endswith("-exit"):  # seenn's early-exit runner at the shipped run's calibrated threshold
        from seenn.exits import Confidence
        from seenn.runtime.engine import EarlyExitRunner

        th = load_run(SHIPPED)[1]["exit"]["confidence"]["threshold"] if any(
            r["name"] == SHIPPED for r in pretrained_runs()) else 0.9
        runner = EarlyExitRunner(build("seenn").eval(), Confidence(th), T, precision=lib.split("-")[1])
        x, _ = real_batch(batch)
        return lambda: runner.predict(x)
    net = build(lib.split("-")[0]).eval()
    if lib.startswith("seenn"):  # seenn's inference paths (runner, eval) run the BN-folded model
        from seenn.runtime.inference import inference_model

        net = inference_model(net, lib.split("-")[1] if "-" in lib else "fp32")
    x, _ = real_batch(batch)

    @torch.inference_mode()
    def run():
        net(x, T)

    return run


def timed(fn, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def _rss_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def memory_probe(lib: str, batch: int) -> None:
    """Run in a fresh process: peak resident memory of one training step above the level just before it."""
    step = train_step_fn(lib, batch)
    if lib == "seenn-compiled":
        step()  # compile first: the compiler's own memory is not the training step's
    with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current level
        f.write("5")
    before = _rss_kib("VmRSS")
    step()
    print(json.dumps({"peak_mib": (_rss_kib("VmHWM") - before) / 1024}))


def measure_memory(lib: str, batch: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-probe", lib, "--batch-size", str(batch)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


LIBS = ("seenn", "seenn-int8", "seenn-bf16", "seenn-fp32-exit", "seenn-int8-exit", "spikingjelly", "snntorch")
TRAIN_VARIANTS = ("seenn", "seenn-compiled", "seenn-compiled-bf16", "spikingjelly", "snntorch")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--infer-batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--memory-probe")
    p.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                   help="for the timings, in this one process (so every library alike); memory probes: as it comes")
    args = p.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe, args.batch_size)
        return
    alloc = allocator(args.allocator)
    eq = check_equivalence()
    print(json.dumps(eq, indent=1), file=sys.stderr)
    train_fns = {lib: train_step_fn(lib, args.batch_size) for lib in TRAIN_VARIANTS}
    infer_fns = {lib: infer_fn(lib, args.infer_batch_size) for lib in LIBS}
    for lib in TRAIN_VARIANTS:  # warm-up (and the one-off compile of seenn-compiled)
        for _ in range(2):
            train_fns[lib]()
    for lib in LIBS:
        infer_fns[lib]()
    tr = {lib: [] for lib in TRAIN_VARIANTS}
    inf = {lib: [] for lib in LIBS}
    for _ in range(args.rounds):  # interleaved rounds: load drifts hit every library alike
        for lib in TRAIN_VARIANTS:
            tr[lib].append(args.batch_size / timed(train_fns[lib], args.repeats))
        for lib in LIBS:
            inf[lib].append(args.infer_batch_size / timed(infer_fns[lib], args.repeats))
    mem = {lib: statistics.median(measure_memory(lib, args.batch_size) for _ in range(3)) for lib in TRAIN_VARIANTS
           if "bf16" not in lib}
    res = {lib: {"train_images_per_s": statistics.median(tr[lib]) if lib in tr else None,
                 "infer_images_per_s": statistics.median(inf[lib]) if lib in inf else None,
                 "train_peak_mib": mem.get(lib)} for lib in dict.fromkeys(TRAIN_VARIANTS + LIBS)}
    print(json.dumps(res, indent=1), file=sys.stderr)
    versions = {}
    for mod in ("spikingjelly", "snntorch"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = "?"
    cmd = f"python benchmarks/peers.py --batch-size {args.batch_size} --infer-batch-size {args.infer_batch_size} " \
          f"--repeats {args.repeats} --rounds {args.rounds} --allocator {args.allocator}"
    lines = ["## seenn against SpikingJelly and snnTorch", "",
             f"{today()}, `{cmd}`, {machine()}, {alloc} (timings; every library in the same process); SpikingJelly {versions['spikingjelly']} (activation_based, multi-step, "
             f"its default torch path), snnTorch {versions['snntorch']}.", "",
             f"Same network (3 conv blocks 32/64/128, LIF decay 0.5, threshold 1, hard reset, T = {T}), same weights "
             "(the shipped Fashion-MNIST run when present). Equivalence on 256 real test images, eval mode:", ""]
    for lib, e in eq.items():
        lines.append(f"- {lib}: {e['spike_mismatches']} of {e['spikes_compared']} spikes differ from seenn's "
                     f"(spike rate {e['spike_rate']:.3f}), largest output difference {e['max_output_difference']:.2e}, "
                     f"same predictions: {e['same_predictions']}")
    lines += ["", f"Training step: batch {args.batch_size}, forward over T, per-step cross-entropy, backward, SGD. "
              f"Inference: batch {args.infer_batch_size}, full T, inference mode. Medians of {args.rounds} interleaved "
              f"rounds of {args.repeats} repeats; memory: median of 3 fresh processes.", "",
              "| library | training images/s | inference images/s | training-step peak memory (MiB) | training vs snnTorch | inference vs snnTorch |",
              "|---|---|---|---|---|---|"]
    st = res["snntorch"]

    def cell(v, fmt):
        return "" if v is None else format(v, fmt)

    for lib, r in res.items():
        tr_ratio = None if r["train_images_per_s"] is None else r["train_images_per_s"] / st["train_images_per_s"]
        in_ratio = None if r["infer_images_per_s"] is None else r["infer_images_per_s"] / st["infer_images_per_s"]
        lines.append(f"| {lib} | {cell(r['train_images_per_s'], '.0f')} | {cell(r['infer_images_per_s'], '.0f')} | "
                     f"{cell(r['train_peak_mib'], '.1f')} | {cell(tr_ratio, '.2f')}{'x' if tr_ratio else ''} | "
                     f"{cell(in_ratio, '.2f')}{'x' if in_ratio else ''} |")
    lines += ["", "seenn-compiled is `seenn train --compile`: each layer's batch norm, neuron (BPTT over all T) and 2x2 "
                  "pool as one compiled kernel per layer shape (one-off compile of some seconds each, excluded from the "
                  "timing by the warm-up); plain seenn fuses the neuron and pool eagerly. seenn's inference runs step by "
                  "step on the BN-folded network with oneDNN-packed convolutions, as its runner and `seenn eval` do; "
                  "seenn-int8 and seenn-bf16 are `--precision int8 / bf16` (the convolutions that read spikes in that "
                  "precision, seenn.runtime.precision); seenn-compiled-bf16 is `seenn train --compile --precision bf16`; "
                  "seenn-fp32-exit and seenn-int8-exit are the early-exit runner at the shipped run's calibrated "
                  "threshold (`EarlyExitRunner(..., precision=...)`), images/s against the others' full T."]
    publish("peers", lines)


if __name__ == "__main__":
    main()
