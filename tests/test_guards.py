"""Tests of optimlab.guards: every value is checked against plain torch computed here by hand."""

from __future__ import annotations

import copy
import io
import pickle
import re
from pathlib import Path

import pytest
import torch

from optimlab.guards import (
    EMA,
    GradientAccumulation,
    GradientClipping,
    Lookahead,
    NonFiniteGradientError,
    NonFiniteGuard,
    OptimizerWrapper,
    accumulate_gradients,
    clip_gradients,
    find_guard,
    skip_nonfinite,
)

F64 = torch.float64


def close(actual, expected, rtol=1e-13, atol=1e-15):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def leaf_params(seed=0, shapes=((3, 4), (4,), (2, 3), ())):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=F64).requires_grad_() for s in shapes]


def set_grads(params, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=F64)


def clones(params):
    return [p.detach().clone().requires_grad_() for p in params]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 4)
        self.fc2 = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net().to(F64)


def data(n=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)


def mse(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)  # mean-reduced


def state_snapshot(opt):
    return {
        i: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
        for i, p in enumerate(p for g in opt.param_groups for p in g["params"])
    }


def assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys()
        for k in a[i]:
            if torch.is_tensor(a[i][k]):
                assert torch.equal(a[i][k], b[i][k]), (i, k)
            else:
                assert a[i][k] == b[i][k]


# ---------------------------------------------------------------------------------------------
# The wrapper is an optimizer
# ---------------------------------------------------------------------------------------------
def all_guards(opt):
    return [
        clip_gradients(opt, 1.0),
        skip_nonfinite(opt),
        accumulate_gradients(opt, 2),
        Lookahead(opt),
        EMA(opt),
    ]


def test_wrappers_are_optimizers_sharing_groups_and_state():
    params = leaf_params()
    inner = torch.optim.Adam(params, lr=0.1)
    for guard in all_guards(inner):
        assert isinstance(guard, torch.optim.Optimizer)
        assert guard.param_groups is inner.param_groups
        assert guard.state is inner.state
        assert guard.defaults is inner.defaults


def test_rejects_non_optimizer():
    with pytest.raises(TypeError, match="wraps a torch.optim.Optimizer"):
        Lookahead([torch.zeros(2, requires_grad=True)])


@pytest.mark.parametrize("index", range(5))
def test_lr_scheduler_drives_inner_optimizer(index):
    params = leaf_params()
    inner = torch.optim.SGD(params, lr=1.0)
    opt = all_guards(inner)[index]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        set_grads(params)
        opt.step()
        sched.step()
    assert inner.param_groups[0]["lr"] == 0.125
    # torch's load_state_dict replaces the groups list: the scheduler must still reach it.
    inner.load_state_dict(inner.state_dict())
    sched.step()
    assert inner.param_groups[0]["lr"] == 0.0625
    torch.optim.lr_scheduler.ReduceLROnPlateau(opt)  # also checks isinstance(Optimizer)


