import pytest
import torch
from conftest import mid_threshold, needs_dataset, real_data_dir

from seenn.data import load_dataset
from seenn.errors import DataError
from seenn.exits import Confidence, Entropy, Fixed
from seenn.models import build_model
from seenn.nn.fold import fold_batchnorm
from seenn.runs.store import load_run, pretrained_runs
from seenn.runtime.engine import EarlyExitRunner, posthoc_exits, score_matrix, step_logits
from seenn.runtime.inference import inference_model


def random_net(name="convnet", channels=1, size=28, seed=0, fold=True):
    """An untrained net whose BN makes it spike at a useful rate; BN folded (as the runner runs it) unless asked."""
    torch.manual_seed(seed)
    m = build_model(name, in_channels=channels, image_size=size, num_classes=10, width=0.25)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(0.3, 1.2)
    return fold_batchnorm(m) if fold else m.eval()


class StepCounter:
    """Counts the samples each model.step call computes."""

    def __init__(self, model):
        self.rows = []
        model.body.register_forward_hook(lambda mod, inp, out: self.rows.append(inp[0].shape[0]))


@pytest.mark.parametrize("name,channels,size", [("convnet", 1, 28), ("vgg", 3, 32), ("resnet19", 3, 32)])
def test_runner_equals_posthoc_and_computes_only_active_samples(name, channels, size):
    model = random_net(name, channels, size)
    x = torch.randn(40, channels, size, size) * 2
    t_max = 4
    with torch.no_grad():  # the runner's own arithmetic (the inference copy: packed convolutions round differently)
        logits = inference_model(model)(x, t_max).transpose(0, 1)
    # a threshold at the median confidence of some step before the last, chosen so samples leave at
    # several different steps
    scores = score_matrix(logits, Confidence(0.5))
    for t in range(t_max - 1):
        rule = Confidence(mid_threshold(scores[:, t]))
        expected = posthoc_exits(logits, rule)
        if len(set(expected.exit_timestep.tolist())) > 1:
            break
    counter = StepCounter(model)
    got = EarlyExitRunner(model, rule, t_max).predict(x)
    assert torch.equal(got.exit_timestep, expected.exit_timestep)
    assert torch.equal(got.prediction, expected.prediction)
    assert torch.allclose(got.score, expected.score, atol=1e-5)
    assert len(set(got.exit_timestep.tolist())) > 1
    # real savings: the network computed exactly sum(exit steps) sample-steps, not N * T
    assert sum(counter.rows) == int(got.exit_timestep.sum())
    assert sum(counter.rows) < 40 * t_max


def test_runner_leaves_no_state_behind_and_is_repeatable():
    model = random_net()
    x = torch.randn(8, 1, 28, 28)
    runner = EarlyExitRunner(model, Entropy(0.3), 3)
    a, b = runner.predict(x), runner.predict(x)
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.exit_timestep, b.exit_timestep)
    assert all(n.v is None for n in model.neurons())
    # one sample alone gets the same answer as inside a batch
    single = runner.predict(x[3:4])
    assert single.prediction.item() == a.prediction[3].item()
    assert single.exit_timestep.item() == a.exit_timestep[3].item()


def test_fixed_rule_runs_exactly_k_steps():
    model = random_net()
    res = EarlyExitRunner(model, Fixed(2), 4).predict(torch.randn(5, 1, 28, 28))
    assert res.exit_timestep.tolist() == [2] * 5


def test_runner_rejects_bad_input():
    runner = EarlyExitRunner(random_net(), Confidence(0.9), 2)
    bad = torch.randn(2, 1, 28, 28)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        runner.predict(bad)
    bad[0, 0, 0, 0] = float("-inf")
    with pytest.raises(DataError, match="Inf"):
        runner.predict(bad[:1])  # the batch-1 path checks too
    huge = torch.full((1, 1, 28, 28), 3e38)  # finite, though its sum is not: accepted
    assert runner.predict(huge).prediction.shape == (1,)
    with pytest.raises(DataError, match="image batch"):
        runner.predict(torch.randn(2, 28, 28))


