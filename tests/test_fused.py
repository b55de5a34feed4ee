"""Training's fused multi-step pass (batch norm -> neuron -> pool in one pass, the static first input) and the
inference rewrites (oneDNN-packed convolutions, channels-last pools): each equals the plain computation."""

import copy

import pytest
import torch
from torch import nn

from seenn.models import build_model
from seenn.nn.fold import FastAvgPool2d, PackedConv2d
from seenn.runtime.inference import inference_model


def _net(name="convnet", channels=1, size=28):
    torch.manual_seed(0)
    m = build_model(name, in_channels=channels, image_size=size, num_classes=10, width=0.25).train()
    for mod in m.modules():  # spiking at a useful rate from the start
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.8, 1.6)
            mod.bias.data.uniform_(0.2, 0.9)
    return m


def _train_pass(model, x, y, timesteps=3):
    out = model(x, timesteps)
    loss = nn.functional.cross_entropy(out.flatten(0, 1), y.repeat(timesteps))
    model.zero_grad(set_to_none=True)
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _compare(fused, plain, x, y, timesteps=3):
    out_f, g_f = _train_pass(fused, x, y, timesteps)
    out_p, g_p = _train_pass(plain, x, y, timesteps)
    assert torch.allclose(out_f, out_p, atol=1e-5)
    assert out_p.abs().sum() > 0
    for name in g_p:
        assert torch.allclose(g_f[name], g_p[name], atol=1e-5, rtol=1e-4), name
        assert g_p[name].abs().sum() > 0, name  # every layer learns: the gradient reaches the stem
    for a, b in zip(fused.modules(), plain.modules()):
        if isinstance(a, nn.BatchNorm2d):  # the running statistics move alike
            assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
            assert torch.allclose(a.running_var, b.running_var, atol=1e-5)
            assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1


@pytest.mark.parametrize("name,channels,size,timesteps", [("convnet", 1, 28, 3), ("resnet19", 3, 16, 3),
                                                         ("convnet", 1, 28, 1)])
def test_fused_training_pass_equals_module_by_module(name, channels, size, timesteps):
    """Eagerly: the neuron with its pool and the static first input (28x28: the last pool, 7 -> 3, is odd, in floor
    mode; ResNet: blocks run as they are, only the first neuron is fused)."""
    fused = _net(name, channels, size)
    plain = copy.deepcopy(fused)
    plain.fuse = False
    torch.manual_seed(1)
    x, y = torch.randn(6, channels, size, size), torch.randint(0, 10, (6,))
    _compare(fused, plain, x, y, timesteps)


def test_compiled_fused_training_pass_with_batchnorm_equals_module_by_module():
    """With torch.compile the batch norms go into the neurons' passes too (the stem's over the batch, the others
    over all steps)."""
    import seenn.nn.neuron as nmod

    fused = _net("convnet", 1, 12)  # 12 -> 6 -> 3 -> 1: the last pool odd
    plain = copy.deepcopy(fused)
    plain.fuse = False
    torch.manual_seed(2)
    x, y = torch.randn(5, 1, 12, 12), torch.randint(0, 10, (5,))
    nmod.set_compile(True)
    try:
        _compare(fused, plain, x, y)
    finally:
        nmod.set_compile(False)
    if nmod._compile["failed"]:
        pytest.skip("torch.compile is not usable here (no C++ compiler)")


def test_bn_neuron_handles_eval_mode_and_no_affine():
    """A norm in eval mode is not fused (it normalises with its running statistics); one without affine weights
    is, with weight 1 and bias 0."""
    from seenn.nn.neuron import LIF_PARAMS, bn_neuron_multistep
    from seenn.nn.surrogate import make_surrogate

    torch.manual_seed(3)
    bn = nn.BatchNorm2d(4, affine=False)
    y = torch.randn(3 * 2, 4, 7, 6, requires_grad=True)  # odd height: floor-mode pool
    s = bn_neuron_multistep(y, bn, LIF_PARAMS, make_surrogate("tanh"), 3, False, True)
    ref_bn = nn.BatchNorm2d(4, affine=False)
    z = ref_bn(y).reshape(3, 2, 4, 7, 6)
    from seenn.nn.neuron import neuron_multistep_reference, pool2x2

    ref = torch.stack([pool2x2(t) for t in neuron_multistep_reference(z, LIF_PARAMS, make_surrogate("tanh"))])
    assert s.shape == (3, 2, 4, 3, 3) and torch.allclose(s, ref)
    assert torch.equal(pool2x2(z[0].detach()), nn.functional.avg_pool2d(z[0].detach(), 2)) or torch.allclose(
        pool2x2(z[0].detach()), nn.functional.avg_pool2d(z[0].detach(), 2), atol=1e-6)
    assert torch.allclose(bn.running_mean, ref_bn.running_mean) and torch.allclose(bn.running_var, ref_bn.running_var)
    model = _net("convnet", 1, 16).eval()
    with torch.enable_grad():
        out = model(torch.randn(2, 1, 16, 16), 2, multistep=True)  # eval-mode norms, gradients on: still runs
    assert out.shape == (2, 2, 10)


@pytest.mark.parametrize("stride,groups,bias", [(1, 1, True), (2, 1, False), (1, 2, True)])
def test_packed_conv_equals_conv2d(stride, groups, bias):
    torch.manual_seed(4)
    conv = nn.Conv2d(16, 24, 3, stride=stride, padding=1, groups=groups, bias=bias).eval()
    packed = PackedConv2d.from_conv(conv)
    for batch in (1, 5):
        x = torch.randn(batch, 16, 9, 9)
        with torch.no_grad():
            assert torch.allclose(packed(x), conv(x), atol=1e-5)
        if torch.backends.mkldnn.is_available():
            assert packed.__dict__["_packed"], "the oneDNN path ran (not the fallback)"
    x = torch.randn(2, 16, 9, 9, requires_grad=True)
    packed(x).sum().backward()  # gradients wanted: the ordinary convolution, which has them
    assert x.grad is not None and packed.weight.grad is not None
    with torch.no_grad():
        conv.weight.mul_(2.0)  # shared parameter changed in place: repacked
        assert torch.allclose(packed(x), conv(x), atol=1e-5)
    clone = copy.deepcopy(packed)  # copies repack on first use
    with torch.no_grad():
        assert torch.allclose(clone(x), conv(x), atol=1e-5)
    with pytest.raises(RuntimeError):  # a wrong input still fails as the convolution would
        packed(torch.randn(2, 3, 9, 9))


def test_inference_model_packs_convs_and_pools_channels_last():
    model = _net("convnet", 1, 28).eval()
    fast = inference_model(model)
    assert any(isinstance(m, PackedConv2d) for m in fast.modules())
    assert not any(isinstance(m, PackedConv2d) for m in model.modules())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        a, b = fast(x, 3), inference_model(model)(x, 3, multistep=True)
    assert (a - b).abs().max() < 1e-3 or (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.95
    spikes = (torch.rand(3, 5, 8, 6) > 0.6).float().contiguous(memory_format=torch.channels_last)
    pooled = FastAvgPool2d(2)(spikes)
    assert torch.equal(pooled, nn.functional.avg_pool2d(spikes.contiguous(), 2))


def test_allocator_tuning_can_be_turned_off(monkeypatch):
    from seenn.io.alloc import tune_allocator

    monkeypatch.setenv("SEENN_TUNE_ALLOC", "0")
    assert tune_allocator() is False
    monkeypatch.delenv("SEENN_TUNE_ALLOC")
    assert isinstance(tune_allocator(), bool)  # True on glibc; never an error elsewhere
