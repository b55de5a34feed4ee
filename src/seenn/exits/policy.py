"""SEENN-II and learned exit rules.

- **SEENN-II** (``kind="policy"``): a small ANN reads the image and picks the number of timesteps t in 1..T before
  step 1. Trained with the SNN frozen, against the reward ``2^-(t-1)`` if the SNN's prediction from the logits
  summed over steps 1..t is right, ``-beta`` if wrong. The expectation over the T actions is computed exactly
  (``objective="exact"``), or estimated by REINFORCE with a batch-mean baseline (``objective="reinforce"``).
  Samples are weighted as the authors do: 1 if the SNN is right at step 1, else r / (1 - r) with r the step-1
  training accuracy (``weighting="authors"``), or all 1 (``"none"``). At inference the runner gives each sample
  exactly its chosen number of steps (samples leave the batch when their budget is spent).
- **Learned exit rule** (``kind="learned"``): after each step, a small ensemble of MLPs reads what the SNN has
  computed (top-2 probabilities, margin, entropy of the summed softmax, the logit scale, the step and the predicted
  class) and gives the probability that exiting now keeps the full-T decision; the sample exits when it passes a
  threshold chosen on validation data.
  Supervised target (equivalent to RL over the stop decision with the same reward ordering): exit at t when the
  prediction at t equals the full-T prediction and stays so up to T.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..io.files import PRETRAINED_DIR, atomic_write_bytes, read_json, write_json
from ..io.schema import check_policy
from . import ExitRule

POLICY_WEIGHTS = "policy.safetensors"
POLICY_CONFIG = "policy.json"


# ------------------------------------------------------------------------------------------- networks


class PolicyCNN(nn.Module):
    """Compact policy for small images: two strided conv blocks, global pooling, a linear head over T actions."""

    def __init__(self, in_channels: int, max_timesteps: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, max_timesteps)

    def forward(self, x):
        return self.head(self.features(x))


def exit_features(summed_logits: torch.Tensor, t, max_timesteps: int, version: int = 2) -> torch.Tensor:
    """Per-sample features of the accumulated logits after step t.

    Version 1: [top1, top2, margin, certainty, scale, t/T] of the summed softmax. Version 2 adds the mean logit's top
    value and top-2 gap, the step as a one-hot over 1..T and the predicted class as a one-hot (so the rule can learn
    a different confidence bar for each step and for each class, which one SEENN-I threshold cannot)."""
    s = summed_logits.float()
    n, k = s.shape
    p = torch.softmax(s, dim=-1)
    top = p.topk(2, dim=-1).values
    logp = torch.log(p.clamp_min(1e-12))
    certainty = 1.0 + (p * logp).sum(-1) / math.log(k)
    tt = torch.as_tensor(t, dtype=torch.float32, device=p.device).expand(n)
    scale = s.abs().mean(-1) / tt
    cols = [top[:, 0], top[:, 1], top[:, 0] - top[:, 1], certainty, scale.tanh(), tt / max_timesteps]
    if version == 1:
        return torch.stack(cols, 1)
    mean_top = (s / tt[:, None]).topk(2, dim=-1).values
    step = F.one_hot(tt.long().clamp(1, max_timesteps) - 1, max_timesteps).float()
    cls = F.one_hot(s.argmax(-1), k).float()
    return torch.cat([torch.stack(cols + [mean_top[:, 0], mean_top[:, 0] - mean_top[:, 1]], 1), step, cls], 1)


def feature_count(max_timesteps: int, num_classes: int, version: int = 2) -> int:
    return 6 if version == 1 else 8 + max_timesteps + num_classes


class ExitMLP(nn.Module):
    """An ensemble of small MLPs over standardised exit features; :meth:`prob` averages their probabilities."""

    def __init__(self, features: int = 6, hidden: int = 16, members: int = 1):
        super().__init__()
        self.members = nn.ModuleList(nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
                                     for _ in range(members))
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))

    def forward(self, f, member: int | None = None):
        """Logits of one member (training), or of every member stacked ``[members, N]``."""
        z = (f - self.mean) / self.std
        if member is not None:
            return self.members[member](z).squeeze(-1)
        return torch.stack([m(z).squeeze(-1) for m in self.members])

    def prob(self, f):
        return torch.sigmoid(self(f)).mean(0)


# ------------------------------------------------------------------------------------------- rules


class PolicyRule(ExitRule):
    """SEENN-II at inference: each sample's budget of steps is chosen from its image before step 1."""

    name = "policy"

    def __init__(self, net: PolicyCNN, path: str = ""):
        self.net = net.eval()
        self.path = path

    @torch.inference_mode()
    def budget(self, x: torch.Tensor) -> torch.Tensor:
        """Steps for each (normalised) input image: the policy's most likely action."""
        return self.net(x).argmax(-1) + 1

    def exits(self, score, t):  # the budget decides; see EarlyExitRunner
        return torch.zeros_like(score, dtype=torch.bool)

    def reason(self, score, t, exited):
        return f"the policy chose {t} steps" if exited else f"the policy's budget is not spent at step {t}"

    def describe(self):
        return {"rule": self.name, "threshold": None, "policy": self.path}