def _shipped(dataset):
    runs = [r for r in pretrained_runs() if r["dataset"] == dataset]
    return pytest.mark.skipif(not runs, reason=f"no shipped {dataset} run")


@needs_dataset("fashion-mnist")
@_shipped("fashion-mnist")
def test_runner_matches_posthoc_on_shipped_checkpoint():
    run = [r for r in pretrained_runs() if r["dataset"] == "fashion-mnist"][0]
    model, config = load_run(run["name"])
    data = load_dataset("fashion-mnist", "test", data_dir=real_data_dir(), limit=2000)
    t_max = config["max_timesteps"]
    logits = step_logits(inference_model(model), data, t_max)  # the model seenn eval and the runner run
    for rule in (Confidence(0.9), Confidence(0.99), Entropy(0.8)):
        expected = posthoc_exits(logits, rule)
        got = EarlyExitRunner(model, rule, t_max).predict_dataset(data, batch_size=256)
        assert torch.equal(got.prediction, expected.prediction)
        assert torch.equal(got.exit_timestep, expected.exit_timestep)


@pytest.mark.parametrize("slots", [1, 7, 16, 64])
def test_streaming_equals_batch_prediction(slots):
    model = random_net()
    x = torch.randn(50, 1, 28, 28) * 2
    with torch.no_grad():
        logits = model(x, 4).transpose(0, 1)
    rule = Confidence(mid_threshold(score_matrix(logits, Confidence(0.5))[:, 0]))
    expected = posthoc_exits(logits, rule)
    counter = StepCounter(model)
    got = EarlyExitRunner(model, rule, 4).stream([x[:13], x[13:14], x[14:]], slots=slots)
    assert torch.equal(got.prediction, expected.prediction)
    assert torch.equal(got.exit_timestep, expected.exit_timestep)
    assert sum(counter.rows) == int(got.exit_timestep.sum())
    assert max(counter.rows) <= slots


@pytest.mark.parametrize("name,channels,size", [("convnet", 1, 28), ("resnet19", 3, 32)])
def test_batchnorm_folding_keeps_outputs(name, channels, size):
    from seenn.nn.fold import fold_batchnorm

    model = random_net(name, channels, size, fold=False)
    for mod in model.modules():  # non-trivial running statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(16, channels, size, size)
    with torch.no_grad():
        a, b = model.encode(x), folded.encode(x)
        assert torch.allclose(a, b, atol=1e-5)
        out_a, out_b = model(x, 3), folded(x, 3)
    # spikes may flip where a membrane sits within rounding of the threshold; outputs agree almost everywhere
    assert (out_a - out_b).abs().max() < 1e-3 or (out_a.argmax(-1) == out_b.argmax(-1)).float().mean() > 0.95


@pytest.mark.parametrize("kind", [Confidence, Entropy, Fixed])
def test_single_sample_path_equals_posthoc(kind):
    """predict() on one sample takes a path without batch bookkeeping; it must decide exactly like the rest."""
    model = random_net()
    x = torch.randn(24, 1, 28, 28) * 2
    with torch.no_grad():
        logits = model(x, 4).transpose(0, 1)
    rule = Fixed(3) if kind is Fixed else kind(mid_threshold(score_matrix(logits, kind(0.5))[:, 1]))
    expected = posthoc_exits(logits, rule)
    runner = EarlyExitRunner(model, rule, 4)
    got = [runner.predict(x[i:i + 1]) for i in range(len(x))]
    assert torch.equal(torch.cat([g.prediction for g in got]), expected.prediction)
    assert torch.equal(torch.cat([g.exit_timestep for g in got]), expected.exit_timestep)
    assert torch.allclose(torch.cat([g.score for g in got]), expected.score)
    assert len(set(expected.exit_timestep.tolist())) > 1 or isinstance(rule, Fixed)  # the rule really varies


