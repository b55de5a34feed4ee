"""The fast recipe: each piece does what it says, the run records it, and it converts and resumes like any run."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from seenn.cli import main
from seenn.data import Dataset, dataset_info
from seenn.data.augment import shift_flip
from seenn.models import build_model
from seenn.training.config import TrainConfig
from seenn.training.recipe import FAST, Lookahead, init_dirac, init_whitening, lr_factor, param_groups, time_views


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """CIFAR-10's binary layout, 5 x 40 training and 40 test records: class k is a bright square in one of ten
    places, in a colour of its own, on noise."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(path, n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        imgs = rng.integers(0, 70, (n, 3, 32, 32)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = 3 * (k // 5) * 4 + 2, 6 * (k % 5) + 1
            imgs[i, k % 3, r:r + 8, c:c + 5] = 250
        path.write_bytes(np.concatenate([labels[:, None], imgs.reshape(n, -1)], 1).tobytes())

    for i in range(1, 6):
        batch(folder / f"data_batch_{i}.bin", 40)
    batch(folder / "test_batch.bin", 40)
    return root


def test_whitening_layer_whitens_the_patches_it_was_set_from():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.5, 0.2], [0.0, 0.0, 0.3]])
    images = torch.einsum("ij,njhw->nihw", mix, torch.randn(200, 3, 8, 8, generator=g))  # correlated channels
    conv = nn.Conv2d(3, 24, 2, bias=True)
    init_whitening(conv, images, eps=0.0)
    out = conv(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.double), atol=1e-3)
    assert torch.equal(conv.weight[12:], -conv.weight[:12]) and not conv.bias.any()
    with pytest.raises(Exception, match="24 channels"):
        init_whitening(nn.Conv2d(3, 16, 2), images)
    # a larger eps damps the low-variance directions much more than the leading one
    damped = nn.Conv2d(3, 24, 2)
    init_whitening(damped, images, eps=0.5)
    ratio = damped.weight[:12].flatten(1).norm(dim=1) / conv.weight[:12].flatten(1).norm(dim=1)
    assert ratio[-1] < 0.5 * ratio[0] and ratio[0] > 0.7


def test_dirac_start_passes_channels_through():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    init_dirac(conv)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(conv(x)[:, :4], x)


def test_schedule_warms_up_then_decays_linearly():
    cfg = TrainConfig(schedule="linear", warmup=0.25, final_lr=0.07)
    f = [lr_factor(cfg, s, 100) for s in range(101)]
    assert f[0] == pytest.approx(0.2) and f[25] == pytest.approx(1.0) and f[100] == pytest.approx(0.07)
    assert all(a < b for a, b in zip(f[:25], f[1:26])) and all(a > b for a, b in zip(f[25:100], f[26:]))
    cos = TrainConfig()
    assert lr_factor(cos, 0, 10) == 1.0 and lr_factor(cos, 10, 10) == pytest.approx(0.0)


def test_decoupled_groups_decay_every_weight_by_the_same_share_whatever_the_lr():
    model = build_model("airbench", in_channels=3, image_size=32, num_classes=10, neuron="qcfs", quant_levels=4)
    shares = []
    for lr in (1.0, 11.5):
        cfg = TrainConfig(model="airbench", batch_size=512, lr=lr, momentum=0.85, weight_decay=0.0153,
                          decoupled=True, bias_lr=64.0, head_scale=1 / 9)
        groups = {g["name"]: g for g in param_groups(model, cfg)}
        gain = 1 + 1 / (1 - 0.85)
        assert groups["weights"]["lr"] == pytest.approx(lr * 512 / 1024 / gain)
        assert groups["bn"]["lr"] == pytest.approx(64 * groups["weights"]["lr"])
        assert groups["head"]["lr"] == pytest.approx(groups["weights"]["lr"] / 81)
        shares.append({k: g["lr"] * g["weight_decay"] for k, g in groups.items()})  # decay per step
    for k in ("weights", "bn", "biases", "head"):  # (QCFS clip values and a BN scale: not decayed)
        assert shares[0][k] == pytest.approx(0.0153 * 512 / 1024 / gain) == pytest.approx(shares[1][k])
    # every trainable parameter is in exactly one group
    ids = [id(p) for g in param_groups(model, cfg) for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_shift_reflects_borders_and_flip_alternates_by_epoch():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).reshape(2, 1, 5, 5)
    g = torch.Generator().manual_seed(3)
    same = shift_flip(x, 0, "reflect", torch.tensor([False, True]), g)
    assert torch.equal(same[0], x[0]) and torch.equal(same[1], x[1].flip(-1))
    moved = shift_flip(x, 2, "reflect", torch.tensor([False, False]), g)
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for img, src in zip(moved, padded):  # one of the 25 windows of the reflect-padded image
        assert any(torch.equal(img, src[:, dy:dy + 5, dx:dx + 5]) for dy in range(5) for dx in range(5))
    zeros = shift_flip(torch.full((4, 1, 5, 5), 7, dtype=torch.uint8), 2, "zeros", torch.zeros(4, dtype=torch.bool),
                       torch.Generator().manual_seed(0))
    assert set(zeros.flatten().tolist()) <= {0, 7}

    info = dataset_info("cifar10")
    imgs = np.random.default_rng(0).integers(0, 255, (16, 3, 32, 32)).astype(np.uint8)
    data = Dataset(info, "train", imgs, np.zeros(16, np.int64))

    def flipped(epoch):
        x, _ = next(data.batches(16, augment=True, translate=0, padding="reflect", flip="alternate", flip_seed=1,
                                 epoch=epoch))
        base = data.normalize(data.images)
        return torch.tensor([not torch.equal(a, b) for a, b in zip(x, base)])

    e1, e2, e3 = flipped(1), flipped(2), flipped(3)
    assert torch.equal(e1, ~e2) and torch.equal(e1, e3) and 0 < e1.sum() < 16


