"""The fused engine: same numbers as ``loop`` for every optimizer and switch, flat storage that
leaves the model alone, checkpoints that cross engines, and no recompiles under schedules."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import optimlab
from optimlab.core import codegen, fused, recording
from optimlab.core import flat as storage
from optimlab.reference import REFERENCES

import test_optimizers as optimizer_tests
from specs import SPEC_BY_NAME, SPECS, spec_configs, torch_kwargs
from test_optimizers import make_groups, reference_kwargs, rel_err

CASES = list(spec_configs())
CASE_IDS = [c[2] for c in CASES]
SHAPES = ((3, 4), (), (0,), (7,), (2, 3, 5))
MATRIX_SHAPES = ((3, 4), (4, 2), (0, 3), (5, 5), (2, 6))  # for optimizers of matrices


def make_params(dtype, spec=None, seed=0):
    """The same starting values in every dtype: drawn in float32, then cast. Shapes the
    optimizer of ``spec`` takes (matrices for Muon)."""
    shapes = MATRIX_SHAPES if spec is not None and spec.cls.__dict__.get("matrix_only") else SHAPES
    drawn = optimizer_tests.make_params(torch.float32, seed, shapes=shapes)
    return [p.detach().to(dtype).requires_grad_() for p in drawn]


def write_grads(params, step, seed=1):
    """Write gradients the way autograd does: into the existing ``.grad`` when there is one."""
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    for p in params:
        g = torch.randn(p.shape, generator=gen).to(p.dtype)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.copy_(g)


def run(spec, cfg, engine, dtype, steps, lr_schedule=True):
    """``steps`` steps of ``spec`` with ``cfg`` on ``engine``; the class's exact arithmetic
    (``float64_options``: Muon's Newton-Schulz in float64, whose bfloat16 default would turn
    rounding differences between engines into bfloat16 steps; tests/test_muon.py covers it)."""
    cfg = {**cfg, **spec.cls.float64_options}
    params = make_params(dtype, spec)
    opt = spec.cls(make_groups(params, cfg, spec.cls), **cfg, engine=engine)
    base = [g["lr"] for g in opt.param_groups]
    for step in range(steps):
        if lr_schedule:
            for group, lr in zip(opt.param_groups, base):
                group["lr"] = lr * (0.5 + 0.5 * math.cos(math.pi * step / steps))
        write_grads(params, step)
        opt.step()
    return params, opt


def fused_count(opt, steps: int) -> int:
    """Fused bucket-steps expected over ``steps`` steps of the two-group setup: every step of
    every bucket is fused (a flat group is one bucket; a batched one, one per parameter
    shape), except the first for optimizers whose state starts from the first gradient."""
    lazy = set(opt.lazy_state_keys) & set(opt._state_keys(opt.param_groups[0]))
    buckets = sum(len(flat) for flat in opt._flat.values())
    return buckets * (steps - 1 if lazy else steps)


@pytest.fixture
def eager_kernels(monkeypatch):
    """Run the recorded programs without torch.compile (same program, no codegen)."""
    monkeypatch.setattr(fused, "COMPILE", False)


@pytest.mark.parametrize(("spec", "cfg"), [c[:2] for c in CASES], ids=CASE_IDS)
def test_fused_matches_loop_float32(spec, cfg):
    """Compiled fused kernels (or torch's own, on the flat buffer) agree with the loop engine
    to float32 rounding over 100 steps with a cosine lr schedule."""
    pa, oa = run(spec, cfg, "loop", torch.float32, 100)
    pb, ob = run(spec, cfg, "fused", torch.float32, 100)
    assert ob.fused_stats["eager_steps"] == 0
    assert ob.fused_stats["fused_steps"] + ob.fused_stats["torch_fused_steps"] == fused_count(
        ob, 100
    )
    assert ob.fused_stats["grad_copies"] == 0  # gradients were written into the flat views
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for key in sa["state"]:
        assert sa["state"][key].keys() == sb["state"][key].keys()
        for name, value in sa["state"][key].items():
            torch.testing.assert_close(sb["state"][key][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("spec", "cfg"), [c[:2] for c in CASES], ids=CASE_IDS)
def test_fused_program_matches_reference_float64(spec, cfg, eager_kernels):
    """The recorded program (executed eagerly) is the reference algorithm, to float64 rounding."""
    params = make_params(torch.float64, spec)
    cfg = {**cfg, **spec.cls.float64_options}
    opt = spec.cls(make_groups(params, cfg, spec.cls), **cfg, engine="fused")
    ref = REFERENCES[spec.name]
    group_of = [0, 0, 0, 1, 1]
    thetas = [p.detach().numpy().copy() for p in params]
    states = [{} for _ in params]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # float64 scalar state, as in the reference
    try:
        for step in range(50):
            write_grads(params, step)
            grads = [p.grad.detach().numpy().copy() for p in params]
            opt.step()
            for i, g in enumerate(grads):
                kwargs = reference_kwargs(ref, opt, group_of[i])
                thetas[i] = ref(thetas[i], g, states[i], **kwargs)
    finally:
        torch.set_default_dtype(previous)
    assert opt.fused_stats["fused_steps"] + opt.fused_stats["torch_fused_steps"] == fused_count(
        opt, 50
    )
    for p, theta in zip(params, thetas):
        assert rel_err(p.detach().numpy(), theta) <= 1e-10


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_fused_float64_compiled_to_rounding(spec):
    pa, _ = run(spec, spec.configs[-1], "loop", torch.float64, 30)
    pb, _ = run(spec, spec.configs[-1], "fused", torch.float64, 30)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_fused_bf16_rounds_once(spec):
    """bf16 parameters keep bf16 state (torch's rule: state has the parameter's dtype). The fused
    kernel computes each element in fp32 and rounds once when storing, while loop/foreach round
    after every operation, so fused stays at least as close to an fp32 run."""
    exact, _ = run(spec, spec.configs[0], "loop", torch.float32, 20)
    loop, _ = run(spec, spec.configs[0], "loop", torch.bfloat16, 20)
    fused_, opt = run(spec, spec.configs[0], "fused", torch.bfloat16, 20)
    assert all(p.dtype == torch.bfloat16 for p in fused_)
    for p, state in opt.state.items():
        for key in opt._state_keys(opt.param_groups[0], p):
            assert state[key].dtype == torch.bfloat16
    err_loop = sum((a.float() - e).abs().sum().item() for a, e in zip(loop, exact))
    err_fused = sum((a.float() - e).abs().sum().item() for a, e in zip(fused_, exact))
    assert err_fused <= 1.5 * err_loop + 1e-3
    for a, e in zip(fused_, exact):
        torch.testing.assert_close(a.float(), e, rtol=0.05, atol=0.05)


def test_none_gradient_and_uneven_steps_fall_back_and_stay_exact(eager_kernels):
    """A step where one parameter has no gradient runs eagerly on the flat views (counted);
    the per-parameter step counts then differ, so the group is rebuilt at the next step with one
    bucket per step count, and fused again from that step on."""
    spec_cfg = {"lr": 0.01}
    results = []
    for engine in ("loop", "fused"):
        params = make_params(torch.float64)
        opt = optimlab.Adam(params, **spec_cfg, engine=engine)
        for step in range(12):
            write_grads(params, step)
            if step == 5:
                params[0].grad = None
            opt.step()
        results.append((params, opt))
    (pa, oa), (pb, ob) = results
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert ob.fused_stats["eager_steps"] == 1  # step 5
    assert ob.fused_stats["rebuilds"] == 2 and len(ob._flat[0]) == 2
    # steps 0-4 in one bucket, steps 6-11 in two (parameter 0 one step behind)
    assert ob.fused_stats["fused_steps"] + ob.fused_stats["torch_fused_steps"] == 5 + 2 * 6
    assert oa.state[pa[0]]["step"].item() == ob.state[pb[0]]["step"].item() == 11


def test_flat_storage_keeps_the_model_intact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = [id(p) for p in model.parameters()]
    opt = optimlab.AdamW(model.parameters(), lr=1e-2, engine="fused")
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert [id(p) for p in model.parameters()] == ids
    assert isinstance(model[0].weight, nn.Parameter)
    assert model.state_dict().keys() == before.keys()
    bucket = opt._flat[0][0]
    base = bucket.flat_param.data_ptr()
    size = bucket.flat_param.numel() * bucket.flat_param.element_size()
    for p in model.parameters():
        assert base <= p.data_ptr() < base + size
        assert p.grad.data_ptr() >= bucket.flat_grad.data_ptr()
    # opt.zero_grad() keeps the views, so backward accumulates in place: nothing is copied
    # (the first step's fresh gradients are moved in when the flat buffers are built)
    assert opt.fused_stats["grad_copies"] == 0
    assert opt.fused_stats["fused_steps"] + opt.fused_stats["torch_fused_steps"] == 3


@pytest.mark.parametrize("zero_grad", ["optimizer", "model"])
def test_gradients_made_after_zero_grad_to_none_are_routed_into_the_flat_buffer(zero_grad):
    """After ``zero_grad()`` (torch's default, ``set_to_none=True``) every ``p.grad`` is
    ``None``, as in torch; the next backward's gradients are routed into the flat buffer by the
    parameters' hooks, so the step itself copies nothing."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = optimlab.RAdam(model.parameters(), lr=1e-2, engine="fused")
    x = torch.randn(8, 4)
    for step in range(4):
        (opt if zero_grad == "optimizer" else model).zero_grad(set_to_none=True)
        if step:
            assert all(p.grad is None for p in model.parameters())
        model(x).pow(2).mean().backward()
        if step:
            bucket = opt._flat[0][0]
            assert all(p.grad is v for p, v in zip(bucket.params, bucket.grad_views))
        opt.step()
    assert opt.fused_stats["grad_copies"] == 0
    assert opt.fused_stats["fused_steps"] == 4  # the first step is fused too
    assert opt.step_info[0]["fused"] is True and opt.step_info[0]["grad_copies"] == 0


def test_a_gradient_assigned_by_hand_is_copied_in_and_counted():
    p = torch.nn.Parameter(torch.arange(4.0))
    opt = optimlab.Adam([p], lr=0.1, engine="fused")
    for step in range(3):
        p.grad = torch.full((4,), 1.0 + step)  # a new tensor, not through autograd
        opt.step()
    assert opt.fused_stats["grad_copies"] == 2  # the first one moved in with the buffers
    assert opt.step_info[0]["grad_copies"] == 1


def _moved_run(engine, move):
    """Adam over SHAPES for 8 steps; ``move(params, step)`` may re-point parameters."""
    params = make_params(torch.float64)
    opt = optimlab.Adam(params, lr=0.01, engine=engine)
    for step in range(8):
        write_grads(params, step)
        move(params, step)
        opt.step()
    return params, opt


@pytest.mark.parametrize("which", [0, 3], ids=["first", "middle"])
def test_a_parameter_re_pointed_elsewhere_is_noticed(which, eager_kernels):
    """``p.data = t`` after the flat buffers exist: the group runs one step eagerly, is rebuilt
    around the new storage and keeps matching ``foreach``."""

    def move(params, step):
        if step == 3:
            params[which].data = params[which].data.clone()

    (expected, _), (got, opt) = _moved_run("foreach", move), _moved_run("fused", move)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert opt.fused_stats["rebuilds"] == 2
    assert opt.fused_stats["eager_steps"] == 0  # the step after the move is not a flat step
    flat = opt._flat[0][0].flat_param
    assert flat.data_ptr() <= got[which].data_ptr() < flat.data_ptr() + flat.nbytes


def test_a_re_pointed_parameter_hidden_by_a_new_view_is_found_by_the_rotation(
    monkeypatch, eager_kernels
):
    """Moving a parameter while a view of another is made leaves the flat buffer's use count
    as it was; the rotating address check finds the move within len(params) / sample steps."""
    monkeypatch.setattr(storage, "ADDRESS_SAMPLE", 2)
    params = make_params(torch.float64)
    opt = optimlab.Adam(params, lr=0.01, engine="fused")
    keep, rebuilds = [], []
    for step in range(8):
        write_grads(params, step)
        if step == 2:
            keep.append(params[4].detach())
            params[3].data = params[3].data.clone()
        opt.step()
        rebuilds.append(opt.fused_stats["rebuilds"])
    # five parameters, two compared per step: parameter 3 is compared within three steps
    assert rebuilds[1] == 1 and rebuilds[2 + 3] == 2 and rebuilds[-1] == 2
    flat = opt._flat[0][0].flat_param
    assert flat.data_ptr() <= params[3].data_ptr() < flat.data_ptr() + flat.nbytes


def test_a_replaced_gradient_is_copied_even_while_the_old_view_is_kept(eager_kernels):
    """Holding the old ``.grad`` from Python does not hide its replacement: the view's use
    count (C++ references) still drops, and the new gradient is copied in at that step."""

    def replace(params, step):
        if step == 4:
            kept.append(params[2].grad)
            params[2].grad = torch.full_like(params[2], 0.5)

    kept = []
    (expected, _), (got, opt) = _moved_run("foreach", replace), _moved_run("fused", replace)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert opt.fused_stats["grad_copies"] == 1
    assert opt._flat[0][0].grad_counts is not None  # the shortcut was in use


def test_a_replaced_gradient_hidden_from_the_use_counts_is_found_by_the_rotation(
    monkeypatch, eager_kernels
):
    """``q.grad = p.grad; p.grad = new`` keeps the old view's use count: the rotating identity
    check finds the new gradient within len(params) / sample steps."""
    monkeypatch.setattr(storage, "GRAD_SAMPLE", 2)
    params = make_params(torch.float64)
    opt = optimlab.Adam(params, lr=0.01, engine="fused")
    holder = torch.zeros_like(params[3])
    copies = []
    for step in range(8):
        write_grads(params, step)
        if step == 3:
            holder.grad = params[3].grad
            params[3].grad = torch.ones_like(params[3])
        opt.step()
        copies.append(opt.fused_stats["grad_copies"])
    assert copies[2] == 0 and copies[3 + 2] == 1 and copies[-1] == 1


def test_without_use_counts_every_gradient_is_checked(monkeypatch, eager_kernels):
    monkeypatch.setattr(storage, "_USE_COUNT_WORKS", False)

    def replace(params, step):
        if step in (2, 5):
            params[1].grad = params[1].grad.clone()

    (expected, _), (got, opt) = _moved_run("foreach", replace), _moved_run("fused", replace)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert opt.fused_stats["grad_copies"] == 2
    assert opt._flat[0][0].grad_counts is None


def test_views_of_the_parameters_do_not_rebuild(eager_kernels):
    """A state_dict-style snapshot adds views of the flat buffer: the parameters are compared
    one by one once, found in place, and the flat buffers stay."""
    snapshots = []

    def move(params, step):
        if step in (2, 5):
            snapshots.append([p.detach() for p in params])
        if step == 6:
            snapshots.clear()

    (expected, _), (got, opt) = _moved_run("foreach", move), _moved_run("fused", move)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert opt.fused_stats["rebuilds"] == 1
    assert opt.fused_stats["fused_steps"] + opt.fused_stats["torch_fused_steps"] == 8


def test_frozen_parameters_stay_outside_and_the_rest_is_fused():
    """A frozen layer passed to the optimizer (no gradient) is skipped and left out of the flat
    buffers; the others are fused at every step. Unfreezing it rebuilds the group around it.
    Weights and checkpoints equal foreach's throughout."""
    runs = []
    for engine in ("foreach", "fused"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).double()
        model[0].requires_grad_(False)
        opt = optimlab.AdamW(model.parameters(), lr=1e-2, engine=engine)
        gen = torch.Generator().manual_seed(1)
        for step in range(12):
            if step == 6:
                model[0].requires_grad_(True)
            x = torch.randn(32, 6, generator=gen, dtype=torch.float64)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
            if step == 5:
                assert len(opt.state) == 2  # nothing for the frozen layer, as in torch
        runs.append((model, opt))
    (ma, oa), (mb, ob) = runs
    for a, b in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert ob.fused_stats["eager_steps"] == 0
    assert ob.fused_stats["rebuilds"] == 2  # at the first step, and after unfreezing
    # step 6 is eager (the new parameters had no state yet); from step 7 the group has two
    # buckets, the unfrozen layer being six steps behind
    assert len(ob._flat[0]) == 2 and not ob._flat[0].idle
    fused_steps = ob.fused_stats["fused_steps"] + ob.fused_stats["torch_fused_steps"]
    assert fused_steps == 6 + 2 * 5
    assert ob.state_dict()["state"].keys() == oa.state_dict()["state"].keys()


def test_a_parameter_that_stops_getting_gradients_leaves_and_frees_the_old_buffers(
    eager_kernels,
):
    """Freezing a layer mid-run (its .grad stays None): one eager step, then the group is
    rebuilt without it. Its data and state get storage of their own, so nothing keeps the old
    flat buffers alive; weights equal foreach's."""
    import gc
    import weakref

    runs = []
    for engine in ("foreach", "fused"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).double()
        opt = optimlab.Adam(model.parameters(), lr=1e-2, engine=engine)
        gen = torch.Generator().manual_seed(1)
        old = []
        for step in range(8):
            if step == 3:
                if engine == "fused":
                    bucket = opt._flat[0][0]
                    old = [weakref.ref(t) for t in (bucket.flat_param, bucket.state["exp_avg"])]
                    del bucket
                model[0].requires_grad_(False)
                model[0].weight.grad = model[0].bias.grad = None
            x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
            model.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
            opt.step()
        runs.append((model, opt, old))
    (ma, _, _), (mb, ob, old) = runs
    for a, b in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert ob.fused_stats["eager_steps"] == 1 and ob.fused_stats["rebuilds"] == 2
    assert ob._flat[0].idle == [mb[0].weight, mb[0].bias]
    gc.collect()
    assert all(ref() is None for ref in old)


def test_training_loop_fused_equals_foreach():
    runs = []
    for engine in ("foreach", "fused"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).double()
        opt = optimlab.NAdam(model.parameters(), lr=1e-2, weight_decay=0.01, engine=engine)
        gen = torch.Generator().manual_seed(1)
        for _ in range(25):
            x = torch.randn(32, 6, generator=gen, dtype=torch.float64)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        runs.append(model)
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_checkpoints_move_between_engines_and_torch(spec, eager_kernels):
    cfg = {**spec.configs[-1], **spec.cls.float64_options}
    straight, _ = run(spec, cfg, "loop", torch.float64, 20, lr_schedule=False)
    for first, second in (("fused", "loop"), ("loop", "fused"), ("fused", "fused")):
        params, opt = run(spec, cfg, first, torch.float64, 8, lr_schedule=False)
        buf = io.BytesIO()
        torch.save({"p": [p.detach() for p in params], "opt": opt.state_dict()}, buf)
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        params2 = make_params(torch.float64, spec)
        with torch.no_grad():
            for p, s in zip(params2, saved["p"]):
                p.copy_(s)
        opt2 = spec.cls(make_groups(params2, cfg, spec.cls), **cfg, engine=second)
        opt2.load_state_dict(saved["opt"])
        for step in range(8, 20):
            write_grads(params2, step)
            opt2.step()
        for a, b in zip(straight, params2):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    kwargs = torch_kwargs(spec, cfg) if spec.torch_exact else None
    if kwargs is not None and spec.torch_shapes == spec.shapes:
        params, opt = run(spec, cfg, "fused", torch.float64, 8, lr_schedule=False)
        theirs = spec.torch_cls(make_groups(params, cfg, spec.cls), **kwargs)
        theirs.load_state_dict(opt.state_dict())
        for step in range(8, 20):
            write_grads(params, step)
            theirs.step()
        for a, b in zip(straight, params):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["adam", "radam", "nadam", "adabound", "rmsprop", "sgd"])
def test_no_recompiles_under_a_cosine_lr_and_changing_beta(name, monkeypatch):
    """1,000 steps with a new lr and a new beta1 (or momentum) at every step compile nothing
    after the first fused step's program (RAdam's rectification switch included). Every call
    goes through dynamo's guards here, not only each signature's first."""
    monkeypatch.setattr(codegen, "DIRECT_CALLS", False)
    extra = {"sgd": {"momentum": 0.9}, "rmsprop": {"momentum": 0.5}}.get(name, {})
    params = make_params(torch.float32)
    opt = optimlab.create_optimizer(name, params, lr=1e-3, engine="fused", **extra)
    # Force the compiled path even where torch has a fused kernel for the formula.
    monkeypatch.setattr(type(opt), "_torch_kernel_applies", lambda *a, **k: False)
    for step in range(2):  # the first step is eager, the second compiles the program
        write_grads(params, step)
        opt.step()
    compiled = len(codegen._KERNELS)
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(1000):
            for group in opt.param_groups:
                group["lr"] = 1e-3 * (0.5 + 0.5 * math.cos(math.pi * step / 1000))
                if "betas" in group:
                    group["betas"] = (0.9 - 0.05 * step / 1000, group["betas"][1])
                elif group.get("momentum"):
                    group["momentum"] = 0.5 + 0.4 * step / 1000
            write_grads(params, step)
            opt.step()
    assert len(codegen._KERNELS) == compiled
    assert sum(torch._dynamo.utils.counters["recompiles"].values()) == 0
    assert opt.fused_stats["fused_steps"] >= 1000


def test_auto_fuses_large_groups_only(monkeypatch):
    small = [torch.randn(10, requires_grad=True)]
    opt = optimlab.Adam(small)
    for _ in range(3):
        small[0].grad = torch.randn(10)
        opt.step()
    assert not opt._flat
    monkeypatch.setattr(fused, "AUTO_MIN_NUMEL", 5)
    big = [torch.randn(10, requires_grad=True)]
    opt = optimlab.Adam(big)
    for _ in range(3):
        big[0].grad = torch.randn(10)
        opt.step()
    assert opt._flat and opt.fused_stats["torch_fused_steps"] == 3


def test_auto_fuses_on_cpu_and_cuda_only():
    from optimlab.core.engines import resolve_engine

    big = 10 * fused.AUTO_MIN_NUMEL
    assert resolve_engine("auto", big, torch.device("cpu")) == "fused"
    assert resolve_engine("auto", 10, torch.device("cuda")) == "fused"
    for other in ("mps", "xpu", "meta"):
        assert resolve_engine("auto", big, torch.device(other)) == "foreach"
    assert resolve_engine("fused", 10, torch.device("meta")) == "fused"  # asked for


class _Tagged(torch.Tensor):
    """A trivial tensor subclass, standing in for DTensor and other wrappers."""


def test_tensor_subclass_parameters_stay_on_the_eager_path(eager_kernels):
    """A tensor subclass (DTensor stands behind this) keeps its own storage and is stepped
    beside the buckets; the plain parameter of the same group is fused. Both as foreach."""
    results = []
    for engine in ("foreach", "fused"):
        p = torch.Tensor._make_subclass(_Tagged, torch.arange(6.0), True)
        q = torch.nn.Parameter(torch.arange(4.0))
        opt = optimlab.Adam([p, q], lr=0.1, engine=engine)
        for step in range(3):
            p.grad = torch.full((6,), 0.5 + step)
            q.grad = torch.full((4,), 1.5 - step)
            opt.step()
        assert type(p) is _Tagged
        results.append(([p.detach().as_subclass(torch.Tensor).clone(), q.detach()], opt))
    (a, _), (b, opt) = results
    flat = opt._flat[0]
    assert [bucket.params for bucket in flat] == [[q]] and flat.eager == [p]
    assert opt.step_info[0]["fused"] is True and opt.step_info[0]["eager_params"] == 1
    assert "tensor subclass _Tagged" in opt.step_info[0]["fallback"]
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x)