@pytest.mark.parametrize("size", [(10, 8), (7, 7), (8, 5)])
def test_fast_pool_backward_equals_avg_pool_backward(size):
    from seenn.nn.fold import FastAvgPool2d

    torch.manual_seed(1)
    x = torch.randn(4, 3, *size, requires_grad=True)
    g = torch.randn(4, 3, size[0] // 2, size[1] // 2)
    FastAvgPool2d(2)(x).backward(g)
    fast = x.grad.clone()
    x.grad = None
    torch.nn.functional.avg_pool2d(x, 2).backward(g)
    # a quarter of each output gradient on each of its 4 inputs, exactly; nothing for a row / column left out
    assert torch.equal(fast, x.grad)


def test_fast_pool_equals_avg_pool():
    from seenn.nn.fold import FastAvgPool2d
    from seenn.runtime.inference import inference_model

    torch.manual_seed(0)
    pool, ref = FastAvgPool2d(2), torch.nn.AvgPool2d(2)
    spikes = (torch.rand(3, 5, 14, 12) > 0.7).float()
    assert torch.equal(pool(spikes), ref(spikes))  # sums of spikes are exact
    x = torch.randn(3, 5, 14, 12)
    assert torch.allclose(pool(x), ref(x), atol=1e-6)
    odd = torch.randn(2, 3, 7, 8)  # floor mode: the last row is left out, as avg_pool2d does
    assert torch.allclose(pool(odd), ref(odd), atol=1e-6)
    odd_spikes = (torch.rand(2, 3, 7, 7) > 0.7).float()
    assert torch.equal(pool(odd_spikes), ref(odd_spikes))
    strided = torch.randn(2, 3, 8, 6).transpose(2, 3)
    assert torch.equal(pool(strided), ref(strided))  # not contiguous: the ordinary pool
    model = random_net(fold=False)
    assert any(isinstance(m, FastAvgPool2d) for m in model.modules())  # seenn's nets are built with it
    for name, m in list(model.body.named_children()):  # a net with plain pools gets them swapped in a copy
        if isinstance(m, FastAvgPool2d):
            setattr(model.body, name, torch.nn.AvgPool2d(2))
    fast = inference_model(model)
    assert any(isinstance(m, FastAvgPool2d) for m in fast.modules())
    assert not any(isinstance(m, FastAvgPool2d) for m in model.modules())  # the original is untouched
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(fast(x, 4), fold_batchnorm(model)(x, 4), atol=1e-5)


@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_compiled_single_sample_path_equals_eager(neuron):
    """compile=True puts the batch-1 step through torch.compile; decisions and outputs stay those of the eager path
    (LIF with hard reset from rest, and IF with soft reset and a half-threshold start, as conversion makes them)."""
    from seenn.nn.neuron import IF, SpikingNeuron

    model = random_net()
    if neuron == "if":
        for name, mod in list(model.body.named_children()):
            if isinstance(mod, SpikingNeuron):
                setattr(model.body, name, IF(threshold=0.8))
    x = torch.randn(12, 1, 28, 28) * 2
    with torch.no_grad():
        logits = model(x, 4).transpose(0, 1)
    rule = Confidence(mid_threshold(score_matrix(logits, Confidence(0.5))[:, 1]))
    eager = EarlyExitRunner(model, rule, 4)
    compiled = EarlyExitRunner(model, rule, 4, compile=True)
    a = [eager.predict(x[i:i + 1]) for i in range(len(x))]
    b = [compiled.predict(x[i:i + 1]) for i in range(len(x))]
    if compiled._single_step.failed:
        pytest.skip("torch.compile is not usable here (no C++ compiler)")
    assert [r.exit_timestep.item() for r in a] == [r.exit_timestep.item() for r in b]
    assert [r.prediction.item() for r in a] == [r.prediction.item() for r in b]
    assert torch.allclose(torch.cat([r.logits for r in a]), torch.cat([r.logits for r in b]), atol=1e-4)
    assert len({r.exit_timestep.item() for r in a}) > 1
