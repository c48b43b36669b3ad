"""Schedules against their closed forms, torch's schedulers where they agree, and the adapters
(`HyperparamScheduler`, `ReduceOnPlateau`) driving torch.optim optimizers."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as torch_sched

from optimlab.schedules import (
    Constant,
    CosineDecay,
    CosineRestarts,
    ExponentialDecay,
    HyperparamScheduler,
    InverseSqrt,
    Join,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PolynomialDecay,
    ReduceOnPlateau,
    StepDecay,
    WarmupCosine,
    WarmupStableDecay,
    join,
)

approx = pytest.approx


def torch_lrs(make_scheduler, num_steps, lr=1.0, **opt_kwargs):
    """The lr that torch's scheduler sets at steps 0..num_steps-1."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, **opt_kwargs)
    sched = make_scheduler(opt)
    values = []
    for _ in range(num_steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


# ---------------------------------------------------------------- closed forms at chosen steps


def test_constant():
    s = Constant(0.3)
    assert [s(0), s(1), s(10**6)] == [0.3, 0.3, 0.3]


def test_linear_warmup():
    s = LinearWarmup(peak=1.0, warmup_steps=4, init_value=0.2)
    assert [s(0), s(1), s(2), s(4), s(100)] == approx([0.2, 0.4, 0.6, 1.0, 1.0])
    assert LinearWarmup(2.0, 0)(0) == 2.0  # no warm-up: peak from the start
    assert LinearWarmup(1.0, 10)(0) == 0.0  # default init_value


def test_step_decay():
    s = StepDecay(init_value=1.0, step_size=3, gamma=0.5)
    assert [s(0), s(2), s(3), s(5), s(6), s(7)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    ref = torch_lrs(lambda o: torch_sched.StepLR(o, step_size=3, gamma=0.5), 12)
    assert s.values(12) == approx(ref, rel=1e-12)


def test_multistep_decay_sorts_milestones():
    s = MultiStepDecay(init_value=2.0, milestones=[5, 2], gamma=0.1)
    assert s.milestones == (2, 5)
    assert [s(1), s(2), s(4), s(5), s(99)] == approx([2.0, 0.2, 0.2, 0.02, 0.02])
    ref = torch_lrs(lambda o: torch_sched.MultiStepLR(o, milestones=[2, 5], gamma=0.1), 8, 2.0)
    assert s.values(8) == approx(ref, rel=1e-12)


def test_exponential_decay():
    s = ExponentialDecay(init_value=2.0, gamma=0.9)
    assert [s(0), s(3)] == approx([2.0, 2.0 * 0.729])


def test_polynomial_decay():
    s = PolynomialDecay(init_value=1.0, end_value=0.1, decay_steps=10, power=2.0)
    # 0.1 + 0.9 * (1 - t/10)^2
    assert [s(0), s(5), s(10), s(20)] == approx([1.0, 0.325, 0.1, 0.1])
    linear = PolynomialDecay(1.0, 0.0, 4)
    assert linear.values(6) == approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    ref = torch_lrs(lambda o: torch_sched.PolynomialLR(o, total_iters=10, power=2.0), 12)
    assert PolynomialDecay(1.0, 0.0, 10, 2.0).values(12) == approx(ref, rel=1e-9, abs=1e-15)


def test_cosine_decay_with_floor():
    s = CosineDecay(init_value=1.0, decay_steps=10, end_value=0.1)
    # 0.1 + 0.9 * (1 + cos(pi t / 10)) / 2
    assert [s(0), s(5), s(10), s(15)] == approx([1.0, 0.55, 0.1, 0.1])
    assert s(2) == approx(0.1 + 0.45 * (1 + math.cos(math.pi / 5)))
    ref = torch_lrs(lambda o: torch_sched.CosineAnnealingLR(o, T_max=10, eta_min=0.1), 11)
    assert s.values(11) == approx(ref, rel=1e-9)


def test_warmup_cosine():
    s = WarmupCosine(peak=1.0, warmup_steps=10, total_steps=110, end_value=0.1)
    assert [s(0), s(5), s(10), s(60), s(110), s(500)] == approx([0.0, 0.5, 1.0, 0.55, 0.1, 0.1])
    # It is the join of its two parts.
    chained = join([LinearWarmup(1.0, 10), CosineDecay(1.0, 100, 0.1)], [10])
    assert s.values(130) == approx(chained.values(130), rel=1e-15)


@pytest.mark.parametrize(
    ("shape", "at_90"),
    [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))],
)
def test_warmup_stable_decay(shape, at_90):
    s = WarmupStableDecay(1.0, warmup_steps=10, total_steps=100, decay_steps=20, shape=shape)
    assert [s(0), s(5), s(10), s(50), s(80)] == approx([0.0, 0.5, 1.0, 1.0, 1.0])
    assert s(90) == approx(at_90)
    assert [s(100), s(1000)] == approx([0.0, 0.0])
    with_floor = WarmupStableDecay(1.0, 10, 100, 20, end_value=0.2, shape=shape)
    assert with_floor(90) == approx(0.2 + 0.8 * at_90)