def test_state_dict_layout_and_plain_torch_loads_it():
    params = leaf_params()
    opt = Lookahead(skip_nonfinite(torch.optim.Adam(params)), k=2)
    set_grads(params)
    opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups", "optimlab_guards"}
    assert [g["guard"] for g in sd["optimlab_guards"]] == ["Lookahead", "NonFiniteGuard"]
    plain = torch.optim.Adam(clones(params))
    plain.load_state_dict(sd)  # the extra key is ignored by torch
    assert torch.equal(plain.state_dict()["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])
    with pytest.raises(ValueError, match="expected the state of a Lookahead guard"):
        Lookahead(torch.optim.Adam(clones(params))).load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="found 'Lookahead'"):
        EMA(torch.optim.Adam(clones(params))).load_state_dict(sd)


def test_zero_grad_add_param_group_closure_hooks_deepcopy_pickle():
    params = leaf_params()
    opt = clip_gradients(torch.optim.SGD(params[:2], lr=0.1), 10.0)
    set_grads(params)
    opt.zero_grad()
    assert all(p.grad is None for p in params[:2])
    opt.add_param_group({"params": params[2:], "lr": 0.01})
    assert len(opt.optimizer.param_groups) == 2

    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    before = [p.detach().clone() for p in params]

    def closure():
        opt.zero_grad()
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    close(loss, sum((b**2).sum() for b in before))
    for p, b, lr in zip(params, before, [0.1, 0.1, 0.01, 0.01], strict=True):
        close(p.detach(), b - lr * 2 * b)

    torch.optim.lr_scheduler.StepLR(opt, 1)  # patches opt.step on the instance
    twin = copy.deepcopy(opt)
    assert isinstance(twin.optimizer, torch.optim.SGD) and twin.max_norm == 10.0
    again = pickle.loads(pickle.dumps(opt))
    assert again.optimizer.param_groups[1]["lr"] == 0.01


def test_find_guard():
    inner = torch.optim.SGD(leaf_params(), lr=0.1)
    clip = clip_gradients(inner, 1.0)
    opt = Lookahead(skip_nonfinite(clip))
    assert find_guard(opt, GradientClipping) is clip
    assert find_guard(opt, EMA) is None
    assert find_guard(opt, OptimizerWrapper) is opt


# ---------------------------------------------------------------------------------------------
# Clipping
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_norm_matches_torch(norm_type, max_norm):
    params = leaf_params()
    ref = clones(params)
    set_grads(params, scale=3.0)
    set_grads(ref, scale=3.0)
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.05}]
    opt = clip_gradients(torch.optim.SGD(groups, lr=0.1), max_norm, norm_type)
    before = [p.detach().clone() for p in params]
    raw = torch.cat([p.grad.flatten() for p in params])
    opt.step()

    # Reference: torch's function over all parameters of both groups, then SGD by hand.
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
    assert torch.equal(opt.last_norm, ref_norm)
    for p, r in zip(params, ref, strict=True):
        assert torch.equal(p.grad, r.grad)
    for p, b, r, lr in zip(params, before, ref, [0.1, 0.1, 0.05, 0.05], strict=True):
        close(p.detach(), b - lr * r.grad)

    # And the formula itself: g · min(1, c / (N + 1e-6)).
    n = torch.linalg.vector_norm(raw, norm_type)
    close(opt.last_norm, n)
    coef = min(1.0, max_norm / (n.item() + 1e-6))
    close(torch.cat([p.grad.flatten() for p in params]), raw * coef)


def test_clip_by_value_matches_torch_and_reports_norm():
    params = leaf_params()
    ref = clones(params)
    set_grads(params, scale=2.0)
    set_grads(ref, scale=2.0)
    raw = torch.cat([p.grad.flatten() for p in params])
    opt = clip_gradients(torch.optim.SGD(params, lr=0.1), value=0.7)
    before = [p.detach().clone() for p in params]
    opt.step()
    torch.nn.utils.clip_grad_value_(ref, 0.7)
    for p, r, b in zip(params, ref, before, strict=True):
        assert torch.equal(p.grad, r.grad)
        close(p.detach(), b - 0.1 * r.grad)
    close(opt.last_norm, torch.linalg.vector_norm(raw))
    assert opt.calls == 1


def test_clip_with_missing_grads_and_bad_arguments():
    params = leaf_params()
    set_grads(params)
    params[1].grad = None
    raw = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
    opt = clip_gradients(torch.optim.SGD(params, lr=0.1), 0.1)
    opt.step()
    assert params[1].grad is None
    close(opt.last_norm, torch.linalg.vector_norm(raw))
    sgd = torch.optim.SGD(params, lr=0.1)
    for kwargs, msg in [
        ({}, "exactly one"),
        ({"max_norm": 1.0, "value": 1.0}, "exactly one"),
        ({"max_norm": -1.0}, "Invalid max_norm value: -1.0"),
        ({"max_norm": float("nan")}, "Invalid max_norm value: nan"),
        ({"value": 0.0}, "Invalid clip value value: 0.0"),
        ({"max_norm": 1.0, "norm_type": float("nan")}, "Invalid norm_type value: nan"),
    ]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            GradientClipping(sgd, **kwargs)


