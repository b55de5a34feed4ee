import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seenn.analysis.metrics import (accuracy_per_timestep, correct_per_timestep, exit_histogram, exit_summary,
                                    ideal_timesteps, oracle_timesteps)
from seenn.errors import ConfigError
from seenn.exits import Confidence, Entropy, Fixed, make_rule, normalized_certainty
from seenn.runtime.engine import posthoc_exits
from seenn.training.losses import tet_loss

# 3 samples, 3 steps, 2 classes: each step's own logits
STEP_LOGITS = torch.tensor([
    [[2.0, 0.0], [0.0, 1.0], [0.0, 1.5]],  # label 0: summed [2,0] [2,1] [2,2.5] -> right, right, wrong
    [[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]],  # label 1: [1,0] [1,2] [1,3]         -> wrong, right, right
    [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]],  # label 0: always wrong
])
LABELS = torch.tensor([0, 1, 0])


def test_accuracy_per_timestep_uses_summed_logits():
    assert accuracy_per_timestep(STEP_LOGITS, LABELS) == pytest.approx([1 / 3, 2 / 3, 1 / 3])


def test_oracle_and_ideal_timesteps():
    correct = correct_per_timestep(STEP_LOGITS, LABELS)
    assert oracle_timesteps(correct).tolist() == [1, 2, 3]  # never correct -> T
    # only sample 1 is right at full T; it stays right from step 2; the others leave at step 1
    assert ideal_timesteps(correct).tolist() == [1, 2, 1]


def test_ideal_needs_staying_correct():
    correct = torch.tensor([[True, False, True, True], [False, True, False, True], [True, True, True, True]])
    assert ideal_timesteps(correct).tolist() == [3, 4, 1]


def test_exit_histogram_and_summary():
    t = torch.tensor([1, 1, 3, 2, 1])
    assert exit_histogram(t, 4) == [3, 1, 1, 0]
    s = exit_summary(torch.tensor([0, 1, 1]), torch.tensor([1, 2, 2]), torch.tensor([0, 0, 1]), 3,
                     full_prediction=torch.tensor([0, 0, 0]))
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["avg_timesteps"] == pytest.approx(5 / 3)
    assert s["exit_histogram"] == [1, 2, 0]
    assert s["false_exits"] == 1  # sample 1: right at full T, wrong at its exit
    assert s["rescued"] == 1  # sample 2: wrong at full T, right at its exit


def test_confidence_rule_posthoc_on_hand_logits():
    # softmax max after each step: s0: .881 .731 .622 ; s1: .731 .731 .881 ; s2: .731 .881 .953
    res = posthoc_exits(STEP_LOGITS, Confidence(0.8))
    assert res.exit_timestep.tolist() == [1, 3, 2]
    assert res.prediction.tolist() == [0, 1, 1]
    assert res.score[0].item() == pytest.approx(1 / (1 + math.exp(-2)))


def test_threshold_one_runs_to_the_end_and_zero_exits_at_once():
    assert posthoc_exits(STEP_LOGITS, Confidence(1.0)).exit_timestep.tolist() == [3, 3, 3]
    assert posthoc_exits(STEP_LOGITS, Confidence(0.0)).exit_timestep.tolist() == [1, 1, 1]


def test_fixed_rule():
    res = posthoc_exits(STEP_LOGITS, Fixed(2))
    assert res.exit_timestep.tolist() == [2, 2, 2]
    assert res.prediction.tolist() == [0, 1, 1]


def test_entropy_score():
    assert normalized_certainty(torch.zeros(1, 10)).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_certainty(torch.tensor([[100.0, 0, 0]])).item() == pytest.approx(1.0, abs=1e-6)
    rule = Entropy(0.5)
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    h = -(p * p.log()).sum() / math.log(2)
    assert rule.score(torch.tensor([[2.0, 0.0]]), 1).item() == pytest.approx(1 - h.item(), rel=1e-5)


def test_bad_rule_arguments():
    for kw in ({"threshold": 1.5}, {"threshold": -0.1}, {"threshold": float("nan")}, {}):
        with pytest.raises(ConfigError):
            make_rule("confidence", **kw)
    with pytest.raises(ConfigError):
        make_rule("fixed", timesteps=0)
    with pytest.raises(ConfigError):
        make_rule("bogus", threshold=0.5)


def test_tet_loss_hand_example():
    # T=2, B=1, K=2, label 0; O_1 = [0, 0], O_2 = [1, 0]
    out = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]]])
    y = torch.tensor([0])
    ce = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    mse = (1 + 1 + 0 + 1) / 4  # (O - phi)^2 with phi = 1
    lam = 1e-3
    assert tet_loss(out, y, lam, 1.0).item() == pytest.approx((1 - lam) * ce + lam * mse, rel=1e-6)
    assert tet_loss(out, y, 0.0).item() == pytest.approx(ce, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20), t=st.integers(1, 6), k=st.integers(2, 5), th=st.floats(0, 1), seed=st.integers(0, 9999))
def test_exit_invariants(n, t, k, th, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, k, generator=g) * 3
    labels = torch.randint(0, k, (n,), generator=g)
    res = posthoc_exits(logits, Confidence(th))
    s = exit_summary(res.prediction, res.exit_timestep, labels, t)
    assert 1 <= s["avg_timesteps"] <= t
    assert sum(s["exit_histogram"]) == n
    correct = correct_per_timestep(logits, labels)
    oracle = oracle_timesteps(correct)
    assert ((1 <= oracle) & (oracle <= t)).all()
    # the ideal limit never needs more steps than T, keeps full-T accuracy, and the oracle is never slower
    ideal = ideal_timesteps(correct)
    assert ((1 <= ideal) & (ideal <= t)).all()
    assert (oracle[correct[:, -1]] <= ideal[correct[:, -1]]).all()


def test_exit_aware_loss_hand_example():
    from seenn.training.losses import exit_aware_loss

    out = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]]])  # T=2, B=1; accumulated: [0,0] then [1,0]
    y = torch.tensor([0])
    ce1, ce2 = math.log(2), math.log(1 + math.exp(-1))
    assert exit_aware_loss(out, y).item() == pytest.approx((1.0 * ce1 + 0.5 * ce2) / 1.5, rel=1e-6)
