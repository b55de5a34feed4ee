"""Why one sample exited when it did: its probabilities, score and the rule's reason at every step.

``explain(model, data, index, rule, max_timesteps)`` returns the report ``seenn explain --json`` prints;
``explanation_lines(report)`` is its text form. The exit step comes from the step-by-step runner itself, so what
the report says is what ``seenn eval`` does with that sample.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..runtime.engine import EarlyExitRunner, score_matrix


def explain(model, data, index: int, rule, max_timesteps: int) -> dict:
    """Every step of sample ``index`` of ``data`` under ``rule``: probabilities (softmax of the summed logits at the
    rule's temperature), prediction, score, whether the rule fires and why; the runner's exit step and prediction
    against the full-T one. For a recording, also the events of each frame and the sensor time read by each step."""
    if not 0 <= index < len(data):
        raise ConfigError(f"index must be in [0, {len(data)}), got {index}", param="index")
    x, y = data.normalize(data.images[index:index + 1]), int(data.labels[index])
    with torch.inference_mode():
        logits = model(x, max_timesteps).transpose(0, 1)  # [1, T, K]
    summed = logits.cumsum(dim=1)[0]
    scores = score_matrix(logits, rule)[0]
    probs = torch.softmax(summed / getattr(rule, "temperature", 1.0), dim=-1)
    names = data.info.class_names or tuple(str(i) for i in range(probs.shape[1]))
    run = EarlyExitRunner(model, rule, max_timesteps).predict(x)
    exit_t = int(run.exit_timestep[0])
    steps = []
    for t in range(max_timesteps):
        fires = bool(rule.exits(scores[t:t + 1], t + 1)[0])
        pred = int(summed[t].argmax())
        steps.append({"timestep": t + 1, "probabilities": [round(float(p), 6) for p in probs[t]],
                      "prediction": pred, "prediction_name": names[pred], "score": float(scores[t]),
                      "exits": fires, "reason": rule.reason(float(scores[t]), t + 1, fires)})
    frames = getattr(data, "time_varying", False)
    if frames:  # a recording: what each step read of it
        fr, ends = data.images[index], data.ends[index]
        for t, s in enumerate(steps):
            s["events"] = int(fr[t].sum())
            s["sensor_ms"] = round(float(ends[t]), 3)
    full_pred, exit_pred = int(summed[-1].argmax()), int(run.prediction[0])
    reason = steps[exit_t - 1]["reason"] if steps[exit_t - 1]["exits"] else \
        f"no step passed the rule; stopped at the last step {max_timesteps}"
    report = {"dataset": data.info.name, "split": data.split, "index": index, "label": y, "label_name": names[y],
              "rule": rule.describe(), "class_names": list(names), "steps": steps, "exit_timestep": exit_t,
              "reason": reason, "prediction": exit_pred, "prediction_name": names[exit_pred],
              "correct": exit_pred == y, "full_prediction": full_pred, "full_prediction_name": names[full_pred],
              "full_correct": full_pred == y}
    if frames:
        report["sensor_ms_at_exit"] = steps[exit_t - 1]["sensor_ms"]
        report["sensor_ms_full"] = steps[-1]["sensor_ms"]
    return report


def explanation_lines(report: dict) -> list[str]:
    """The report as text: the three likeliest classes and the rule's reason per step, then the verdict."""
    names, steps, exit_t = report["class_names"], report["steps"], report["exit_timestep"]
    lines = [f"{report['dataset']} / {report['split']} #{report['index']}: label {report['label_name']}"]
    for s in steps:
        top = sorted(range(len(names)), key=lambda k: -s["probabilities"][k])[:3]
        tops = ", ".join(f"{names[k]} {s['probabilities'][k]:.3f}" for k in top)
        mark = "  <- exit" if s["timestep"] == exit_t else ""
        read = f" [frame of {s['events']} events, {s['sensor_ms']:.1f} ms read]" if "events" in s else ""
        lines.append(f"  step {s['timestep']}: {tops}; {s['reason']}{read}{mark}")

    def verdict(right: bool) -> str:
        return "right" if right else "wrong"

    lines.append(f"exited at step {exit_t} ({report['reason']}): {report['prediction_name']} "
                 f"({verdict(report['correct'])}); full T ({len(steps)} steps) would say "
                 f"{report['full_prediction_name']} ({verdict(report['full_correct'])})")
    return lines