# ---------------------------------------------------------------------------------------------
# Non-finite guard
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_step_leaves_params_and_adam_state_bit_exact(bad):
    params = leaf_params()
    ref = clones(params)
    opt = skip_nonfinite(torch.optim.Adam(params, lr=0.1))
    ref_opt = torch.optim.Adam(ref, lr=0.1)
    for seed in (1, 2):
        set_grads(params, seed)
        set_grads(ref, seed)
        opt.step()
        ref_opt.step()
    params_before = [p.detach().clone() for p in params]
    state_before = state_snapshot(opt)

    set_grads(params, seed=3)
    params[2].grad[1, 1] = bad
    opt.step()
    assert opt.last_step_skipped and not opt.last_step_applied
    for p, b in zip(params, params_before, strict=True):
        assert torch.equal(p.detach(), b)
    assert_state_equal(state_snapshot(opt), state_before)
    assert opt.state[params[0]]["step"].item() == 2
    assert opt.total_skips == 1 and opt.consecutive_skips == 1
    assert opt.last_nonfinite_counts == [1]
    # the gradients of the skipped step are left for the user
    assert not torch.isfinite(params[2].grad[1, 1])

    # A finite step afterwards is the step the reference takes: the bad batch left no trace.
    set_grads(params, seed=4)
    set_grads(ref, seed=4)
    opt.step()
    ref_opt.step()
    for p, r in zip(params, ref, strict=True):
        assert torch.equal(p.detach(), r.detach())
    assert opt.consecutive_skips == 0 and opt.total_skips == 1
    assert opt.state[params[0]]["step"].item() == 3


def test_nonfinite_raises_after_n_consecutive_skips_with_name():
    net = make_net()
    opt = skip_nonfinite(torch.optim.SGD(net.parameters(), lr=0.1), 3, named_parameters=net)
    x, y = data()

    def nan_step():
        opt.zero_grad()
        mse(net, x, y).backward()
        net.fc2.weight.grad[0, 1] = float("nan")
        net.fc2.weight.grad[1, 2] = float("inf")
        opt.step()

    nan_step()
    nan_step()
    opt.zero_grad()
    mse(net, x, y).backward()
    opt.step()  # a finite step resets the consecutive count
    assert (opt.total_skips, opt.consecutive_skips) == (2, 0)
    nan_step()
    nan_step()
    with pytest.raises(NonFiniteGradientError) as info:
        nan_step()
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.consecutive_skips == 3
    assert err.parameter == "'fc2.weight' (param_groups[0]['params'][2], shape (2, 4))"
    assert "'fc2.weight'" in str(err) and "2 of 8 elements" in str(err)
    assert (opt.total_skips, opt.consecutive_skips) == (5, 3)


def test_nonfinite_error_names_by_position_or_torch_param_names():
    params = leaf_params()
    opt = skip_nonfinite(torch.optim.SGD(params, lr=0.1), 1)
    set_grads(params)
    params[3].grad.fill_(float("nan"))
    with pytest.raises(NonFiniteGradientError, match=re.escape("param_groups[0]['params'][3]")):
        opt.step()
    assert opt.last_nonfinite_parameter == "param_groups[0]['params'][3] (shape ())"

    net = make_net()
    opt = skip_nonfinite(torch.optim.SGD(net.named_parameters(), lr=0.1), 1)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net.fc1.bias.grad[0] = float("inf")
    with pytest.raises(NonFiniteGradientError, match=re.escape("'fc1.bias'")):
        opt.step()


def test_nonfinite_checkpoint_and_bad_arguments():
    params = leaf_params()
    opt = skip_nonfinite(torch.optim.SGD(params, lr=0.1), 5)
    set_grads(params)
    params[0].grad[0, 0] = float("nan")
    opt.step()
    opt.step()
    fresh = skip_nonfinite(torch.optim.SGD(clones(params), lr=0.1))
    fresh.load_state_dict(opt.state_dict())
    assert (fresh.total_skips, fresh.consecutive_skips, fresh.max_consecutive_skips) == (2, 2, 5)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="Invalid max_consecutive_skips"):
            NonFiniteGuard(torch.optim.SGD(params, lr=0.1), bad)