def test_one_cycle_closed_form():
    s = OneCycle(peak=1.0, total_steps=100, pct_start=0.3, anneal="linear")
    v0, v_end, e1 = 0.04, 4e-6, 29.0
    assert [s(0), s(29), s(99), s(150)] == approx([v0, 1.0, v_end, v_end])
    assert s(10) == approx(v0 + (1.0 - v0) * 10 / e1)
    assert s(64) == approx(1.0 + (v_end - 1.0) * 35 / 70)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_matches_torch_lr_and_momentum(anneal):
    total = 50
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, momentum=0.9)
    ref = torch_sched.OneCycleLR(
        opt, max_lr=2.0, total_steps=total, pct_start=0.25, anneal_strategy=anneal
    )
    lrs, moms = [], []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        ref.step()
    lr = OneCycle(peak=2.0, total_steps=total, pct_start=0.25, anneal=anneal)
    momentum = OneCycle(0.85, total, 0.25, init_value=0.95, end_value=0.95, anneal=anneal)
    assert lr.values(total) == approx(lrs, rel=1e-12)
    assert momentum.values(total) == approx(moms, rel=1e-12)


def test_cosine_restarts_sgdr():
    s = CosineRestarts(peak=1.0, period=10, period_mult=2)
    # cycles [0, 10), [10, 30), [30, 70)
    points = [0, 5, 9, 10, 20, 30, 50, 70]
    expected = [1.0, 0.5, 0.5 * (1 + math.cos(0.9 * math.pi)), 1.0, 0.5, 1.0, 0.5, 1.0]
    assert [s(t) for t in points] == approx(expected)
    assert s.cycle(69) == (2, 39, 40)
    decayed = CosineRestarts(1.0, 10, 2, end_value=0.1, peak_decay=0.5)
    assert [decayed(10), decayed(30), decayed(20)] == approx([0.5, 0.25, 0.1 + 0.4 * 0.5])


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_cosine_restarts_matches_torch(mult):
    n = 60
    ref = torch_lrs(
        lambda o: torch_sched.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=mult, eta_min=0.05), n
    )
    assert CosineRestarts(1.0, 4, mult, end_value=0.05).values(n) == approx(ref, rel=1e-9)


def test_inverse_sqrt():
    s = InverseSqrt(peak=1.0, warmup_steps=4)
    assert [s(0), s(2), s(4), s(16), s(100)] == approx([0.0, 0.5, 1.0, 0.5, 0.2])
    # Vaswani et al.: lrate = d^-0.5 * min(t^-0.5, t * w^-1.5)
    d, w = 512, 4000
    paper = InverseSqrt(peak=(d * w) ** -0.5, warmup_steps=w)
    for t in [1, 2000, 4000, 10_000, 10**6]:
        assert paper(t) == approx(d**-0.5 * min(t**-0.5, t * w**-1.5), rel=1e-12)


def test_join_boundaries():
    s = join([Constant(1.0), Constant(2.0), LinearWarmup(3.0, 10)], [5, 8])
    # each later schedule sees step - boundary
    assert [s(0), s(4), s(5), s(7), s(8), s(13), s(100)] == approx(
        [1.0, 1.0, 2.0, 2.0, 0.0, 1.5, 3.0]
    )
    assert isinstance(s, Join)
    with pytest.raises(ValueError, match="one more schedule"):
        join([Constant(1.0)], [3])
    with pytest.raises(ValueError, match="strictly increasing"):
        join([Constant(1.0)] * 3, [5, 5])