def test_complex_parameters_stay_on_the_eager_path(eager_kernels):
    p = torch.randn(4, dtype=torch.complex64, requires_grad=True)
    r = torch.randn(3, requires_grad=True)
    q, s = (t.detach().clone().requires_grad_() for t in (p, r))
    a = optimlab.Adam([p, r], lr=0.1, engine="fused")
    b = optimlab.Adam([q, s], lr=0.1, engine="loop")
    for _ in range(5):
        g, h = torch.randn(4, dtype=torch.complex64), torch.randn(3)
        p.grad, q.grad = g.clone(), g.clone()
        r.grad, s.grad = h.clone(), h.clone()
        a.step()
        b.step()
    assert a._flat[0].eager == [p] and a.step_info[0]["fallback"] == "complex parameter"
    assert a.fused_stats["fused_steps"] + a.fused_stats["torch_fused_steps"] == 5
    torch.testing.assert_close(p, q)
    torch.testing.assert_close(r, s)


def test_a_failing_compiler_falls_back_to_eager_kernels(monkeypatch):
    """Without a working toolchain the step still happens (eagerly), with a warning."""

    def broken_compile(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(codegen, "_KERNELS", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    pa, _ = run(SPEC_BY_NAME["amsbound"], {"lr": 0.01}, "loop", torch.float32, 5)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        pb, opt = run(SPEC_BY_NAME["amsbound"], {"lr": 0.01}, "fused", torch.float32, 5)
    assert opt.fused_stats["compile_failures"] == 2  # one program per param group
    assert opt.fused_stats["fused_steps"] == 10
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def _rmsprop_group_per_size(count, steps, engine="fused"):
    """RMSprop with one param group per parameter, ``count`` of them of lengths 5, 12, 19...
    and lrs 0.01 / (i + 1), as layer-wise lr decay makes them; ``steps`` float64 steps."""
    torch.manual_seed(0)
    params = [torch.randn(5 + 7 * i, dtype=torch.float64, requires_grad=True) for i in range(count)]
    groups = [{"params": [p], "lr": 0.01 / (i + 1)} for i, p in enumerate(params)]
    opt = optimlab.RMSprop(groups, engine=engine)
    for step in range(steps):
        write_grads(params, step)
        opt.step()
    return params, opt


def test_param_groups_of_many_sizes_share_one_compiled_kernel(monkeypatch):
    """Twelve groups of twelve sizes (one per layer, as layer-wise lr decay makes them) with
    the same configuration: one compiled program serves them all. With a static length each
    size was a recompile, and the ninth raised dynamo's recompile-limit error."""
    monkeypatch.setattr(codegen, "_KERNELS", {})
    pa, _ = _rmsprop_group_per_size(12, 3, engine="loop")
    torch._dynamo.utils.counters.clear()
    pb, opt = _rmsprop_group_per_size(12, 3)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert opt.fused_stats["fused_steps"] == 36
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def _the_compiled_kernel():
    (kernel,) = [k for k in codegen._KERNELS.values() if isinstance(k, codegen.CompiledKernel)]
    return kernel


def test_compiled_cpu_kernels_skip_dynamo_once_it_has_dispatched_a_signature(monkeypatch):
    """The first call of each signature (bucket length, grad mode, threads) goes through dynamo;
    later calls run the graph it picked directly, with the same numbers to the bit. A new
    thread count is a new signature: dynamo sees it and recompiles, as its guards demand."""
    monkeypatch.setattr(codegen, "_KERNELS", {})
    monkeypatch.setattr(codegen, "DIRECT_CALLS", False)
    through_dynamo, _ = _rmsprop_group_per_size(3, 4)
    kernel = _the_compiled_kernel()
    assert kernel.direct == {}

    monkeypatch.setattr(codegen, "DIRECT_CALLS", True)
    dispatched = []
    compiled = kernel.compiled

    def counting(inputs, scalars):
        dispatched.append(inputs[0].numel())
        return compiled(inputs, scalars)

    monkeypatch.setattr(kernel, "compiled", counting)
    direct, opt = _rmsprop_group_per_size(3, 4)
    assert opt.fused_stats["fused_steps"] == 12
    assert sorted(dispatched) == [5, 12, 19]  # once per bucket length, then directly
    assert len({graph for graph, _ in kernel.direct.values()}) == 1  # one graph for all sizes
    for a, b in zip(through_dynamo, direct):
        assert torch.equal(a, b)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        write_grads(direct, 4)
        opt.step()
    finally:
        torch.set_num_threads(threads)
    assert len(dispatched) == 6
    assert {sig[3] for sig in kernel.direct} == {threads, threads + 1}


def test_remembered_graphs_do_not_keep_old_flat_buffers_alive(monkeypatch):
    """A remembered dispatch holds positions, not tensors: after a rebuild the old flat
    buffers are freed, although only direct calls follow it."""
    import gc
    import weakref

    monkeypatch.setattr(codegen, "_KERNELS", {})
    params, opt = _rmsprop_group_per_size(3, 3)
    kernel = _the_compiled_kernel()
    remembered = dict(kernel.direct)
    old = [weakref.ref(t) for group in opt._flat.values() for b in group for t in b.state.values()]
    opt.load_state_dict(opt.state_dict())  # loaded state: every group is rebuilt
    for step in range(3, 5):
        write_grads(params, step)
        opt.step()
    assert opt.fused_stats["rebuilds"] == 6 and kernel.direct == remembered
    gc.collect()
    assert len(old) == 3 and all(ref() is None for ref in old)


def test_a_kernel_that_fails_to_recompile_runs_that_bucket_eagerly(monkeypatch, recwarn):
    """A compiled kernel that worked before and then fails to compile for another bucket (a
    recompile error) does not stop training: that step runs eagerly, with a warning, and the
    compiled kernel stays for the buckets it serves."""
    from torch._dynamo.exc import FailOnRecompileLimitHit

    params = make_params(torch.float64)
    opt = optimlab.RMSprop(params, lr=0.01, engine="fused")
    write_grads(params, 0)
    opt.step()
    ((key, kernel),) = [(k, v) for k, v in codegen._KERNELS.items() if k[3] == torch.float64][-1:]
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:
            raise FailOnRecompileLimitHit("recompile limit")
        return kernel(*args)

    monkeypatch.setitem(codegen._KERNELS, key, flaky)
    codegen._VERIFIED.add(flaky)
    expected = make_params(torch.float64)
    ref = optimlab.RMSprop(expected, lr=0.01, engine="loop")
    write_grads(expected, 0)
    ref.step()
    for step in range(1, 4):
        write_grads(params, step)
        write_grads(expected, step)
        opt.step()
        ref.step()
    for a, b in zip(expected, params):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert opt.fused_stats["compile_failures"] == 1
    assert codegen._KERNELS[key] is flaky and len(calls) == 3
    assert any("recompile limit" in str(w.message) for w in recwarn)


def test_kernel_source_is_straight_line():
    rec = recording.RecordingOps(2)
    ops_out = rec.sqrt([recording.Sym(1)])
    rec.addcdiv_([recording.Sym(0)], [recording.Sym(1)], ops_out, -0.5)
    source = codegen.kernel_source(tuple(rec.program), 2)
    assert "t2 = torch.sqrt(t1)" in source
    assert "t0.copy_(t0 + scalars[0] * (t1 / t2))" in source
    assert rec.values == [-0.5]
    np.testing.assert_equal(len(source.splitlines()), 4)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_model_training_on_device_matches_foreach_and_checkpoints_to_torch(device):
    """A model trained with the fused engine under ``model.zero_grad(set_to_none=True)``: the
    compiled kernel (RAdam has no torch fused kernel) gives foreach's weights, every new
    gradient is routed into the flat buffer by the hooks, and the checkpoint loads into
    torch.optim.RAdam on the same device, which then takes the same steps."""
    runs = []
    for engine in ("foreach", "fused"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 3)).to(device)
        opt = optimlab.RAdam(model.parameters(), lr=1e-2, weight_decay=0.01, engine=engine)
        gen = torch.Generator().manual_seed(1)
        for _ in range(12):
            x = torch.randn(16, 12, generator=gen).to(device)
            model.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
            opt.step()
        runs.append((model, opt))
    (ma, oa), (mb, ob) = runs
    for a, b in zip(ma.parameters(), mb.parameters()):
        assert b.device.type == device
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert ob.fused_stats["fused_steps"] == 12
    # the hooks routed every new gradient into the flat buffer: the steps copied nothing
    assert ob.fused_stats["grad_copies"] == 0
    buf = io.BytesIO()
    torch.save(ob.state_dict(), buf)  # a file, as a checkpoint: no state shared with ``ob``
    buf.seek(0)
    theirs = torch.optim.RAdam(ma.parameters(), lr=1e-2, weight_decay=0.01)
    theirs.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        for a, b in zip(ma.parameters(), mb.parameters()):
            a.copy_(b)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(16, 12, generator=gen).to(device)
        for model, opt in ((ma, theirs), (mb, ob)):
            model.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_fused_on_cuda_matches_loop(spec):
    def on_cuda(engine):
        params = [p.detach().cuda().requires_grad_() for p in make_params(torch.float32)]
        opt = spec.cls(
            make_groups(params, spec.configs[-1], spec.cls), **spec.configs[-1], engine=engine
        )
        for step in range(30):
            write_grads(params, step)
            opt.step()
        return params, opt

    pa, _ = on_cuda("loop")
    pb, ob = on_cuda("fused")
    assert ob.fused_stats["fused_steps"] == fused_count(ob, 30)  # compiled on CUDA
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_every_guard_around_a_fused_optimizer_matches_foreach():
    """Clipping, the non-finite guard, Lookahead, accumulation and EMA wrap a fused optimizer
    exactly as they wrap a foreach one, NaN step included."""

    def train(engine):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).double()
        opt = optimlab.RAdam(model.parameters(), lr=1e-2, engine=engine)
        chain = optimlab.clip_gradients(opt, max_norm=0.5)
        chain = optimlab.skip_nonfinite(chain, named_parameters=model.named_parameters())
        chain = optimlab.Lookahead(chain, k=3, alpha=0.5)
        chain = optimlab.accumulate_gradients(chain, 2)
        ema = optimlab.EMA(chain, decay=0.9)
        gen = torch.Generator().manual_seed(1)
        for step in range(40):
            x = torch.randn(16, 8, generator=gen, dtype=torch.float64)
            loss = model(x).pow(2).mean()
            if step == 11:
                loss = loss * float("nan")
            loss.backward()
            ema.step()
            ema.zero_grad()
        weights = [p.detach().clone() for p in model.parameters()]
        with ema.swapped():
            averaged = [p.detach().clone() for p in model.parameters()]
        return weights + averaged, opt

    expected, _ = train("foreach")
    got, opt = train("fused")
    assert opt.fused_stats["fused_steps"] > 10 and opt.fused_stats["grad_copies"] == 0
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("zero", ["optimizer", "keep", "model"])
@pytest.mark.parametrize("name", ["adamw", "sgd", "adagrad"])
def test_large_gradients_stay_where_autograd_made_them(name, zero, monkeypatch):
    """With torch's fused kernels, a parameter from DIRECT_GRAD_MIN_NUMEL elements (lowered
    here) keeps the gradient autograd made: nothing is copied for it, the kernel sees runs of
    the flat buffers plus that gradient, and the weights equal torch.optim's."""
    monkeypatch.setattr(storage, "DIRECT_GRAD_MIN_NUMEL", 64)
    cls = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}
    kwargs = {"sgd": {"momentum": 0.9}}.get(name, {})
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8)).double())
    ours = optimlab.create_optimizer(
        name, models[0].parameters(), lr=1e-2, engine="fused", **kwargs
    )
    theirs = cls[name](models[1].parameters(), lr=1e-2, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        x = torch.randn(12, 6, generator=gen, dtype=torch.float64)
        for model, opt in zip(models, (ours, theirs)):
            if zero == "optimizer":
                opt.zero_grad()
            elif zero == "keep":
                opt.zero_grad(set_to_none=False)
            else:
                model.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    bucket = ours._flat[0][0]
    assert bucket.direct == [models[0][0].weight, models[0][2].weight]  # 96 and 128 elements
    assert [len(p) for p, _, _ in bucket.runs] == [96, 16, 128, 8]
    assert ours.fused_stats["grad_copies"] == 0
    assert not any(v.data_ptr() == models[0][2].weight.grad.data_ptr() for v in bucket.grad_views)


def test_a_switch_away_from_torchs_kernel_rebuilds_with_every_gradient_in_the_buffer(
    monkeypatch, eager_kernels
):
    monkeypatch.setattr(storage, "DIRECT_GRAD_MIN_NUMEL", 64)
    torch.manual_seed(0)
    model = nn.Linear(16, 8).double()
    opt = optimlab.Adam(model.parameters(), lr=1e-2, amsgrad=True, engine="fused")
    twin = optimlab.Adam(
        [p.detach().clone().requires_grad_() for p in model.parameters()],
        lr=1e-2,
        amsgrad=True,
        engine="loop",
    )
    x = torch.randn(4, 16, dtype=torch.float64)
    for step in range(4):
        if step == 2:  # torch's kernel has no "corrected" AMSGrad: the compiled path takes over
            for o in (opt, twin):
                o.param_groups[0]["amsgrad_form"] = "corrected"
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        for p, q in zip(model.parameters(), twin.param_groups[0]["params"]):
            q.grad = p.grad.clone()
        opt.step()
        twin.step()
    assert not opt._flat[0][0].direct and opt.fused_stats["fused_steps"] == 1
    for p, q in zip(model.parameters(), twin.param_groups[0]["params"]):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("factored", [True, False])
def test_adafactor_batches_compile_and_match_the_loop_engine(factored):
    """Same-shape vectors (and matrices with a full second moment) form batches whose program
    reduces a state it has just updated; inductor's CPU code generator fails on some such
    batched programs, and the engine then runs the compiled program one parameter at a time
    (``step_info``: ``batch_split``), never eagerly and without a warning."""
    shapes = [(96,), (96,), (96,), (8, 12), (8, 12)]
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = optimlab.Adafactor(ours, factored=factored, engine="fused")
    b = optimlab.Adafactor(theirs, factored=factored, engine="loop")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _step_both(a, b, ours, theirs, gen, torch.float32)
    assert a.fused_stats["fused_steps"] > 0 and a.fused_stats.get("compile_failures", 0) == 0
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _step_both(a, b, ours, theirs, gen, dtype, steps: int = 4) -> None:
    """``steps`` steps of two optimizers on twin parameters, fed the same random gradients."""
    for _ in range(steps):
        for p, q in zip(ours, theirs):
            g = torch.randn(p.shape, generator=gen, dtype=dtype)
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()


ADAFACTOR_CONFIGS = (
    {},
    {"beta1": 0.9, "maximize": True, "weight_decay": 0.1},
    {"eps": (1e-30, 1e-3), "eps1_mode": "add", "relative_step": False, "lr": 0.05},
)


@pytest.mark.parametrize("cfg", ADAFACTOR_CONFIGS, ids=["torch", "beta1", "paper"])
def test_adafactor_is_compiled_in_segments_that_pass_only_small_values(cfg, monkeypatch):
    """A batched program with reductions is compiled as consecutive kernels, cut after each
    reduction and before the first full-size use of small per-row or per-column values
    (codegen.segments): the values handed from one kernel to the next are all smaller than
    the parameters (full-size ones are computed again), and the result equals the loop
    engine's in float64."""
    seen = []
    original = codegen.segments

    def spy(program, n_inputs, example):
        parts = original(program, n_inputs, example)
        seen.append((program, example, parts))
        return parts

    monkeypatch.setattr(codegen, "segments", spy)
    codegen.reset_kernels()
    shapes = [(8, 12), (8, 12), (8, 12), (12,), (12,)]
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = optimlab.Adafactor(ours, **cfg, engine="fused")
    b = optimlab.Adafactor(theirs, **cfg, engine="loop")
    _step_both(a, b, ours, theirs, gen, torch.float64)
    assert a.fused_stats["fused_steps"] > 0 and a.fused_stats.get("compile_failures", 0) == 0
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    matrices = [s for s in seen if s[1][0].dim() == 3 and s[2] is not None]
    assert matrices, "the matrix batch was not cut"
    for program, example, parts in matrices:
        assert len(parts) >= 4  # RMS(θ), rows, columns, RMS(U), the update
        sizes = _value_sizes(program, example)
        for _keep, given, returns in parts:
            for key in (*given, *returns):
                assert sizes[key] < example[0].numel(), key
        # every instruction runs in some segment; the last one writes the parameters
        assert set().union(*(keep for keep, _, _ in parts)) == set(range(len(program)))


def _value_sizes(program, example):
    """numel of each (slot, position) a program writes, run on meta tensors."""
    from optimlab.core.vocabulary import BY_NAME, math_function

    values = {i: torch.empty(t.shape, device="meta") for i, t in enumerate(example)}
    sizes = {}
    for position, (name, out, args, slots, statics) in enumerate(program):
        scalars = [torch.empty((), device="meta")] * len(slots)
        result = math_function(BY_NAME[name])(*(values[a] for a in args), *scalars, **dict(statics))
        slot = out if out >= 0 else args[0]
        values[slot] = result
        sizes[(slot, position)] = result.numel()
    return sizes


def test_a_program_that_cannot_be_sized_on_meta_tensors_compiles_as_one_kernel(monkeypatch):
    """Cutting a batched program needs its values' sizes (codegen.segments runs it on meta
    tensors); if that fails, the program is compiled whole and the step still runs."""

    def unsizable(*_args, **_kwargs):
        raise NotImplementedError("no meta kernel")

    monkeypatch.setattr(codegen, "_small_values", unsizable)
    codegen.reset_kernels()
    gen = torch.Generator().manual_seed(0)
    ours = [
        torch.randn(6, 5, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(2)
    ]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = optimlab.Adafactor(ours, engine="fused")
    b = optimlab.Adafactor(theirs, engine="loop")
    _step_both(a, b, ours, theirs, gen, torch.float64, steps=2)
    kernels = list(codegen._KERNELS.values())
    assert kernels and not any(isinstance(k, codegen.SegmentedKernel) for k in kernels)
    assert a.fused_stats["fused_steps"] > 0 and a.fused_stats.get("compile_failures", 0) == 0
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_segments_give_each_value_in_the_version_a_later_segment_needs():
    """A matrix product, scaled in place before a reduction ends the segment, then used after
    the cut: the later segment must get the scaled product, not scale it a second time.
    The segments, run one after another without compiling, equal the whole program."""
    program = (
        ("matmul", 2, (0, 1), (), ()),  # t2 = t0 @ t1
        ("mul_", -1, (2,), (0,), ()),  # t2 *= s0
        ("rms", 3, (1,), (), ()),  # t3 = rms(t1): a cut after it
        ("add_", -1, (0, 2), (1,), ()),  # t0 += s1 * t2
        ("mul_tensors_", -1, (0, 3), (), ()),  # t0 *= t3
    )
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(3, 4, 4, generator=gen, dtype=torch.float64) for _ in range(2)]
    scalars = torch.tensor([3.0, 0.5], dtype=torch.float64)
    parts = codegen.segments(program, 2, inputs)
    assert parts is not None and len(parts) == 2
    whole = [t.clone() for t in inputs]
    codegen.build_kernel(program, 2)(whole, scalars)
    cut = [t.clone() for t in inputs]
    codegen.SegmentedKernel(program, 2, parts, wrap=lambda fn: fn)(cut, scalars)
    torch.testing.assert_close(cut[0], whole[0], rtol=0, atol=0)