# ---------------------------------------------------------------------------------------------
# Gradient accumulation
# ---------------------------------------------------------------------------------------------
OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_accumulation_equals_one_full_batch_step(name):
    k, updates = 3, 3
    full, micro = make_net(), make_net()
    opt_full = OPTIMIZERS[name](full.parameters())
    opt = accumulate_gradients(OPTIMIZERS[name](micro.parameters()), k)
    for u in range(updates):
        x, y = data(12, seed=10 + u)
        opt_full.zero_grad()
        mse(full, x, y).backward()
        opt_full.step()
        # The usual loop, unchanged: backward, step, zero_grad on every micro-batch.
        for j in range(k):
            mse(micro, x[4 * j : 4 * j + 4], y[4 * j : 4 * j + 4]).backward()
            assert opt.will_update == (j == k - 1)
            opt.step()
            assert opt.last_step_applied == (j == k - 1)
            opt.zero_grad()
        for a, b in zip(micro.parameters(), full.parameters(), strict=True):
            close(a.detach(), b.detach())
    assert all(p.grad is None for p in micro.parameters())
    sa, sb = opt.state_dict()["state"], opt_full.state_dict()["state"]
    for i in sa:
        for key in sa[i]:
            close(sa[i][key], sb[i][key])


def test_accumulation_unequal_micro_batches_with_sum():
    full, micro = make_net(), make_net()
    opt_full = torch.optim.Adam(full.parameters(), lr=0.01)
    opt = accumulate_gradients(torch.optim.Adam(micro.parameters(), lr=0.01), 3, average=False)
    x, y = data(12)
    mse(full, x, y).backward()
    opt_full.step()
    for lo, hi in [(0, 5), (5, 9), (9, 12)]:
        (mse(micro, x[lo:hi], y[lo:hi]) * (hi - lo) / 12).backward()
        opt.step()
    for a, b in zip(micro.parameters(), full.parameters(), strict=True):
        close(a.detach(), b.detach())


def test_accumulation_flush_reset_closure_and_checkpoint():
    full, micro = make_net(), make_net()
    opt_full = torch.optim.SGD(full.parameters(), lr=0.1)
    opt = accumulate_gradients(torch.optim.SGD(micro.parameters(), lr=0.1), 4)
    x, y = data(8)
    mse(full, x, y).backward()
    opt_full.step()
    for j in range(2):
        xb, yb = x[4 * j : 4 * j + 4], y[4 * j : 4 * j + 4]

        def closure(xb=xb, yb=yb):
            loss = mse(micro, xb, yb)
            loss.backward()
            return loss

        loss = opt.step(closure)
        assert opt.micro_step == j + 1
        close(loss.detach(), mse(micro, xb, yb).detach())  # no update yet: same parameters
    assert opt.flush() and opt.micro_step == 0 and opt.last_step_applied
    assert not opt.flush()
    for a, b in zip(micro.parameters(), full.parameters(), strict=True):
        close(a.detach(), b.detach())

    opt.zero_grad()
    mse(micro, x, y).backward()
    opt.step()
    sd = opt.state_dict()
    assert sd["optimlab_guards"][0]["state"] == {"micro_step": 1, "steps": 4, "average": True}
    again = accumulate_gradients(torch.optim.SGD(make_net().parameters(), lr=0.1), 2)
    again.load_state_dict(sd)
    assert (again.micro_step, again.steps) == (1, 4)
    opt.reset()
    assert opt.micro_step == 0 and all(p.grad is None for p in micro.parameters())
    with pytest.raises(ValueError, match="Invalid accumulation steps value: 0"):
        GradientAccumulation(opt_full, 0)


# ---------------------------------------------------------------------------------------------
# Lookahead
# ---------------------------------------------------------------------------------------------
def quad_grads(params, t):
    """Gradient of a fixed, step-dependent quadratic: g = A_t θ + b_t, elementwise."""
    g = torch.Generator().manual_seed(100 + t)
    for p in params:
        a = torch.rand(p.shape, generator=g, dtype=F64) + 0.5
        b = torch.randn(p.shape, generator=g, dtype=F64)
        p.grad = a * p.detach() + b