ALL_SCHEDULES = [
    Constant(0.5),
    LinearWarmup(1.0, 5, 0.1),
    StepDecay(1.0, 3),
    MultiStepDecay(1.0, (2, 4)),
    ExponentialDecay(1.0, 0.9),
    PolynomialDecay(1.0, 0.0, 7, 2.0),
    CosineDecay(1.0, 7, 0.1),
    WarmupCosine(1.0, 3, 10),
    WarmupStableDecay(1.0, 2, 12, 4, shape="1-sqrt"),
    OneCycle(1.0, 12),
    CosineRestarts(1.0, 3, 2),
    InverseSqrt(1.0, 3),
    join([LinearWarmup(1.0, 3), CosineDecay(1.0, 5)], [3]),
]


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedules_are_pure_picklable_and_hashable(schedule):
    clone = pickle.loads(pickle.dumps(schedule))
    assert clone == schedule and hash(clone) == hash(schedule)
    assert clone.values(20) == schedule.values(20) == [schedule(t) for t in range(20)]
    assert all(isinstance(v, float) for v in schedule.values(20))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: LinearWarmup(1.0, -1), "warmup_steps"),
        (lambda: LinearWarmup(float("nan"), 3), "peak"),
        (lambda: StepDecay(1.0, 0), "step_size"),
        (lambda: StepDecay(1.0, True), "step_size"),
        (lambda: CosineDecay(1.0, 2.5), "decay_steps"),
        (lambda: WarmupCosine(1.0, 10, 10), "total_steps"),
        (lambda: WarmupStableDecay(1.0, 10, 20, 11), "total_steps"),
        (lambda: WarmupStableDecay(1.0, 1, 20, 5, shape="exp"), "shape"),
        (lambda: OneCycle(1.0, 10, pct_start=0.05), "pct_start"),
        (lambda: OneCycle(1.0, 10, anneal="cosine"), "anneal"),
        (lambda: InverseSqrt(1.0, 0), "warmup_steps"),
        (lambda: CosineRestarts(1.0, 10, 0), "period_mult"),
        (lambda: MultiStepDecay(1.0, (3, -1)), "milestone"),
    ],
)
def test_invalid_arguments_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------- properties

finite = st.floats(-1e3, 1e3, allow_nan=False)
steps = st.integers(0, 10_000)


@settings(max_examples=60, deadline=None)
@given(peak=st.floats(0.0, 10.0), floor_frac=st.floats(0.0, 1.0), n=st.integers(1, 500), t=steps)
def test_cosine_stays_within_floor_and_peak(peak, floor_frac, n, t):
    floor = peak * floor_frac
    v = CosineDecay(peak, n, floor)(t)
    assert floor - 1e-12 <= v <= peak + 1e-12


@settings(max_examples=60, deadline=None)
@given(peak=st.floats(0.0, 10.0), init_frac=st.floats(0.0, 1.0), n=st.integers(0, 300), t=steps)
def test_warmup_is_monotone_up_to_peak(peak, init_frac, n, t):
    s = LinearWarmup(peak, n, peak * init_frac)
    assert s(t) <= s(t + 1) <= peak


@settings(max_examples=60, deadline=None)
@given(
    peak=st.floats(0.1, 10.0),
    warmup=st.integers(0, 50),
    decay=st.integers(1, 200),
    shape=st.sampled_from(["linear", "cosine", "1-sqrt"]),
    t=steps,
)
def test_wsd_stays_between_zero_and_peak_and_never_rises_after_warmup(
    peak, warmup, decay, shape, t
):
    s = WarmupStableDecay(peak, warmup, warmup + decay + 7, decay, shape=shape)
    assert 0.0 <= s(t) <= peak
    if t >= warmup:
        assert s(t + 1) <= s(t)


@settings(max_examples=40, deadline=None)
@given(a=finite, b=finite, boundary=st.integers(0, 100), t=steps)
def test_join_of_constants_switches_at_the_boundary(a, b, boundary, t):
    s = join([Constant(a), Constant(b)], [boundary])
    assert s(t) == (a if t < boundary else b)


