import json

import numpy as np
import pytest
import torch

from seenn.cli import main
from seenn.data import DATASETS, Dataset
from seenn.exits.policy import PolicyRule
from seenn.runtime.engine import EarlyExitRunner
from seenn.training.policy import expected_reward_loss, rewards, sample_weights, train_policy


def test_rewards_and_exact_expected_reward_on_a_hand_example():
    correct = torch.tensor([[True, True, False], [False, False, True]])
    r = rewards(correct, beta=3.0)
    assert r.tolist() == [[1.0, 0.5, -3.0], [-3.0, -3.0, 0.25]]
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]))
    w = torch.tensor([1.0, 2.0])
    # E1 = .5*1 + .25*.5 + .25*-3 = -0.125 ; E2 = .2*-3 + .2*-3 + .6*.25 = -1.05
    expected = -(1.0 * -0.125 + 2.0 * -1.05) / 3.0
    assert expected_reward_loss(logits, r, w).item() == pytest.approx(expected, rel=1e-6)


def test_authors_weighting():
    correct = torch.tensor([[True], [True], [True], [False]])  # step-1 accuracy r = 0.75 -> hard weight 3
    assert sample_weights(correct, "authors").tolist() == [1.0, 1.0, 1.0, 3.0]
    assert sample_weights(correct, "none").tolist() == [1.0] * 4


def synthetic_task(n=600, seed=0):
    """Images whose brightness says how many steps the 'SNN' needs: dark ones are right from step 1,
    bright ones only from step 3. The right action is known for every sample."""
    g = np.random.default_rng(seed)
    hard = g.random(n) < 0.5
    images = np.where(hard[:, None, None, None], 200, 30).astype(np.uint8) + g.integers(0, 20, (n, 1, 28, 28)).astype(np.uint8)
    labels = g.integers(0, 10, n)
    data = Dataset(DATASETS["mnist"], "train", images, labels)
    logits = torch.zeros(n, 3, 10)
    idx = torch.arange(n)
    wrong = (torch.from_numpy(labels) + 1) % 10
    first_right = torch.where(torch.from_numpy(hard), 2, 0)
    for t in range(3):
        right = t >= first_right
        target = torch.where(right, torch.from_numpy(labels), wrong)
        logits[idx, t, target] += 10.0 * (t + 1)
    return data, logits, torch.from_numpy(hard)


@pytest.mark.parametrize("objective", ["exact", "reinforce"])
def test_policy_learns_the_known_timestep(objective):
    data, logits, hard = synthetic_task()
    net, info = train_policy(data, logits, kind="policy", beta=2.0, weighting="none", objective=objective,
                             epochs=8 if objective == "exact" else 25, lr=3e-3, log=lambda m: None)
    with torch.no_grad():
        choice = net(data.normalize(data.images)).argmax(-1) + 1
    want = torch.where(hard, 3, 1)
    assert (choice == want).float().mean() > 0.95
    assert info["policy_macs"] > 0


def test_grouping_by_chosen_steps_equals_running_each_sample_alone():
    from seenn.models import build_model

    torch.manual_seed(0)
    model = build_model("convnet", in_channels=1, image_size=28, num_classes=10, width=0.25).eval()
    class ByBrightness(torch.nn.Module):  # a stand-in policy: brighter images get more steps
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([-(m - c).abs() for c in (-1.5, -0.5, 0.5, 1.5)], 1)

    x = torch.randn(24, 1, 28, 28) + torch.linspace(-2, 2, 24)[:, None, None, None]
    rule = PolicyRule(ByBrightness())
    runner = EarlyExitRunner(model, rule, 4)
    together = runner.predict(x)
    budget = rule.budget(x)
    assert len(set(budget.tolist())) > 1  # several groups
    assert torch.equal(together.exit_timestep, budget)
    for i in range(len(x)):
        alone = runner.predict(x[i:i + 1])
        assert alone.prediction.item() == together.prediction[i].item()
        assert alone.exit_timestep.item() == budget[i].item()


