"""A self-contained HTML report: the plots are PNG files beside the page and embedded in it (base64), so the page
alone can be mailed or archived. Needs matplotlib (``pip install seenn[report]``)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import torch

from ..data import atomic_write_bytes
from ..errors import ConfigError
from ..exits import ExitRule, Fixed, describe_text
from ..runtime.engine import posthoc_exits
from .evaluate import Evaluation
from .metrics import exit_summary


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the report needs matplotlib: pip install 'seenn[report]'") from None
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _reliability(ev: Evaluation, rule: ExitRule, bins: int = 10):
    summed = ev.step_logits.cumsum(dim=1)
    temp = getattr(rule, "temperature", 1.0)
    out = []
    for t in range(ev.max_timesteps):
        p = torch.softmax(summed[:, t] / temp, -1)
        conf, pred = p.max(-1)
        right = (pred == ev.labels).float()
        edges = torch.linspace(0, 1, bins + 1)
        xs, ys, ns = [], [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (conf > lo) & (conf <= hi)
            if m.sum() > 0:
                xs.append(conf[m].mean().item())
                ys.append(right[m].mean().item())
                ns.append(int(m.sum()))
        out.append((xs, ys, ns))
    return out


def build_report(ev: Evaluation, rule: ExitRule, out_dir: Path, title: str, policy_points=None,
                 energy: dict | None = None) -> Path:
    plt = _plt()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {out_dir}: {e.strerror}") from None
    head = ev.header()
    t_max = ev.max_timesteps
    result = ev.run(rule)
    exit_stats = ev.summarize(rule.describe(), result)
    full_acc = head["accuracy_per_timestep"][-1]
    pngs: dict[str, bytes] = {}

    # 1. accuracy against average timesteps
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, marker in (("confidence", "o"), ("entropy", "s")):
        rows = ev.sweep(name)
        ax.plot([r["avg_timesteps"] for r in rows], [r["accuracy"] * 100 for r in rows], marker=marker, ms=3,
                label=f"SEENN-I {name} sweep")
    fixed = [exit_summary(*_fixed(ev, k), ev.labels, t_max) for k in range(1, t_max + 1)]
    ax.plot([f["avg_timesteps"] for f in fixed], [f["accuracy"] * 100 for f in fixed], "k--^", ms=5,
            label="fixed T = 1..%d" % t_max)
    for label, (steps, acc) in (policy_points or {}).items():
        ax.plot([steps], [acc * 100], "D", ms=7, label=label)
    ax.plot([head["oracle_avg_timesteps"]], [head["oracle_accuracy"] * 100], "*", ms=12, label="oracle")
    ax.plot([head["ideal_avg_timesteps"]], [full_acc * 100], "P", ms=9, label="ideal at full-T accuracy")
    ax.plot([exit_stats["avg_timesteps"]], [exit_stats["accuracy"] * 100], "o", mfc="none", mec="red", ms=14,
            label="chosen rule")
    ax.set_xlabel("average timesteps")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("accuracy against average timesteps")
    pngs["tradeoff.png"] = _png(fig)

    # 2. exit histogram, 3. accuracy per timestep
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    steps = list(range(1, t_max + 1))
    a1.bar(steps, exit_stats["exit_histogram"], color="tab:blue")
    a1.set_xlabel("exit timestep")
    a1.set_ylabel("samples")
    a1.set_title("exit histogram (chosen rule)")
    a1.set_xticks(steps)
    a2.plot(steps, [a * 100 for a in head["accuracy_per_timestep"]], "o-")
    a2.set_xlabel("timesteps t (logits summed over 1..t)")
    a2.set_ylabel("accuracy (%)")
    a2.set_title("accuracy per timestep")
    a2.set_xticks(steps)
    a2.grid(alpha=0.3)
    pngs["exits.png"] = _png(fig)

    # 4. reliability diagram
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for t, (xs, ys, _) in enumerate(_reliability(ev, rule)):
        ax.plot(xs, ys, "o-", ms=3, label=f"t = {t + 1}")
    ax.set_xlabel("confidence (max softmax of summed logits)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability per timestep")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    pngs["reliability.png"] = _png(fig)

    # 5. easiest and hardest samples
    order_easy = sorted(range(len(result.score)), key=lambda i: (int(result.exit_timestep[i]), -float(result.score[i])))
    hardest = [i for i in sorted(range(len(result.score)), key=lambda i: (-int(result.exit_timestep[i]),
                                                                          float(result.score[i])))]
    names = ev.data.info.class_names or tuple(str(i) for i in range(10))
    frames = getattr(ev.data, "time_varying", False)
    if frames:  # recordings: the frames each sample read, and those it left unread
        picks = [(f"easiest #{i}", i) for i in order_easy[:3]] + [(f"hardest #{i}", i) for i in hardest[:3]]
        pngs["samples.png"] = frames_figure([(title_, ev.data.images[i], int(result.exit_timestep[i]),
                                              ev.data.ends[i], names[int(result.prediction[i])],
                                              names[int(ev.labels[i])]) for title_, i in picks])
    else:
        pngs["samples.png"] = _samples_figure(ev, result, names, order_easy[:8], hardest[:8])

    for name, data in pngs.items():
        atomic_write_bytes(out_dir / name, data)
    rows = "".join(f"<tr><td>t = {t + 1}</td><td>{a:.2%}</td></tr>" for t, a in enumerate(head["accuracy_per_timestep"]))
    img = lambda name, alt: (f'<figure><img alt="{alt}" src="data:image/png;base64,'  # noqa: E731
                             f'{base64.b64encode(pngs[name]).decode()}"><figcaption>{alt}</figcaption></figure>')
    rd = rule.describe()
    sensor_rows = ""
    if "sensor_ms_full" in head:
        sensor_rows = (f"<tr><td>sensor time read at the exit</td><td>{exit_stats['avg_sensor_ms']:.1f} ms (full T: "
                       f"{head['sensor_ms_full']:.1f} ms; ideal {head['ideal_sensor_ms']:.1f} ms)</td></tr>\n")
    caption = ("Easiest and hardest samples: the frames each read before it left (red ON, blue OFF events; "
               "greyed frames were never read)" if frames else
               "Easiest (first row: earliest exits, highest score) and hardest (latest exits, lowest score) samples")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}
figure{{margin:1.2em 0}}img{{max-width:100%}}figcaption{{color:#555;font-size:.9em}}.kv td:first-child{{text-align:left}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{head['samples']} samples of {html.escape(head['dataset'])}{' (<strong>emulated</strong> event recordings, made by seenn events emulate)' if head.get('emulated') else ''} / {html.escape(head['split'])}, at most {t_max} timesteps.</p>
<table class="kv">
<tr><td>exit rule</td><td>{html.escape(describe_text(rd))}</td></tr>
<tr><td>accuracy at full T</td><td>{full_acc:.2%}</td></tr>
<tr><td>accuracy with early exit</td><td>{exit_stats['accuracy']:.2%}</td></tr>
<tr><td>average timesteps</td><td>{exit_stats['avg_timesteps']:.3f}</td></tr>
<tr><td>false early exits / rescued</td><td>{exit_stats['false_exits']} / {exit_stats['rescued']}</td></tr>
<tr><td>oracle</td><td>{head['oracle_accuracy']:.2%} at {head['oracle_avg_timesteps']:.3f} steps</td></tr>
<tr><td>ideal exit at full-T accuracy</td><td>{head['ideal_avg_timesteps']:.3f} steps</td></tr>
{sensor_rows}</table>
{_energy_table(energy)}
<h2>Accuracy per timestep</h2><table>{rows}</table>
{img('tradeoff.png', 'Accuracy against average timesteps: threshold sweeps, fixed T, oracle and the ideal limit')}
{img('exits.png', 'Where samples exit, and accuracy of the logits summed over steps 1..t')}
{img('reliability.png', 'Reliability diagram: confidence against accuracy after each timestep')}
{img('samples.png', caption)}
</body></html>
"""
    page_path = out_dir / "index.html"
    atomic_write_bytes(page_path, page.encode())
    return page_path