@settings(max_examples=40, deadline=None)
@given(period=st.integers(1, 100), t=steps)
def test_sgdr_with_period_mult_one_is_periodic(period, t):
    s = CosineRestarts(1.0, period)
    assert s(t + period) == s(t)


# ---------------------------------------------------------------- HyperparamScheduler


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def train_step(model, opt):
    x = torch.linspace(-1, 1, 15, dtype=torch.float32).reshape(5, 3)
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


def test_adapter_drives_lr_like_torch_convention():
    opt = torch.optim.SGD(tiny_model().parameters(), lr=123.0)
    s = WarmupCosine(peak=0.1, warmup_steps=3, total_steps=10, init_value=0.01)
    sched = HyperparamScheduler(opt, s)
    assert isinstance(sched, torch_sched.LRScheduler)
    seen = [opt.param_groups[0]["lr"]]  # construction applies step 0
    for _ in range(11):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == s.values(12)
    assert sched.get_last_lr() == sched.get_last_value() == [s(11)]
    assert sched.last_epoch == 11
    assert opt.param_groups[0]["initial_lr"] == 123.0  # recorded once, as torch does


def test_adapter_drives_beta1_weight_decay_and_momentum():
    params = list(tiny_model().parameters())
    adam = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.5)
    beta1 = HyperparamScheduler(adam, LinearWarmup(0.9, 4, init_value=0.5), key="beta1")
    wd = HyperparamScheduler(adam, CosineDecay(0.5, 4, 0.1), key="weight_decay")
    sgd = torch.optim.SGD(params, lr=0.1, momentum=0.0)
    mom = HyperparamScheduler(sgd, StepDecay(0.99, 2, 0.5), key="momentum")
    for t in range(6):
        g_adam, g_sgd = adam.param_groups[0], sgd.param_groups[0]
        assert g_adam["betas"] == approx((min(0.5 + 0.1 * t, 0.9), 0.99))
        assert isinstance(g_adam["betas"], tuple) and g_adam["betas"][1] == 0.99
        assert g_adam["weight_decay"] == approx(CosineDecay(0.5, 4, 0.1)(t))
        assert g_sgd["momentum"] == 0.99 * 0.5 ** (t // 2)
        # get_last_lr stays an lr whatever key the scheduler drives
        assert beta1.get_last_lr() == [1e-3] and mom.get_last_lr() == [0.1]
        for s in (beta1, wd, mom):
            s.step()
    assert beta1.key == "betas[0]"
    index_form = HyperparamScheduler(adam, Constant(0.95), key="betas", index=1)
    assert adam.param_groups[0]["betas"][1] == 0.95 and index_form.key == "betas[1]"


def test_scheduled_training_equals_setting_the_values_by_hand():
    lr_s, b1_s, wd_s = WarmupCosine(1e-2, 2, 8, 1e-3), LinearWarmup(0.9, 5, 0.6), Constant(0.01)

    model_a = tiny_model()
    opt_a = torch.optim.Adam(model_a.parameters(), lr=0.0, betas=(0.0, 0.999))
    scheds = [
        HyperparamScheduler(opt_a, lr_s),
        HyperparamScheduler(opt_a, b1_s, key="beta1"),
        HyperparamScheduler(opt_a, wd_s, key="weight_decay"),
    ]
    model_b = tiny_model()
    opt_b = torch.optim.Adam(model_b.parameters())
    for t in range(10):
        g = opt_b.param_groups[0]
        g["lr"], g["betas"], g["weight_decay"] = lr_s(t), (b1_s(t), 0.999), wd_s(t)
        train_step(model_a, opt_a)
        train_step(model_b, opt_b)
        for s in scheds:
            s.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_per_group_and_relative_schedules():
    m = tiny_model()
    groups = [{"params": m[0].parameters(), "lr": 0.1}, {"params": m[2].parameters(), "lr": 1.0}]
    opt = torch.optim.SGD(groups, lr=0.5)
    sched = HyperparamScheduler(opt, [CosineDecay(0.1, 4), None])
    for t in range(5):
        assert [g["lr"] for g in opt.param_groups] == approx([CosineDecay(0.1, 4)(t), 1.0])
        assert sched.get_last_value() == [approx(CosineDecay(0.1, 4)(t)), None]
        sched.step()

    opt = torch.optim.SGD(m[0].parameters(), lr=0.1)
    opt.add_param_group({"params": m[2].parameters(), "lr": 1.0})
    rel = HyperparamScheduler(opt, LinearWarmup(1.0, 4), relative=True)
    for t in range(6):
        w = min(t, 4) / 4
        assert [g["lr"] for g in opt.param_groups] == approx([0.1 * w, 1.0 * w])
        rel.step()
    with pytest.raises(ValueError, match="one schedule per param group"):
        HyperparamScheduler(opt, [Constant(1.0)])


def test_tensor_lr_is_filled_in_place():
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=lr)
    held = opt.param_groups[0]["lr"]
    sched = HyperparamScheduler(opt, ExponentialDecay(0.02, 0.5))
    sched.step()
    assert opt.param_groups[0]["lr"] is held and held.item() == approx(0.01)


