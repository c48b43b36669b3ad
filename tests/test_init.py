"""Initialisation schemes against their theoretical variances, reproducibility, per-type
rules, and `check_init`'s statistics and flags."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from optimlab.init import (
    SCHEMES,
    check_init,
    fans,
    initialize,
    random_probe_loss,
    truncated_normal_variance,
)
from optimlab.init.check import (
    DEAD,
    EXPLODING_ACTIVATIONS,
    EXPLODING_GRADIENTS,
    NON_FINITE,
    SATURATED,
    VANISHING_ACTIVATIONS,
    VANISHING_GRADIENTS,
)

FAN_IN, FAN_OUT = 512, 2048  # a 2048×512 weight has 1M entries: variance to ~0.3 %


def big_layer_weight(scheme, **kwargs):
    layer = nn.Linear(FAN_IN, FAN_OUT)
    initialize(layer, scheme, seed=0, **kwargs)
    return layer.weight.detach().double()


@pytest.mark.parametrize(
    ("scheme", "kwargs", "variance"),
    [
        ("uniform", {"a": 0.1}, 0.1**2 / 3),
        ("normal", {"std": 0.05}, 0.05**2),
        ("truncated_normal", {"std": 0.05, "bound": 2.0}, 0.7737413 * 0.05**2),
        ("truncated_normal", {"std": 0.05, "bound": 1.0}, 0.2911250 * 0.05**2),
        ("xavier_uniform", {}, 2 / (FAN_IN + FAN_OUT)),
        ("xavier_normal", {"gain": 2.0}, 4 * 2 / (FAN_IN + FAN_OUT)),
        ("kaiming_uniform", {}, 2 / FAN_IN),
        ("kaiming_normal", {}, 2 / FAN_IN),
        ("kaiming_normal", {"mode": "fan_out"}, 2 / FAN_OUT),
        ("kaiming_normal", {"nonlinearity": "tanh"}, (5 / 3) ** 2 / FAN_IN),
        ("kaiming_uniform", {"nonlinearity": "linear", "mode": "fan_out"}, 1 / FAN_OUT),
        ("lecun_normal", {}, 1 / FAN_IN),
        ("lecun_uniform", {}, 1 / FAN_IN),
        ("orthogonal", {"gain": 3.0}, 9 / FAN_OUT),  # WᵀW = 9 I: 9 · FAN_IN / (FAN_IN · FAN_OUT)
    ],
)
def test_scheme_variance_matches_theory(scheme, kwargs, variance):
    w = big_layer_weight(scheme, **kwargs)
    assert w.var().item() == pytest.approx(variance, rel=0.01)
    assert abs(w.mean().item()) < 4 * math.sqrt(variance / w.numel())


def test_truncated_normal_variance_formula_and_bounds():
    # 1 − 2kφ(k)/(2Φ(k) − 1), tabulated values for k = 1, 2
    assert truncated_normal_variance(1.0, 2.0) == pytest.approx(0.7737413, rel=1e-6)
    assert truncated_normal_variance(0.5, 1.0) == pytest.approx(0.25 * 0.2911250, rel=1e-6)
    w = big_layer_weight("truncated_normal", std=0.05, bound=2.0)
    assert w.abs().max().item() <= 0.1


def test_uniform_bounds_are_sqrt_3_var():
    w = big_layer_weight("lecun_uniform")
    limit = math.sqrt(3 / FAN_IN)
    assert w.abs().max().item() <= limit
    assert w.abs().max().item() > 0.999 * limit


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal_rows_and_columns(gain):
    square = nn.Linear(1024, 1024)
    initialize(square, "orthogonal", seed=1, gain=gain)
    w = square.weight.detach().double()
    eye = torch.eye(1024, dtype=torch.float64)
    torch.testing.assert_close(w @ w.T, gain**2 * eye, atol=1e-4, rtol=0)
    wide = nn.Linear(FAN_OUT, 64)  # weight 64×2048: orthonormal rows
    initialize(wide, "orthogonal", seed=1, gain=gain)
    w = wide.weight.detach().double()
    torch.testing.assert_close(
        w @ w.T, gain**2 * torch.eye(64, dtype=torch.float64), atol=1e-5, rtol=0
    )


def test_conv_fans_and_kaiming_fan_out():
    assert fans((128, 64, 3, 3)) == (64 * 9, 128 * 9)
    conv = nn.Conv2d(64, 128, 3)
    initialize(conv, "kaiming_normal", mode="fan_out", seed=0)
    assert conv.weight.var().item() == pytest.approx(2 / (128 * 9), rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0


def test_same_functions_as_torch_nn_init():
    ours, theirs = nn.Linear(300, 200), nn.Linear(300, 200)
    initialize(ours, "xavier_uniform", seed=5, nonlinearity="tanh")
    nn.init.xavier_uniform_(theirs.weight, gain=5 / 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ours.weight, theirs.weight)
    initialize(ours, "kaiming_normal", seed=5)
    nn.init.kaiming_normal_(
        theirs.weight, nonlinearity="relu", generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=0)


def mlp(depth=20, width=128, act=nn.Tanh, d_in=32, d_out=10):
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, d_out))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_seed_reproduces_and_leaves_global_rng_alone(scheme):
    a, b, c = mlp(depth=2, width=16), mlp(depth=2, width=16), mlp(depth=2, width=16)
    state = torch.get_rng_state()
    initialize(a, scheme, seed=7)
    initialize(b, scheme, seed=7)
    initialize(c, scheme, seed=8)
    assert torch.equal(state, torch.get_rng_state())
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        if pa.dim() >= 2:
            assert not torch.equal(pa, pc)
    d = mlp(depth=2, width=16)
    initialize(d, scheme, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), d.parameters(), strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_seed_gives_the_same_weights_on_cuda():
    cpu, gpu = mlp(depth=2, width=16), mlp(depth=2, width=16).cuda()
    initialize(cpu, "orthogonal", seed=3)
    initialize(gpu, "orthogonal", seed=3)
    for pc, pg in zip(cpu.parameters(), gpu.parameters(), strict=True):
        assert torch.equal(pc, pg.cpu())


class Head(nn.Linear):
    pass


def test_rules_per_type_mro_skip_and_norm_layers_untouched():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Embedding(10, 4),
        nn.LayerNorm(4),
        nn.Linear(4, 4),
        Head(4, 2),
    )
    with torch.no_grad():
        model[4].weight.fill_(2.0)
        model[4].bias.fill_(0.5)
        model[1].bias.fill_(0.25)
    embedding = model[3].weight.detach().clone()
    summary = initialize(
        model,
        "normal",
        seed=0,
        rules={nn.Conv2d: "kaiming_normal", nn.Linear: ("xavier_uniform", {"gain": 2.0}),
               Head: "orthogonal", nn.Embedding: None},
    )  # fmt: skip
    schemes = {r.name: r.scheme.split("(")[0] for r in summary}
    assert schemes == {
        "0.weight": "kaiming_normal",
        "0.bias": "zeros",
        "5.weight": "xavier_uniform",
        "5.bias": "zeros",
        "6.weight": "orthogonal",  # the most specific type in the MRO wins
        "6.bias": "zeros",
    }
    assert summary.skipped == ("3.weight",)
    assert torch.equal(model[3].weight, embedding)
    assert torch.equal(model[4].weight, torch.full((4,), 2.0))
    assert torch.equal(model[4].bias, torch.full((4,), 0.5))
    assert torch.equal(model[1].bias, torch.full((4,), 0.25))
    text = str(summary)
    assert "xavier_uniform(gain=2)" in text and "left as is" in text


def test_attention_rnn_and_tied_weights():
    mha = nn.MultiheadAttention(8, 2)
    names = {r.name for r in initialize(mha, "xavier_uniform", seed=0)}
    assert {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"} <= names
    assert torch.count_nonzero(mha.in_proj_bias) == 0
    lstm = nn.LSTM(4, 8)
    names = {r.name for r in initialize(lstm, "orthogonal", seed=0)}
    assert {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"} == names

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

    records = initialize(Tied(), "normal", seed=0).records
    assert [r.name for r in records] == ["embed.weight"]


def test_bias_options():
    layer = nn.Linear(4, 3)
    initialize(layer, "normal", bias=0.1)
    assert torch.equal(layer.bias, torch.full((3,), 0.1))
    initialize(layer, "normal", bias="keep")
    assert torch.equal(layer.bias, torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="Invalid bias"):
        initialize(layer, "normal", bias="ones")


def test_errors_come_before_any_change():
    model = mlp(depth=2, width=8)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="Unknown init scheme 'he_normal'.*kaiming_normal"):
        initialize(model, "he_normal")
    with pytest.raises(ValueError, match="known schemes: kaiming_normal, kaiming_uniform"):
        initialize(model, "normal", rules={nn.Linear: "glorot"})
    with pytest.raises(TypeError, match="'xavier_normal' takes gain; got std"):
        initialize(model, "xavier_normal", std=0.1)
    with pytest.raises(ValueError, match="generator or seed"):
        initialize(model, "normal", seed=1, generator=torch.Generator())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# ---------------------------------------------------------------- check_init

BATCH = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))


def test_check_init_flags_standard_normal_tanh_mlp():
    model = mlp()
    initialize(model, "normal", std=1.0, seed=0)
    report = check_init(model, BATCH)
    assert not report.ok
    problems = {f.problem for f in report.flags}
    assert {EXPLODING_GRADIENTS, SATURATED} <= problems
    # The error grows going backwards: the first layer's is the most amplified.
    first = report.rows[0]
    assert first.grad_ratio > 1e6
    assert all(r.saturation > 0.5 for r in report.rows if r.kind == "Tanh")
    assert "exploding gradients in 0, 2, 4" in str(report)


@pytest.mark.parametrize(
    ("act", "scheme", "kwargs"),
    [
        (nn.Tanh, "xavier_normal", {"nonlinearity": "tanh"}),
        (nn.Tanh, "lecun_normal", {"gain": 5 / 3}),
        (nn.ReLU, "kaiming_normal", {}),
    ],
)
def test_check_init_passes_good_inits(act, scheme, kwargs):
    model = mlp(act=act)
    initialize(model, scheme, seed=0, **kwargs)
    report = check_init(model, BATCH)
    assert report.ok, str(report)
    assert "no problems" in str(report)


def test_check_init_flags_exploding_relu_and_vanishing_default_init():
    model = mlp(act=nn.ReLU)
    initialize(model, "normal", std=1.0, seed=0)
    assert EXPLODING_ACTIVATIONS in {f.problem for f in check_init(model, BATCH).flags}
    model = mlp(act=nn.ReLU)
    initialize(model, "kaiming_uniform", gain=1 / math.sqrt(3), seed=0)  # torch's weight scale
    problems = {f.problem for f in check_init(model, BATCH).flags}
    assert {VANISHING_ACTIVATIONS, VANISHING_GRADIENTS} <= problems


def test_check_init_statistics_in_closed_form():
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]]))
    x = torch.linspace(-1, 2, 12).reshape(4, 3)
    report = check_init(layer, x)
    y = x @ layer.weight.detach().T
    r = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))  # the probe's ∂L/∂y
    (row,) = report.rows
    assert row.act_std == pytest.approx(y.std(correction=0).item(), rel=1e-6)
    assert row.grad_std == pytest.approx(r.std(correction=0).item(), rel=1e-6)
    assert row.weight_grad_std == pytest.approx((r.T @ x).std(correction=0).item(), rel=1e-6)
    assert report.loss == pytest.approx((y * r).sum().item(), rel=1e-6)
    assert row.act_ratio == 1.0 and row.grad_ratio == 1.0


def test_check_init_leaves_grads_modes_buffers_and_rng_alone():
    model = nn.Sequential(
        nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(16, 4),
    )  # fmt: skip
    model.eval()
    model[3].train()
    grad = torch.ones_like(model[0].weight)
    model[0].weight.grad = grad
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = check_init(model, BATCH)
    assert [r.name for r in report.rows] == ["0", "4"]
    assert model[0].weight.grad is grad and torch.equal(grad, torch.ones_like(grad))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "0.weight")
    assert [m.training for m in model] == [False, False, False, True, False]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(not m._forward_hooks for m in model.modules())


def test_check_init_with_loss_fn_and_tuple_batch():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x, y):
            return self.a(x), self.b(y)

    model = Pair()
    x = torch.ones(5, 4)
    report = check_init(model, (x, x), loss_fn=lambda out: out[0].sum() + out[1].pow(2).sum())
    assert [r.name for r in report.rows] == ["a", "b"]
    assert report.rows[0].grad_std == 0.0  # ∂L/∂a(x) = 1 everywhere: std 0
    with pytest.raises(TypeError, match="pass loss_fn"):
        check_init(model, (x, x))
    with pytest.raises(TypeError, match="pass loss_fn"):
        random_probe_loss((x,))


def test_check_init_flags_dead_and_non_finite_layers():
    model = mlp(depth=3, width=8, act=nn.ReLU)
    initialize(model, "kaiming_normal", seed=0)
    with torch.no_grad():
        model[2].weight.zero_()
    report = check_init(model, BATCH)
    # with zero biases everything downstream of the zeroed layer is constant too
    assert [f.layer for f in report.flagged(DEAD)] == ["2", "4", "6"]
    with torch.no_grad():
        model[2].weight.fill_(float("nan"))
    # NaN outputs from layer 2 on, NaN gradients (back through layer 2) before it
    assert [f.layer for f in check_init(model, BATCH).flagged(NON_FINITE)] == ["0", "2", "4", "6"]