def _samples_figure(ev: Evaluation, result, names, easiest, hardest) -> bytes:
    plt = _plt()
    fig, axes = plt.subplots(2, 8, figsize=(12, 3.6))
    for row, (label, idxs) in enumerate((("easiest", easiest), ("hardest", hardest))):
        for col, i in enumerate(idxs):
            ax = axes[row, col]
            img = ev.data.images[i]
            ax.imshow((img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(), cmap="gray" if img.shape[0] == 1 else None)
            pred, y = int(result.prediction[i]), int(ev.labels[i])
            ax.set_title(f"#{i} exit t={int(result.exit_timestep[i])}\n{names[pred]}" + ("" if pred == y else f" (is {names[y]})"),
                         fontsize=7, color="black" if pred == y else "red")
            ax.axis("off")
        axes[row, 0].text(-0.5, 0.5, label, transform=axes[row, 0].transAxes, rotation=90, va="center", fontsize=9)
    return _png(fig)


def frames_figure(rows) -> bytes:
    """One row per sample: its frames (ON events red, OFF blue), those after its exit greyed as never read.
    ``rows``: (title, frames uint8 [T, 2, H, W], exit_timestep, frame ends ms [T], predicted name, true name)."""
    plt = _plt()
    t_max = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), t_max, figsize=(1.3 * t_max + 1, 1.45 * len(rows) + 0.3), squeeze=False)
    for r, (title, fr, exit_t, ends, pred, true) in enumerate(rows):
        for t in range(t_max):
            ax = axes[r, t]
            on, off = fr[t, 1].float(), fr[t, 0].float()
            peak = max(float(on.max()), float(off.max()), 1.0)
            rgb = torch.stack([on / peak, torch.zeros_like(on), off / peak], dim=-1).clamp(0, 1)
            if t >= exit_t:
                rgb = 0.15 + 0.2 * rgb.mean(-1, keepdim=True).expand_as(rgb)
            ax.imshow(rgb.numpy())
            ax.set_title(f"t={t + 1} {float(ends[t]):.0f} ms", fontsize=6, color="black" if t < exit_t else "#999")
            ax.axis("off")
        axes[r, 0].text(-0.15, 0.5, f"{title}\n{pred}" + ("" if pred == true else f" (is {true})"), fontsize=7,
                        transform=axes[r, 0].transAxes, ha="right", va="center",
                        color="black" if pred == true else "red")
    return _png(fig)


def _fixed(ev: Evaluation, k: int):
    r = posthoc_exits(ev.step_logits, Fixed(k))
    return r.prediction, r.exit_timestep


def _energy_table(energy: dict | None) -> str:
    if not energy:
        return ""
    ps = energy["per_sample"]
    rows = "".join(f"<tr><td>{label}</td><td>{ps[k]['macs']:,.0f}</td><td>{ps[k]['acs']:,.0f}</td>"
                   f"<td>{ps[k]['energy_uj']:.3f}</td></tr>"
                   for k, label in (("early_exit", "SNN with early exit"), ("full", "SNN, all steps"),
                                    ("ann", "equivalent ANN")))
    return (f"<h2>Energy per sample</h2><p>{energy['pj_per_ac']} pJ per accumulate, {energy['pj_per_mac']} pJ per "
            f"multiply-accumulate (45 nm).</p><table><tr><th></th><th>MACs</th><th>ACs</th><th>energy (uJ)</th></tr>"
            f"{rows}</table>")