def test_policy_cli_round_trip(tiny_run, tiny_data, tmp_path, capsys):
    for kind in ("policy", "learned"):
        out = tmp_path / kind
        assert main(["policy", "train", str(tiny_run), "--data-dir", str(tiny_data), "--kind", kind, "--epochs", "1",
                     "--out", str(out)]) == 0
        info = json.loads((out / "policy.json").read_text())
        assert info["kind"] == kind and 1 <= info["validation"]["avg_timesteps"] <= 3
        capsys.readouterr()
        assert main(["eval", str(tiny_run), "--data-dir", str(tiny_data), "--exit", kind, "--policy", str(out),
                     "--json", "--limit", "30"]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["exit"]["rule"] == kind and sum(r["exit"]["exit_histogram"]) == 30
    assert main(["eval", str(tiny_run), "--data-dir", str(tiny_data), "--exit", "policy",
                 "--policy", str(tmp_path / "learned")]) == 2
    assert main(["eval", str(tiny_run), "--data-dir", str(tiny_data), "--exit", "policy"]) == 2
    capsys.readouterr()
    assert main(["policy", "train", str(tiny_run), "--data-dir", str(tiny_data), "--kind", "learned", "--members", "0",
                 "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_report_plots_policies(tiny_run, tiny_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pol = tmp_path / "pol"
    assert main(["policy", "train", str(tiny_run), "--data-dir", str(tiny_data), "--kind", "learned", "--epochs", "1",
                 "--out", str(pol)]) == 0
    assert main(["report", str(tiny_run), "--data-dir", str(tiny_data), "--limit", "40", "--out", str(tmp_path / "r"),
                 "--policies", str(pol)]) == 0
    assert (tmp_path / "r" / "index.html").is_file()


def test_beta_is_picked_on_validation(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "auto"
    assert main(["policy", "train", str(tiny_run), "--data-dir", str(tiny_data), "--beta", "1,10", "--epochs", "1",
                 "--out", str(out)]) == 0
    info = json.loads((out / "policy.json").read_text())
    assert info["beta"] in (1.0, 10.0) and info["beta_candidates"] == [1.0, 10.0]
    assert main(["policy", "train", str(tiny_run), "--data-dir", str(tiny_data), "--beta", "x",
                 "--out", str(tmp_path / "bad")]) == 2


def test_fewest_steps_threshold_and_operating_point_by_hand():
    from seenn.analysis.metrics import fewest_steps_threshold, operating_point, threshold_exits

    # two samples, label 0; sample 0 right from step 1, sample 1 wrong at step 1 and right (summed) from step 2
    step_logits = torch.tensor([[[2.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [3.0, 0.0]]])
    labels = torch.tensor([0, 0])
    scores = torch.tensor([[0.9, 0.95], [0.6, 0.9]])
    assert threshold_exits(scores, 0.5).tolist() == [1, 1]
    assert threshold_exits(scores, 0.7).tolist() == [1, 2]
    assert threshold_exits(scores, 0.99).tolist() == [2, 2]  # the last step always exits
    assert operating_point(step_logits, labels, scores, 0.5) == (0.5, 1.0)
    assert operating_point(step_logits, labels, scores, 0.7) == (1.0, 1.5)
    th = fewest_steps_threshold(step_logits, labels, scores, tolerance=0.0)
    assert operating_point(step_logits, labels, scores, th) == (1.0, 1.5)


def test_learned_rule_learns_a_per_class_bar_that_one_confidence_threshold_cannot():
    """Class-0 predictions are confident at step 1 but half of them flip later; class-1 predictions are unsure at step
    1 but never flip. SEENN-I must keep everything to step 2 to stay exact; the learned rule (which sees the predicted
    class) lets class 1 leave at step 1."""
    from seenn.analysis.metrics import fewest_steps_threshold, operating_point
    from seenn.exits import Confidence
    from seenn.exits.policy import LearnedExitRule
    from seenn.runtime.engine import posthoc_exits, score_matrix
    from seenn.training.policy import choose_learned_threshold

    def task(n, seed):
        g = torch.Generator().manual_seed(seed)
        cls = torch.randint(0, 2, (n,), generator=g)
        flips = (torch.rand(n, generator=g) < 0.5) & (cls == 0)
        labels = torch.where(flips, 2, cls)
        logits = torch.zeros(n, 2, 3)
        logits[:, 0, 0] = torch.where(cls == 0, 4.0, 0.0) + torch.rand(n, generator=g)
        logits[:, 0, 1] = torch.where(cls == 1, 1.0, 0.0) + 0.5 * torch.rand(n, generator=g)
        logits[torch.arange(n), 1, labels] += 12.0
        return logits, labels

    train_logits, train_labels = task(3000, 0)
    val_logits, val_labels = task(1000, 1)
    data = Dataset(DATASETS["mnist"], "train", np.zeros((3000, 1, 28, 28), np.uint8), train_labels.numpy())
    net, info = train_policy(data, train_logits, kind="learned", epochs=3, members=2, lr=3e-3, log=lambda m: None)
    assert info["features"] == 8 + 2 + 3
    rule = LearnedExitRule(net, choose_learned_threshold(net, val_logits, val_labels, tolerance=0.0), 2)
    res = posthoc_exits(val_logits, rule)
    assert (res.prediction == val_labels).all()  # exact, like full T
    learned_steps = res.exit_timestep.double().mean().item()
    conf = score_matrix(val_logits, Confidence(0.5))
    conf_steps = operating_point(val_logits, val_labels, conf,
                                 fewest_steps_threshold(val_logits, val_labels, conf, tolerance=0.0))[1]
    assert learned_steps < 1.6 and conf_steps > 1.9  # about half the samples (class 1) leave at step 1


def test_first_learned_rules_still_load(tmp_path):
    """Policies saved by seenn's first learned rule (one MLP over six features) keep working."""
    from safetensors.torch import save_file

    from seenn.exits.policy import LearnedExitRule, load_policy

    torch.manual_seed(0)
    old = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    save_file({f"net.{k}": v for k, v in old.state_dict().items()}, str(tmp_path / "policy.safetensors"))
    (tmp_path / "policy.json").write_text(json.dumps({"kind": "learned", "max_timesteps": 4, "threshold": 0.7}))
    rule = load_policy(tmp_path, 4)
    assert isinstance(rule, LearnedExitRule) and rule.version == 1
    logits = torch.randn(5, 10)
    from seenn.exits.policy import exit_features

    want = torch.sigmoid(old(exit_features(logits, 2, 4, version=1)).squeeze(-1))
    assert torch.allclose(rule.score(logits, 2), want)