class LearnedExitRule(ExitRule):
    """Exit when the learned probability that stopping now keeps the full-T decision passes the threshold."""

    name = "learned"

    def __init__(self, net: ExitMLP, threshold: float, max_timesteps: int, path: str = "", version: int = 2):
        self.net = net.eval()
        self.threshold = float(threshold)
        self.max_timesteps = max_timesteps
        self.path = path
        self.version = version

    @torch.inference_mode()
    def score(self, summed_logits, t):
        return self.net.prob(exit_features(summed_logits, t, self.max_timesteps, self.version))

    def exits(self, score, t):
        return score > self.threshold

    def reason(self, score, t, exited):
        op = ">" if exited else "<="
        return f"learned exit probability {score:.4f} {op} {self.threshold:g} at step {t}"

    def describe(self):
        return {"rule": self.name, "threshold": self.threshold, "policy": self.path}


# ------------------------------------------------------------------------------------------- files


def save_policy(out_dir: Path, net: nn.Module, info: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / POLICY_WEIGHTS,
                       save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}))
    write_json(out_dir / POLICY_CONFIG, info)


def load_policy(path: str | Path, max_timesteps: int | None = None, run_config: dict | None = None,
                run_dir: str | Path | None = None) -> ExitRule:
    """A policy folder, or a policy's name in ``run_dir``'s ``policies/`` (a shipped run's policies by name), as
    an exit rule. A name that only other shipped runs have is refused, naming them: a policy belongs to the
    network it was trained on. With ``run_config`` (the run it will serve) a policy made for another dataset, image
    shape or class count is refused."""

    p = Path(path)
    if not p.is_dir():
        own = Path(run_dir) / "policies" / str(path) if run_dir is not None else None
        if own is not None and own.is_dir():
            p = own
        else:
            shipped = sorted(d for d in PRETRAINED_DIR.glob(f"*/policies/{path}") if d.is_dir())
            if not shipped:
                raise CheckpointError(f"{path} is neither a policy folder nor a shipped policy")
            if run_dir is not None or len(shipped) > 1:
                owners = ", ".join(f"{d.parent.parent.name} ({read_json(d / POLICY_CONFIG).get('dataset', '?')})"
                                   for d in shipped)
                raise ConfigError(f"the policy {path} belongs to the shipped run(s) {owners}; "
                                  f"{Path(run_dir).name if run_dir is not None else 'this run'} has no policy of that "
                                  "name (a policy serves the network it was trained on)")
            p = shipped[0]
    info = check_policy(read_json(p / POLICY_CONFIG), str(p / POLICY_CONFIG))
    if run_config is not None:
        m = run_config["model"]
        made_for = f"made for {info.get('run') or 'another run'}"
        if info.get("dataset") and info["dataset"] != run_config["dataset"]:
            raise ConfigError(f"the policy {path} was {made_for} on {info['dataset']}; this run is on "
                              f"{run_config['dataset']}")
        if info["kind"] == "policy" and info["in_channels"] != m["in_channels"]:
            raise ConfigError(f"the policy {path} takes {info['in_channels']}-channel images; this run's have "
                              f"{m['in_channels']}")
        if info["kind"] == "learned" and info.get("num_classes") not in (None, m["num_classes"]):
            raise ConfigError(f"the policy {path} reads {info['num_classes']} classes; this run has "
                              f"{m['num_classes']}")
    try:
        state = load_file(str(p / POLICY_WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p / POLICY_WEIGHTS} is not a valid safetensors file ({e})") from None
    t_max = info.get("max_timesteps")
    if max_timesteps is not None and t_max != max_timesteps:
        raise ConfigError(f"the policy was made for {t_max} timesteps, the run has {max_timesteps}")
    try:
        if info["kind"] == "policy":
            net = PolicyCNN(info["in_channels"], t_max)
            net.load_state_dict(state)
            return PolicyRule(net, str(path))
        version = info.get("features_version", 1)
        if version == 1:  # one MLP over six features, no standardisation (seenn's first learned rules)
            net = ExitMLP(6, 16, 1)
            state = {k.replace("net.", "members.0.", 1): v for k, v in state.items()}
            state.update(mean=torch.zeros(6), std=torch.ones(6))
        else:
            net = ExitMLP(info["features"], info["hidden"], info["members"])
            if info["features"] != feature_count(t_max, info["num_classes"], version):
                raise KeyError("features")
        net.load_state_dict(state)
        return LearnedExitRule(net, info["threshold"], t_max, str(path), version)
    except (KeyError, RuntimeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]  # torch's mismatch report spans lines
        reason = lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
        raise CheckpointError(f"{p} does not hold a valid policy ({reason[:200]})") from None