@pytest.mark.parametrize("k, alpha", [(3, 0.5), (1, 0.8), (4, 1.0)])
def test_lookahead_matches_hand_loop(k, alpha):
    params = leaf_params()
    fast = clones(params)
    slow = [p.detach().clone() for p in params]
    opt = Lookahead(torch.optim.SGD(params, lr=0.05, momentum=0.9), k=k, alpha=alpha)
    inner_ref = torch.optim.SGD(fast, lr=0.05, momentum=0.9)
    for t in range(1, 11):
        quad_grads(params, t)
        quad_grads(fast, t)
        opt.step()
        inner_ref.step()
        if t % k == 0:
            with torch.no_grad():
                for s, f in zip(slow, fast, strict=True):
                    s.copy_(s + alpha * (f - s))
                    f.copy_(s)
        assert opt.last_synced == (t % k == 0)
        for p, f in zip(params, fast, strict=True):
            close(p.detach(), f.detach())
        for s_opt, s in zip(opt.slow_weights(), slow, strict=True):
            close(s_opt, s)
    assert opt.fast_steps == 10


def test_lookahead_resume_bit_exact_and_counts_only_applied_steps():
    def run(opt, params, ts):
        for t in ts:
            quad_grads(params, t)
            opt.step()

    straight = leaf_params()
    opt = Lookahead(torch.optim.Adam(straight, lr=0.05), k=3)
    run(opt, straight, range(1, 9))

    first = leaf_params()
    opt1 = Lookahead(torch.optim.Adam(first, lr=0.05), k=3)
    run(opt1, first, range(1, 5))
    buf = io.BytesIO()
    torch.save(opt1.state_dict(), buf)
    second = clones(first)
    opt2 = Lookahead(torch.optim.Adam(second, lr=0.05))
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf))
    assert (opt2.k, opt2.fast_steps) == (3, 4)
    run(opt2, second, range(5, 9))
    for a, b in zip(straight, second, strict=True):
        assert torch.equal(a, b)

    params = leaf_params()
    opt = Lookahead(skip_nonfinite(torch.optim.SGD(params, lr=0.1)), k=2)
    quad_grads(params, 1)
    opt.step()
    params[0].grad[0, 0] = float("nan")
    opt.step()
    assert opt.fast_steps == 1 and not opt.last_synced


# ---------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("warmup", [False, True])
def test_ema_matches_hand_average(warmup):
    decay = 0.9
    params = leaf_params()
    opt = EMA(torch.optim.SGD(params, lr=0.1, momentum=0.5), decay, warmup=warmup)
    avg = [p.detach().clone() for p in params]  # θ̄₀ = θ₀
    for t in range(8):
        quad_grads(params, t)
        opt.step()
        d = min(decay, (1 + t) / (10 + t)) if warmup else decay
        assert opt.num_updates == t + 1
        avg = [d * a + (1 - d) * p.detach() for a, p in zip(avg, params, strict=True)]
        for a_opt, a in zip(opt.averaged_parameters(), avg, strict=True):
            close(a_opt, a)
    if warmup:
        assert opt.current_decay() == min(decay, 9 / 18)


def test_ema_swap_in_and_out():
    params = leaf_params()
    opt = EMA(torch.optim.SGD(params, lr=0.1), 0.5)
    for t in range(3):
        quad_grads(params, t)
        opt.step()
    training = [p.detach().clone() for p in params]
    average = [a.clone() for a in opt.averaged_parameters()]
    with opt.swapped():
        assert opt.is_swapped
        for p, a in zip(params, average, strict=True):
            assert torch.equal(p.detach(), a)
        with pytest.raises(RuntimeError, match="swapped in"):
            opt.step()
    for p, w in zip(params, training, strict=True):
        assert torch.equal(p.detach(), w)

    with pytest.raises(ZeroDivisionError), opt.swapped():
        raise ZeroDivisionError  # swapped back even on error
    assert not opt.is_swapped
    assert torch.equal(params[0].detach(), training[0])

    opt.swap_in()
    with pytest.raises(RuntimeError, match="already swapped in"):
        opt.swap_in()
    opt.swap_out()
    with pytest.raises(RuntimeError, match="not swapped in"):
        opt.swap_out()
    with pytest.raises(ValueError, match="Invalid EMA decay value: 1.0"):
        EMA(opt.optimizer, 1.0)