def test_adapter_errors_are_clear():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(KeyError, match="no 'betas'.*'momentum'"):
        HyperparamScheduler(opt, Constant(0.9), key="beta1")
    adam = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="pass index="):
        HyperparamScheduler(adam, Constant(0.9), key="betas")
    with pytest.raises(ValueError, match="no element 2"):
        HyperparamScheduler(adam, Constant(0.9), key="betas", index=2)
    with pytest.raises(TypeError, match="not an Optimizer"):
        HyperparamScheduler(object(), Constant(0.9))


def test_adapter_state_dict_is_plain_data_and_round_trips():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    sched = HyperparamScheduler(opt, LinearWarmup(0.9, 10), key="beta1")
    for _ in range(4):
        sched.step()
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    opt2 = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    sched2 = HyperparamScheduler(opt2, LinearWarmup(0.9, 10), key="beta1")
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 4 and opt2.param_groups[0]["betas"][0] == approx(0.36)
    sched2.step()
    assert opt2.param_groups[0]["betas"][0] == approx(0.45)
    lr_sched = HyperparamScheduler(opt2, Constant(0.1))
    with pytest.raises(ValueError, match="state_dict is for key='betas\\[0\\]'"):
        lr_sched.load_state_dict(state)


def test_step_with_epoch_jumps_in_closed_form():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = HyperparamScheduler(opt, CosineDecay(1.0, 10))
    sched.step(5)
    assert opt.param_groups[0]["lr"] == approx(0.5)


def make_opt(model):
    return torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.5, weight_decay=0.0)


def make_schedulers(opt):
    return [
        HyperparamScheduler(opt, WarmupCosine(0.1, 3, 15, 0.01)),
        HyperparamScheduler(opt, OneCycle(0.8, 20, init_value=0.95, end_value=0.9), "momentum"),
        HyperparamScheduler(opt, CosineRestarts(1e-3, 4, 2), key="weight_decay"),
    ]


def run(model, opt, scheds, num_steps, log):
    for _ in range(num_steps):
        train_step(model, opt)
        for s in scheds:
            s.step()
        log.append([s.get_last_value()[0] for s in scheds])


@pytest.mark.parametrize("load_optimizer_first", [True, False])
def test_resume_mid_schedule_equals_uninterrupted_run(load_optimizer_first):
    n, k = 20, 7
    straight_log = []
    model_ref = tiny_model()
    opt_ref = make_opt(model_ref)
    run(model_ref, opt_ref, make_schedulers(opt_ref), n, straight_log)

    resumed_log = []
    model = tiny_model()
    opt = make_opt(model)
    scheds = make_schedulers(opt)
    run(model, opt, scheds, k, resumed_log)
    buffer = io.BytesIO()
    ckpt = {"model": model.state_dict(), "opt": opt.state_dict()}
    torch.save({**ckpt, "scheds": [s.state_dict() for s in scheds]}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)

    model = tiny_model()
    model.load_state_dict(ckpt["model"])
    opt = make_opt(model)
    if load_optimizer_first:
        # Building schedulers now overwrites the loaded values with step 0's; their
        # load_state_dict restores step k's, so either order works.
        opt.load_state_dict(ckpt["opt"])
    scheds = make_schedulers(opt)
    if not load_optimizer_first:
        opt.load_state_dict(ckpt["opt"])
    for s, state in zip(scheds, ckpt["scheds"], strict=True):
        s.load_state_dict(state)
    run(model, opt, scheds, n - k, resumed_log)

    assert resumed_log == straight_log
    for pa, pb in zip(model.parameters(), model_ref.parameters(), strict=True):
        assert torch.equal(pa, pb)


