"""Training SEENN-II's policy and the learned exit rule (the networks and rules themselves: :mod:`seenn.exits.policy`).

Both train with the SNN frozen, on its step logits over the training split: SEENN-II against the reward
``2^-(t-1)`` when right and ``-beta`` when wrong (the exact expectation over the T actions, or REINFORCE with a
batch-mean baseline), the learned rule supervised to stop where the prediction equals the full-T one and stays so.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis.energy import conv_macs
from ..analysis.metrics import fewest_steps_threshold
from ..data import Dataset
from ..errors import ConfigError
from ..exits.policy import ExitMLP, LearnedExitRule, PolicyCNN, PolicyRule, exit_features
from ..runtime.engine import score_matrix

# ------------------------------------------------------------------------------------------- objectives


def rewards(correct: torch.Tensor, beta: float) -> torch.Tensor:
    """``[N, T]``: 2^-(t-1) where the SNN is right after t steps, -beta where it is wrong."""
    t = torch.arange(correct.shape[1], dtype=torch.float32)
    return torch.where(correct, 2.0 ** (-t), torch.full_like(t, -beta).expand_as(correct))


def sample_weights(correct: torch.Tensor, weighting: str) -> torch.Tensor:
    if weighting == "none":
        return torch.ones(correct.shape[0])
    if weighting != "authors":
        raise ConfigError(f"weighting must be authors or none, got {weighting!r}", param="weighting")
    r = correct[:, 0].float().mean().item()
    hard = r / (1 - r) if r < 1 else 1.0
    return torch.where(correct[:, 0], torch.ones(()), torch.full((), hard))


def expected_reward_loss(logits: torch.Tensor, reward: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Minus the weighted mean over samples of sum_t pi(t | x) r(t): the exact expectation over the T actions."""
    pi = torch.softmax(logits, dim=-1)
    return -(weight * (pi * reward).sum(-1)).sum() / weight.sum()


def reinforce_loss(logits: torch.Tensor, reward: torch.Tensor, weight: torch.Tensor, generator=None) -> torch.Tensor:
    """REINFORCE with a batch-mean baseline: one sampled action per sample."""
    pi = torch.softmax(logits, dim=-1)
    a = torch.multinomial(pi.detach(), 1, generator=generator).squeeze(1)
    r = reward.gather(1, a[:, None]).squeeze(1)
    adv = r - (weight * r).sum() / weight.sum()
    logp = torch.log_softmax(logits, -1).gather(1, a[:, None]).squeeze(1)
    return -(weight * adv * logp).sum() / weight.sum()


# ------------------------------------------------------------------------------------------- training


def policy_net_cost(net: nn.Module, in_shape) -> int:
    """Multiply-accumulates of one policy pass on one sample (convs and linear layers)."""

    shapes = {}
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, tuple(i[0].shape[1:])))
             for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, *in_shape))
    for h in hooks:
        h.remove()
    return sum(conv_macs(m, s) if isinstance(m, nn.Conv2d) else m.in_features * m.out_features
               for m, s in shapes.items())


def check_policy_args(*, kind: str, objective: str, epochs: int, lr: float, beta: float, hidden: int,
                      members: int) -> None:
    """The training arguments' ConfigError, if any (the CLI asks before its long pass over the training split)."""
    if kind not in ("policy", "learned"):
        raise ConfigError(f"kind must be policy or learned, got {kind!r}", param="kind")
    if objective not in ("exact", "reinforce"):
        raise ConfigError(f"objective must be exact or reinforce, got {objective!r}", param="objective")
    if epochs < 1 or not lr > 0 or beta < 0 or hidden < 1 or members < 1:
        raise ConfigError("--epochs, --hidden and --members must be >= 1, --lr > 0 and --beta >= 0")


