"""Training speed of the fast recipe's network on this machine, side by side in one process: one SGD step (forward,
backward, update) of the QCFS ANN and of the LIF network at T = 4, eager against channels-last against
torch.compile; the data pipeline's cost per batch (uint8 shift and flip on tensors, JPEG re-encoding of half the
images, normalisation); the allocator's share (run it twice, `--allocator default` and `tuned`).

    python benchmarks/train_speed.py [--batch-size 512] [--steps 3] [--allocator tuned|default]

Writes the section "train-speed-ALLOCATOR" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import time

from _common import allocator, machine, publish, today


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--allocator", choices=["tuned", "default"], default="tuned")
    p.add_argument("--data-dir")
    args = p.parse_args()
    alloc = allocator(args.allocator)
    import torch
    import torch.nn.functional as F

    from seenn.data import load_dataset
    from seenn.models import build_model
    from seenn.nn import neuron
    from seenn.training.losses import tet_loss

    b = args.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (b,), generator=gen)

    def timed(step) -> tuple[float, float]:
        step()  # warm-up (and compilation)
        t0, c0 = time.perf_counter(), os.times()
        for _ in range(args.steps):
            step()
        c1 = os.times()
        return (time.perf_counter() - t0) / args.steps, (c1.system - c0.system) / args.steps

    rows = []
    for kind in ("qcfs", "lif"):
        for mode in ("eager", "channels-last", "compiled"):
            if kind == "lif" and mode == "channels-last":
                continue  # the LIF network's fused multi-step pass runs in its own layout
            torch.manual_seed(0)
            model = build_model("airbench", in_channels=3, image_size=32, num_classes=10, neuron=kind,
                                quant_levels=4)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
            if kind == "qcfs":
                xin = x
                fwd = model.ann_forward
                if mode != "eager":
                    model = model.to(memory_format=torch.channels_last)
                    xin = x.contiguous(memory_format=torch.channels_last)
                if mode == "compiled":
                    fwd = torch.compile(model.ann_forward)

                def step(fwd=fwd, xin=xin, opt=opt):
                    loss = F.cross_entropy(fwd(xin), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            else:
                neuron.set_compile(mode == "compiled")

                def step(model=model, opt=opt):
                    loss = tet_loss(model(x, 4).float(), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            secs, sys_secs = timed(step)
            rows.append((kind, mode, secs, sys_secs))
            print(rows[-1], flush=True)
    neuron.set_compile(False)
    train = load_dataset("cifar10", "train", data_dir=args.data_dir, limit=4 * b)
    pipes = {}
    for name, kw in (("shift 2 (reflect) + alternating flip", dict(augment=True, translate=2, padding="reflect",
                                                                   flip="alternate")),
                     ("+ JPEG re-encoding of half the images", dict(augment=True, translate=2, padding="reflect",
                                                                    flip="alternate", jpeg=0.5))):
        t0 = time.perf_counter()
        for _ in train.batches(b, shuffle=True, generator=gen, **kw):
            pass
        pipes[name] = (time.perf_counter() - t0) / 4
    lines = ["## Training speed of the fast recipe's network", "",
             f"{today()}, `python benchmarks/train_speed.py --batch-size {b} --steps {args.steps} --allocator "
             f"{args.allocator}`, {machine()}, {alloc}.", "",
             f"One SGD step on a batch of {b} (forward, backward, Nesterov update), mean of {args.steps} after one "
             "warm-up step; the LIF network at T = 4 with TET (its fused multi-step BPTT; compiled: its neuron "
             "loops through torch.compile).", "",
             "| network | mode | seconds a step | ms an image | kernel (system) seconds a step |", "|---|---|---|---|---|"]
    for kind, mode, secs, sys_secs in rows:
        lines.append(f"| {'QCFS ANN' if kind == 'qcfs' else 'LIF, T = 4'} | {mode} | {secs:.2f} | "
                     f"{secs / b * 1000:.2f} | {sys_secs:.2f} |")
    lines += ["", "The data pipeline, a batch at a time on uint8 tensors (then normalised to float):", "",
              "| pipeline | seconds a batch |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in pipes.items()]
    publish(f"train-speed-{args.allocator}", lines)


if __name__ == "__main__":
    main()
