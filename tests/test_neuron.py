import math

import pytest
import torch

from seenn.errors import ConfigError
from seenn.nn.neuron import (IF, IF_PARAMS, LIF, LIF_PARAMS, NeuronParams, neuron_multistep, neuron_multistep_reference,
                             neuron_step)
from seenn.nn.surrogate import SURROGATES, make_surrogate


def run_steps(module, xs):
    module.reset()
    spikes, membranes = [], []
    for x in xs:
        spikes.append(module(torch.tensor([x])).item())
        membranes.append(module.v.item())
    return spikes, membranes


def test_lif_hand_computed_trajectory():
    # decay 0.5, threshold 1, hard reset to 0
    spikes, v = run_steps(LIF(), [0.6, 0.6, 0.6, 1.5, 0.2])
    assert spikes == [0, 0, 1, 1, 0]
    assert v == pytest.approx([0.6, 0.9, 0.0, 0.0, 0.2])


def test_if_soft_reset_hand_computed_trajectory():
    # no leak, threshold 1, reset by subtraction, starts at half the threshold
    spikes, v = run_steps(IF(), [0.3, 0.9, 0.1, 2.5])
    assert spikes == [0, 1, 0, 1]
    assert v == pytest.approx([0.8, 0.7, 0.8, 2.3])


def test_if_threshold_scales_trajectory():
    spikes, v = run_steps(IF(threshold=2.0), [0.6, 1.8, 0.2])
    # starts at 1.0: 1.6 -> 3.4 fires -> 1.4 -> 1.6
    assert spikes == [0, 1, 0]
    assert v == pytest.approx([1.6, 1.4, 1.6])


@pytest.mark.parametrize("params", [LIF_PARAMS, IF_PARAMS, NeuronParams(0.8, 0.7, True, 0.0)])
def test_single_and_multi_step_identical(params):
    torch.manual_seed(0)
    x = torch.randn(6, 5, 3, 4) * 1.5
    from seenn.nn.neuron import SpikingNeuron

    m = SpikingNeuron(params)
    single = torch.stack([m(x[t]) for t in range(6)])
    m.reset()
    m.timesteps = 6
    multi = m(x.reshape(30, 3, 4)).reshape(6, 5, 3, 4)
    assert torch.equal(single, multi)
    assert single.sum() > 0 and single.sum() < single.numel()  # the test exercises both outcomes


@pytest.mark.parametrize("params", [LIF_PARAMS, IF_PARAMS])
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_fused_gradient_matches_autograd_through_steps(params, surrogate):
    torch.manual_seed(1)
    sg = make_surrogate(surrogate)
    x = (torch.randn(5, 4, 7) * 1.2).requires_grad_()
    w = torch.randn(5, 4, 7)
    (neuron_multistep_reference(x, params, sg) * w).sum().backward()
    ref = x.grad.clone()
    x.grad = None
    out = neuron_multistep(x, params, sg)
    (out * w).sum().backward()
    assert torch.equal(out, neuron_multistep_reference(x.detach(), params, sg))
    assert torch.allclose(x.grad, ref, atol=1e-6)
    assert ref.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_gradient_is_derivative_of_its_primitive(name):
    sg = make_surrogate(name)
    z = torch.linspace(-1.3, 1.3, 261, dtype=torch.float64)
    z = z[(z.abs() - 0.5).abs() > 1e-3]  # avoid the kinks of the clipped primitives
    eps = 1e-6
    fd = (sg.primitive(z + eps) - sg.primitive(z - eps)) / (2 * eps)
    assert torch.allclose(sg.grad(z), fd, atol=1e-5)
    # the primitive runs from 0 to 1: the surrogate's area is 1, like the Heaviside step it replaces
    assert sg.primitive(torch.tensor(-5.0)).item() == pytest.approx(0.0)
    assert sg.primitive(torch.tensor(5.0)).item() == pytest.approx(1.0)


def test_spike_forward_is_heaviside_and_backward_is_surrogate():
    sg = make_surrogate("tanh")
    v = torch.tensor([0.2, 0.95, 1.0, 1.3], requires_grad=True)
    s, _ = neuron_step(v, torch.zeros(4), LIF_PARAMS, sg)
    assert s.tolist() == [0, 0, 1, 1]
    s.sum().backward()
    b = 3.0
    expected = [b / (2 * math.tanh(b / 2)) * (1 - math.tanh(b * (vi - 1)) ** 2) if abs(vi - 1) <= 0.5 else 0.0
                for vi in [0.2, 0.95, 1.0, 1.3]]
    assert v.grad.tolist() == pytest.approx(expected, rel=1e-5)