def train_policy(data: Dataset, step_logits: torch.Tensor, *, kind: str = "policy", beta: float = 2.0,
                 weighting: str = "authors", objective: str = "exact", epochs: int = 5, lr: float = 1e-3,
                 batch_size: int = 128, seed: int = 0, hidden: int = 32, members: int = 5,
                 log=print) -> tuple[nn.Module, dict]:
    """Train a policy (SEENN-II) or a learned exit rule on the SNN's step logits for ``data`` (frozen SNN)."""
    check_policy_args(kind=kind, objective=objective, epochs=epochs, lr=lr, beta=beta, hidden=hidden, members=members)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n, t_max, _ = step_logits.shape
    summed = step_logits.cumsum(1)
    pred = summed.argmax(2)
    correct = pred == data.labels[:, None]
    info = {"kind": kind, "max_timesteps": t_max, "seed": seed, "epochs": epochs, "lr": lr,
            "training_samples": n, "step1_train_accuracy": correct[:, 0].float().mean().item()}
    t0 = time.time()
    if kind == "policy":
        net = PolicyCNN(data.info.channels, t_max)
        reward = rewards(correct, beta)
        weight = sample_weights(correct, weighting)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for epoch in range(1, epochs + 1):
            net.train()
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                logits = net(data.normalize(data.images[idx]))
                if objective == "exact":
                    loss = expected_reward_loss(logits, reward[idx], weight[idx])
                else:
                    loss = reinforce_loss(logits, reward[idx], weight[idx], gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            log(f"policy epoch {epoch}: loss {total / n:.4f}")
        info.update({"beta": beta, "weighting": weighting, "objective": objective, "in_channels": data.info.channels,
                     "policy_macs": policy_net_cost(net, tuple(data.images.shape[1:]))})
    else:
        # target: stopping at t keeps the full-T decision from t on
        same = pred == pred[:, -1:]
        stays = same.flip(1).cumprod(1).flip(1).bool()
        feats = torch.cat([exit_features(summed[:, t], t + 1, t_max) for t in range(t_max)])
        target = torch.cat([stays[:, t] for t in range(t_max)]).float()
        net = ExitMLP(feats.shape[1], hidden, members)
        net.mean.copy_(feats.mean(0))
        net.std.copy_(feats.std(0).clamp_min(1e-3))
        m = len(target)
        for k in range(members):  # members differ by their initial weights and sample order
            torch.manual_seed(seed + k)
            opt = torch.optim.Adam(net.members[k].parameters(), lr=lr)
            for epoch in range(1, epochs + 1):
                order = torch.randperm(m, generator=gen)
                total = 0.0
                for i in range(0, m, 512):
                    idx = order[i:i + 512]
                    loss = F.binary_cross_entropy_with_logits(net(feats[idx], k), target[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                log(f"learned-exit member {k + 1}/{members} epoch {epoch}: loss {total / m:.4f}")
        info.update({"features_version": 2, "features": feats.shape[1], "hidden": hidden, "members": members,
                     "num_classes": step_logits.shape[2], "target": "stops where the prediction equals the full-T "
                                                                   "prediction and stays so"})
    info["train_seconds"] = time.time() - t0
    return net.eval(), info


def choose_learned_threshold(net: ExitMLP, step_logits: torch.Tensor, labels: torch.Tensor,
                             tolerance: float = 0.001) -> float:
    """The threshold with the fewest average timesteps whose accuracy stays within ``tolerance`` of full T."""

    scores = score_matrix(step_logits, LearnedExitRule(net, 0.5, step_logits.shape[1]))
    return fewest_steps_threshold(step_logits, labels, scores, tolerance)


def train_and_choose(train_data, train_logits, val, *, kind: str, betas, max_accuracy_drop: float, out=None,
                     log=None, **train_kw):
    """SEENN-II or the learned rule trained on a frozen SNN's training-split step logits, chosen on validation
    (``val``: a :class:`seenn.analysis.evaluate.Evaluation` of the validation split): with several ``betas`` (SEENN-II),
    the one with the fewest validation timesteps whose accuracy is within ``max_accuracy_drop`` of full T (else
    the most accurate); the learned rule's threshold chosen on validation. Returns ``(net, info, rule)``."""
    full_val = val.header()["accuracy_per_timestep"][-1]
    candidates = []
    for beta in betas if kind == "policy" else [betas[0]]:
        net, info = train_policy(train_data, train_logits, kind=kind, beta=beta, log=log, **train_kw)
        if len(betas) > 1 and kind == "policy":
            e = val.summarize({}, val.run(PolicyRule(net)))
            ok = e["accuracy"] >= full_val - max_accuracy_drop - 1e-12
            candidates.append(((not ok, e["avg_timesteps"] if ok else -e["accuracy"]), beta, net, info))
            if log is not None:
                log(f"beta {beta:g}: validation accuracy {e['accuracy']:.2%} at {e['avg_timesteps']:.3f} steps")
        else:
            candidates.append(((False, 0.0), beta, net, info))
    _, beta, net, info = min(candidates, key=lambda c: c[0])
    if len(candidates) > 1:
        info["beta_candidates"] = list(betas)
        info["beta_rule"] = f"fewest validation timesteps within {max_accuracy_drop:g} of full T"
    if kind == "learned":
        info["threshold"] = choose_learned_threshold(net, val.step_logits, val.labels)
        rule = LearnedExitRule(net, info["threshold"], val.max_timesteps, out)
    else:
        rule = PolicyRule(net, out)
    return net, info, rule