# ---------------------------------------------------------------- ReduceOnPlateau


def plateau_lrs(metrics, **kwargs):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = ReduceOnPlateau(opt, **kwargs)
    lrs = []
    for m in metrics:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, sched


def test_plateau_reduces_after_patience_bad_epochs():
    # epoch 1 sets best = 1; epochs 2, 3 are the 2 tolerated bad ones; epoch 4 reduces.
    lrs, sched = plateau_lrs([1.0, 1.0, 1.0, 1.0, 1.0], factor=0.5, patience=2)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert sched.num_bad_epochs == 1 and sched.best == 1.0
    # an improvement resets the count
    lrs, _ = plateau_lrs([3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0], factor=0.5, patience=2)
    assert lrs == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]


def test_plateau_honours_cooldown_and_min_value():
    lrs, _ = plateau_lrs([1.0] * 7, factor=0.5, patience=0, cooldown=2)
    # reduce at epoch 2, two cooldown epochs not counted, reduce again at epoch 5
    assert lrs == [1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    lrs, _ = plateau_lrs([1.0] * 6, factor=0.1, patience=0, min_value=0.05)
    assert lrs == [1.0, 0.1, 0.05, 0.05, 0.05, 0.05]


def test_plateau_thresholds_and_max_mode():
    # rel threshold 0.1: 0.95 is not < 1 * 0.9, so it is a bad epoch
    lrs, _ = plateau_lrs([1.0, 0.95], factor=0.5, patience=0, threshold=0.1)
    assert lrs == [1.0, 0.5]
    lrs, _ = plateau_lrs([1.0, 1.05, 1.2], mode="max", factor=0.5, patience=0, threshold=0.1,
                         threshold_mode="abs")  # fmt: skip
    assert lrs == [1.0, 0.5, 0.5]
    lrs, _ = plateau_lrs([1.0, float("nan")], factor=0.5, patience=0)
    assert lrs == [1.0, 0.5]


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"mode": "max", "patience": 2, "cooldown": 1, "factor": 0.5},
        {"threshold_mode": "abs", "threshold": 0.05, "patience": 1, "cooldown": 3},
        {"patience": 0, "min_value": 0.02, "factor": 0.3},
    ],
)
def test_plateau_matches_torch(config):
    gen = torch.Generator().manual_seed(1)
    metrics = (torch.rand(60, generator=gen) + torch.linspace(1, 0, 60)).tolist()
    ours, _ = plateau_lrs(metrics, **config)
    torch_config = {("min_lr" if k == "min_value" else k): v for k, v in config.items()}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch_sched.ReduceLROnPlateau(opt, **torch_config)
    theirs = []
    for m in metrics:
        ref.step(m)
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == theirs
    assert len(set(ours)) > 1  # the sequence does exercise a reduction


def test_plateau_on_beta1_and_its_state_round_trips():
    def make():
        opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], betas=(0.9, 0.999))
        return opt, ReduceOnPlateau(opt, "beta1", factor=0.5, patience=1, cooldown=1)

    metrics = [5.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    opt, sched = make()
    straight = []
    for m in metrics:
        sched.step(m)
        straight.append(opt.param_groups[0]["betas"][0])
    assert straight[:5] == [0.9, 0.9, 0.9, 0.45, 0.45]

    opt, sched = make()
    resumed = []
    for m in metrics[:4]:
        sched.step(m)
        resumed.append(opt.param_groups[0]["betas"][0])
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    opt, sched = make()
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    assert sched.in_cooldown and sched.last_epoch == 4
    for m in metrics[4:]:
        sched.step(m)
        resumed.append(opt.param_groups[0]["betas"][0])
    assert resumed == straight


def test_plateau_rejects_bad_arguments():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="factor"):
        ReduceOnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        ReduceOnPlateau(opt, mode="lowest")
    with pytest.raises(ValueError, match="patience"):
        ReduceOnPlateau(opt, patience=-1)
    with pytest.raises(ValueError, match="expected 1 min_values"):
        ReduceOnPlateau(opt, min_value=[0.1, 0.2])