def test_select_keeps_rows_of_membrane():
    m = LIF()
    m(torch.tensor([[0.5], [0.7], [0.9]]))
    m.select(torch.tensor([0, 2]))
    assert m.v.flatten().tolist() == pytest.approx([0.5, 0.9])


def test_bad_neuron_arguments():
    with pytest.raises(ConfigError):
        make_surrogate("nope")
    with pytest.raises(ConfigError):
        LIF(threshold=0.0)
    with pytest.raises(ConfigError):
        LIF(decay=1.5)


def test_compiled_neuron_matches_eager():
    import seenn.nn.neuron as nmod

    torch.manual_seed(3)
    x = (torch.randn(4, 3, 5, 6) * 1.5).requires_grad_()
    w = torch.randn(4, 3, 5, 6)
    sg = make_surrogate("tanh")
    out_e = neuron_multistep(x, LIF_PARAMS, sg)
    (out_e * w).sum().backward()
    g_e = x.grad.clone()
    x.grad = None
    nmod.set_compile(True)
    try:
        out_c = neuron_multistep(x, LIF_PARAMS, sg)
        (out_c * w).sum().backward()
    finally:
        nmod.set_compile(False)
    if nmod._compile["failed"]:
        pytest.skip("torch.compile is not usable here (no C++ compiler)")
    assert torch.equal(out_c, out_e)
    assert torch.allclose(x.grad, g_e, atol=1e-5)


@pytest.mark.parametrize("make", [LIF, IF])
def test_deferred_reset_of_frozen_neurons_keeps_the_trajectory(make):
    """Inference copies (frozen) defer the reset after firing to the next step; spikes and membranes stay those
    of the plain neuron through batch compaction (select) and newcomers joining at rest (an input with more rows
    than the membrane: the extra rows behave exactly like a neuron started from rest)."""
    torch.manual_seed(5)
    plain, frozen, newcomer = make(), make(), make()
    frozen.freeze()
    keep = torch.tensor([0, 2, 4, 5])
    with torch.no_grad():
        for t in range(6):
            rows = 6 if t < 2 else 4 if t < 3 else 7
            x = torch.randn(rows, 3, 4) * 1.5
            s = plain(x)
            assert torch.equal(s, frozen(x))
            if t >= 3:  # rows 4-6 joined at step 3
                assert torch.equal(s[4:], newcomer(x[4:]))
            if t == 1:
                plain.select(keep)
                frozen.select(keep)
            assert torch.equal(plain.membrane(), frozen.membrane())
        assert frozen.__dict__.get("_pending") is None  # membrane() settled it
        frozen(torch.randn(7, 3, 4))
        assert frozen.__dict__.get("_pending") is not None
        frozen.reset()
        assert frozen.membrane() is None


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_surrogate_reads_the_potential_in_units_of_the_threshold(surrogate):
    """An IF neuron with threshold theta on input x trains as one with threshold 1 on x / theta (its input gradient
    is 1/theta of that), in the reference loop and in the fused BPTT alike; so BPTT through a converted network's
    membranes (thresholds 2 to 6) does not blow up."""
    sg = make_surrogate(surrogate)
    torch.manual_seed(0)
    theta = 3.7
    x = (torch.rand(12, 64) * 1.5 * theta).requires_grad_(True)
    unit = (x.detach() / theta).requires_grad_(True)
    scaled = NeuronParams(decay=1.0, threshold=theta, soft_reset=True, v_init=0.5)
    w = torch.randn(12, 64)
    grads = []
    for fn in (neuron_multistep_reference, neuron_multistep):
        for inp, p in ((x, scaled), (unit, IF_PARAMS)):
            inp.grad = None
            s = fn(inp, p, sg)
            (s * w).sum().backward()
            grads.append((s.detach(), inp.grad.clone()))
    (s_ref, g_ref), (s_unit, g_unit), (s_fused, g_fused), _ = grads
    assert torch.equal(s_ref, s_unit) and torch.equal(s_ref, s_fused)  # the same spikes
    assert s_ref.sum() > 0 and g_ref.abs().sum() > 0
    assert torch.allclose(g_ref * theta, g_unit, atol=1e-5, rtol=1e-4)
    assert torch.allclose(g_fused, g_ref, atol=1e-5, rtol=1e-4)