def test_lookahead_averages_and_hands_the_average_to_the_network():
    lin = nn.Linear(2, 2)
    la = Lookahead(lin)
    start = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    la.update(lin, decay=0.75)
    assert torch.allclose(lin.weight, start + 0.25) and torch.allclose(la.average["weight"], start + 0.25)
    assert la.decay(0, 100) == 0.0 and la.decay(100, 100) == pytest.approx(0.95 ** 5)


def test_time_views_show_the_image_its_mirror_and_shifts():
    x = torch.randn(3, 3, 8, 8)
    v = time_views(x, 6)
    assert v.shape == (3, 6, 3, 8, 8)
    assert torch.equal(v[:, 0], x) and torch.equal(v[:, 1], x.flip(-1)) and torch.equal(v[:, 4], x)
    assert torch.equal(v[:, 2, :, 1:, 1:], x[:, :, :-1, :-1])  # one pixel down-right of the original


def test_recipe_fills_what_was_not_given_and_records_it(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "ann"
    base = ["train", "--recipe", "fast", "--dataset", "cifar10", "--data-dir", str(tiny_cifar), "--ann",
            "--quant-levels", "4", "--width", "0.125", "--head-scale", "0.5", "--val-size", "40", "--quiet", "--no-compile", "--jpeg", "0"]
    assert main([*base, "--epochs", "2", "--batch-size", "32", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    tr = cfg["training"]
    assert cfg["model"]["name"] == "airbench" and tr["recipe"] == "fast"
    assert tr["epochs"] == 2 and tr["batch_size"] == 32 and tr["jpeg"] == 0.0 and not tr["compile"]  # given
    assert tr["head_scale"] == 0.5
    for k in ("lr", "momentum", "weight_decay", "bias_lr", "warmup", "final_lr", "label_smoothing",
              "translate", "flip", "lookahead", "whiten", "dirac", "decoupled", "nesterov"):
        assert tr[k] == FAST[k], k  # from the recipe
    # the whitening weights stayed as they were set (frozen), its bias trained in the first epochs only
    from seenn.runs.store import load_run

    model, _ = load_run(out)
    assert model.whiten.weight[:12].abs().sum() > 0 and torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))  # frozen scale
    # and it converts: the airbench layout is plain conv / BN / QCFS / average pool / linear
    snn = tmp_path / "snn"
    assert main(["convert", str(out), "--timesteps", "8", "--data-dir", str(tiny_cifar), "--out", str(snn)]) == 0
    assert json.loads((snn / "config.json").read_text())["max_timesteps"] == 8
    capsys.readouterr()
    assert main([*base, "--epochs", "2", "--whiten-bias-epochs", "-1", "--out", str(tmp_path / "x")]) == 2
    for eps in ("0", "101", "nan"):
        assert main([*base, "--whiten-eps", eps, "--out", str(tmp_path / "x")]) == 2
    assert main([*base, "--model", "resnet20", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "--whiten" in err and "Traceback" not in err


def test_recipe_run_resumes_exactly(tiny_cifar, tmp_path, monkeypatch, capsys):
    import seenn.training.run as tr

    base = ["train", "--recipe", "fast", "--dataset", "cifar10", "--data-dir", str(tiny_cifar), "--width", "0.125",
            "--timesteps", "2", "--val-size", "40", "--quiet", "--no-compile", "--epochs", "3", "--batch-size", "40",
            "--whiten-bias-epochs", "1", "--jpeg", "0.5"]
    full = tmp_path / "full"
    assert main([*base, "--out", str(full)]) == 0
    real = tr._epoch_starts
    calls = {"n": 0}

    def interrupt_third(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(tr, "_epoch_starts", interrupt_third)
    part = tmp_path / "part"
    assert main([*base, "--out", str(part)]) == 130
    monkeypatch.setattr(tr, "_epoch_starts", real)
    assert main(["train", "--resume", str(part), "--data-dir", str(tiny_cifar), "--quiet"]) == 0
    assert (part / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