def test_ema_resume_bit_exact():
    straight = leaf_params()
    opt = EMA(torch.optim.Adam(straight, lr=0.05), 0.8, warmup=True)
    for t in range(6):
        quad_grads(straight, t)
        opt.step()

    first = leaf_params()
    opt1 = EMA(torch.optim.Adam(first, lr=0.05), 0.8, warmup=True)
    for t in range(3):
        quad_grads(first, t)
        opt1.step()
    second = clones(first)
    opt2 = EMA(torch.optim.Adam(second, lr=0.05))
    opt2.load_state_dict(pickle.loads(pickle.dumps(opt1.state_dict())))
    assert (opt2.decay, opt2.warmup, opt2.num_updates) == (0.8, True, 3)
    for t in range(3, 6):
        quad_grads(second, t)
        opt2.step()
    for a, b in zip(opt.averaged_parameters(), opt2.averaged_parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight, second, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Composition: clip inside non-finite guard inside Lookahead, against a hand loop
# ---------------------------------------------------------------------------------------------
def test_composed_guards_match_hand_loop_and_resume():
    k, alpha, lr, mu, c = 2, 0.5, 0.1, 0.9, 0.5
    params = leaf_params()
    opt = Lookahead(skip_nonfinite(clip_gradients(torch.optim.SGD(params, lr, mu), c)), k, alpha)

    theta = [p.detach().clone() for p in params]
    slow = [t.clone() for t in theta]
    buf = None
    applied = 0
    for t in range(1, 9):
        quad_grads(params, t)
        grads = [p.grad.clone() for p in params]
        bad = t in (3, 4)
        if bad:
            params[1].grad[0] = float("nan")
        opt.step()
        if not bad:  # by hand: clip, SGD with torch's momentum, Lookahead
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
            grads = [g * min(1.0, c / (norm.item() + 1e-6)) for g in grads]
            buf = grads if buf is None else [mu * b + g for b, g in zip(buf, grads, strict=True)]
            theta = [th - lr * b for th, b in zip(theta, buf, strict=True)]
            applied += 1
            if applied % k == 0:
                slow = [s + alpha * (th - s) for s, th in zip(slow, theta, strict=True)]
                theta = [s.clone() for s in slow]
        for p, th in zip(params, theta, strict=True):
            close(p.detach(), th)
    assert opt.fast_steps == applied == 6
    assert find_guard(opt, NonFiniteGuard).total_skips == 2

    # The whole chain resumes from its checkpoint.
    copy_params = clones(params)
    other = Lookahead(skip_nonfinite(clip_gradients(torch.optim.SGD(copy_params, lr, mu), c)))
    # (a deep copy, like torch.save would make: torch's load_state_dict keeps the saved
    # tensors themselves when device and dtype already match)
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    for o in (opt, other):
        quad_grads(params if o is opt else copy_params, 20)
        o.step()
    for a, b in zip(params, copy_params, strict=True):
        assert torch.equal(a, b)


def test_ema_over_accumulation_counts_updates_only():
    params = leaf_params()
    opt = EMA(accumulate_gradients(torch.optim.SGD(params, lr=0.1), 3), 0.5)
    for t in range(7):
        quad_grads(params, t)
        opt.step()
    assert opt.num_updates == 2


# ---------------------------------------------------------------------------------------------
# The documentation's examples run
# ---------------------------------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "guards.md"


def doc_examples():
    if not DOC.exists():
        return []
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(doc_examples())))
def test_docs_examples_run(index):
    exec(compile(doc_examples()[index], f"{DOC.name}[{index}]", "exec"), {})
