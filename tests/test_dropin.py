"""Drop-in exactness: replacing ``torch.optim.X`` by ``optimlab.X`` changes nothing, whatever the
training loop does, on every engine.

Each test runs the same loop twice, once with torch.optim's optimizer and once with optimlab's
twin, in float64, and compares every parameter (and the lr/momentum sequence where a scheduler
drives it). The loops are the everyday patterns that used to differ silently: a branch that
gets no gradient under each way of zeroing gradients, schedulers attached after the lr was
changed or a checkpoint was loaded, sparse embeddings, checkpoints crossing between the two
libraries mid-run, and a ``torch.compile``d training step.
"""

from __future__ import annotations

import functools
import inspect
import io

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as lrs

from optimlab.core import fused

from specs import SPECS, torch_kwargs

F64 = torch.float64
ENGINES = ("loop", "foreach", "fused")
#: optimizers with a torch twin that computes the same numbers to rounding (Muon's bfloat16
#: Newton-Schulz has its own drop-in tests in test_muon.py)
TWINS = [s for s in SPECS if s.torch_exact]


def richest_config(spec) -> dict:
    """The spec's config with the most switches that torch.optim also computes."""
    return max((c for c in spec.configs if torch_kwargs(spec, c) is not None), key=len)


def pair(spec, params_ours, params_theirs, engine, cfg=None, **extra):
    """optimlab's optimizer on ``params_ours`` and its torch.optim twin on ``params_theirs``."""
    cfg = richest_config(spec) if cfg is None else cfg
    ours = spec.cls(params_ours, **cfg, **extra, engine=engine)
    theirs = spec.torch_cls(params_theirs, **torch_kwargs(spec, cfg), **extra)
    return ours, theirs


def assert_same(a_params, b_params, rtol=1e-12):
    for a, b in zip(a_params, b_params, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=1e-14)


@pytest.fixture(autouse=True)
def eager_kernels(monkeypatch):
    """The fused engine's recorded programs run without codegen here (the same program; the
    compiled path is covered in test_fused.py and below by one compiled run)."""
    monkeypatch.setattr(fused, "COMPILE", False)


# -- a branch without gradients, under every way of zeroing them ------------------------------
class TwoHeads(nn.Module):
    """A trunk and two heads; the second head is used at some steps only (a conditional
    branch, an MoE expert, the other half of a GAN)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 8)
        self.head = nn.Linear(8, 2)
        self.other = nn.Linear(8, 2)

    def forward(self, x, use_other: bool):
        h = torch.tanh(self.trunk(x))
        return self.head(h) + (self.other(h) if use_other else 0.0)


def two_heads():
    torch.manual_seed(0)
    return TwoHeads().double()


USES_OTHER = [True, True, False, False, False, True, False, True, True, False]
ZERO_GRADS = ("optimizer", "optimizer_keep", "model", "none")


def zero(kind, model, opt):
    if kind == "optimizer":
        opt.zero_grad()
    elif kind == "optimizer_keep":
        opt.zero_grad(set_to_none=False)
    elif kind == "model":
        model.zero_grad()


@pytest.mark.parametrize("kind", ZERO_GRADS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("spec", TWINS, ids=lambda s: s.name)
def test_a_branch_without_gradients_moves_as_in_torch(spec, engine, kind):
    ours_model, theirs_model = two_heads(), two_heads()
    ours, theirs = pair(spec, ours_model.parameters(), theirs_model.parameters(), engine)
    gen = torch.Generator().manual_seed(1)
    other_before = ours_model.other.weight.detach().clone()
    fused_steps = 0
    for step, use_other in enumerate(USES_OTHER):
        x = torch.randn(16, 6, generator=gen, dtype=F64)
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            zero(kind, model, opt)
            model(x, use_other).pow(2).mean().backward()
            opt.step()
        fused_steps += any(info.get("fused") for info in ours.step_info)
        assert_same(ours_model.parameters(), theirs_model.parameters())
        for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
            assert (a.grad is None) == (b.grad is None), step  # torch's meaning of .grad
        if step == 1:
            other_before = ours_model.other.weight.detach().clone()
        if step == 4 and kind in ("optimizer", "model"):
            # unused since step 2 with gradients set to None: not stepped, as in torch
            assert torch.equal(ours_model.other.weight.detach(), other_before)
    if engine == "fused":
        assert fused_steps >= 3


def test_the_unused_branch_of_the_issue_stays_put_on_the_compiled_fused_engine(monkeypatch):
    """Two Linear(64, 64) branches, Adam(lr=1e-2), one branch unused: with compiled kernels
    and the default zero_grad, the unused branch does not move at all."""
    monkeypatch.setattr(fused, "COMPILE", True)
    import optimlab

    torch.manual_seed(0)
    a, b = nn.Linear(64, 64), nn.Linear(64, 64)
    opt = optimlab.Adam([*a.parameters(), *b.parameters()], lr=1e-2, engine="fused")
    x = torch.randn(8, 64)
    a(x).pow(2).mean().backward()
    b(x).pow(2).mean().backward()
    opt.step()  # both branches have state now
    before = b.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        a(x).pow(2).mean().backward()
        opt.step()
    assert torch.equal(b.weight.detach(), before)
    assert b.weight.grad is None
    assert opt.step_info[0]["fused"] is True


# -- schedulers -------------------------------------------------------------------------------
def _cycles_momentum(opt) -> bool:
    return "momentum" in opt.defaults or "betas" in opt.defaults


SCHEDULERS = {
    "LambdaLR": lambda o: lrs.LambdaLR(o, lambda e: 0.9**e),
    "MultiplicativeLR": lambda o: lrs.MultiplicativeLR(o, lambda e: 0.95),
    "StepLR": lambda o: lrs.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o: lrs.MultiStepLR(o, milestones=[2, 5], gamma=0.3),
    "ConstantLR": lambda o: lrs.ConstantLR(o, factor=0.5, total_iters=4),
    "LinearLR": lambda o: lrs.LinearLR(o, start_factor=0.2, total_iters=5),
    "ExponentialLR": lambda o: lrs.ExponentialLR(o, gamma=0.9),
    "PolynomialLR": lambda o: lrs.PolynomialLR(o, total_iters=8, power=2.0),
    "CosineAnnealingLR": lambda o: lrs.CosineAnnealingLR(o, T_max=5),
    "CosineAnnealingWarmRestarts": lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
    "CyclicLR": lambda o: lrs.CyclicLR(
        o, base_lr=0.001, max_lr=0.02, step_size_up=3, cycle_momentum=_cycles_momentum(o)
    ),
    "OneCycleLR": lambda o: lrs.OneCycleLR(o, max_lr=0.05, total_steps=20, cycle_momentum=True),
    "SequentialLR": lambda o: lrs.SequentialLR(
        o,
        [lrs.LinearLR(o, start_factor=0.1, total_iters=3), lrs.ExponentialLR(o, gamma=0.9)],
        milestones=[3],
    ),
    "ChainedScheduler": lambda o: lrs.ChainedScheduler(
        [lrs.ConstantLR(o, factor=0.5, total_iters=3), lrs.ExponentialLR(o, gamma=0.9)]
    ),
    "ReduceLROnPlateau": lambda o: lrs.ReduceLROnPlateau(o, factor=0.5, patience=1),
}


def _params():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=F64).requires_grad_() for s in ((3, 4), (5,))]


def _grads(step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen, dtype=F64) for s in ((3, 4), (5,))]


def _scheduled_run(make_opt, name, steps, *, lr_before=0.01, opt=None, params=None):
    """``steps`` steps under scheduler ``name``, attached after the groups' lr was set to
    ``lr_before``; the lr, momentum and betas of every step, and the parameters."""
    if opt is None:
        params = _params()
        opt = make_opt(params)
        for group in opt.param_groups:
            group["lr"] = lr_before
    try:
        sched = SCHEDULERS[name](opt)
    except Exception as error:  # noqa: BLE001 - both libraries must refuse alike
        return ("refused", type(error), str(error)), opt, params
    seen = []
    for step in range(steps):
        for p, g in zip(params, _grads(step)):
            p.grad = g
        opt.step()
        sched.step(1.0) if name == "ReduceLROnPlateau" else sched.step()
        group = opt.param_groups[0]
        seen.append((group["lr"], group.get("momentum"), group.get("betas")))
    return seen, opt, params


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("spec", TWINS, ids=lambda s: s.name)
def test_every_torch_scheduler_attached_after_an_lr_change(spec, name):
    cfg = richest_config(spec)
    runs = []
    for engine in ENGINES:
        runs.append(_scheduled_run(lambda p, e=engine: spec.cls(p, **cfg, engine=e), name, 12))
    theirs = _scheduled_run(lambda p: spec.torch_cls(p, **torch_kwargs(spec, cfg)), name, 12)
    for seen, _, params in runs:
        assert seen == theirs[0]
        if theirs[2] is not None:
            assert_same(params, theirs[2])
    if theirs[0][0] != "refused":
        assert len({s[0] for s in theirs[0]}) > 1  # the schedule really moved the lr


@pytest.mark.parametrize("name", ["CosineAnnealingLR", "LambdaLR", "OneCycleLR", "StepLR"])
@pytest.mark.parametrize("spec", TWINS, ids=lambda s: s.name)
def test_a_scheduler_attached_after_a_checkpoint_was_loaded(spec, name):
    """Train under a scheduler, save; a fresh optimizer loads the checkpoint (its groups then
    carry ``initial_lr``) and a new scheduler is attached: same lr and parameters as torch."""
    cfg = richest_config(spec)

    def resumed(make_opt):
        first, opt, params = _scheduled_run(make_opt, name, 4)
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        buf.seek(0)
        fresh = make_opt([p.detach().clone().requires_grad_() for p in params])
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        params = fresh.param_groups[0]["params"]
        second, _, new_params = _scheduled_run(make_opt, name, 6, opt=fresh, params=params)
        return first, second, new_params

    theirs = resumed(lambda p: spec.torch_cls(p, **torch_kwargs(spec, cfg)))
    for engine in ENGINES:
        ours = resumed(lambda p, e=engine: spec.cls(p, **cfg, engine=e))
        assert ours[0] == theirs[0] and ours[1] == theirs[1]
        if theirs[2] is not None:
            assert_same(ours[2], theirs[2])


def test_schedulers_find_no_initial_lr_written_by_construction():
    import optimlab

    p = torch.nn.Parameter(torch.zeros(2, 2))  # a matrix: Muon takes nothing else
    for name in optimlab.available_optimizers():
        opt = optimlab.create_optimizer(name, [p])
        assert "initial_lr" not in opt.param_groups[0], name
        with pytest.raises(KeyError, match="initial_lr"):  # torch's error when resuming
            lrs.StepLR(opt, step_size=2, last_epoch=3)


# -- sparse gradients -------------------------------------------------------------------------
SPARSE_CONFIGS = {
    "sgd": (
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True},
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.3},
    ),
    "adagrad": (
        {"lr": 0.1},
        {"lr": 0.1, "lr_decay": 0.1, "initial_accumulator_value": 0.2},
        {"lr": 0.1, "maximize": True, "eps": 1e-6},
    ),
}


def _embedding_model():
    torch.manual_seed(0)
    return nn.ModuleDict({"emb": nn.Embedding(12, 4, sparse=True), "out": nn.Linear(4, 1)}).double()


def _embedding_loss(model, step):
    gen = torch.Generator().manual_seed(step)
    idx = torch.randint(0, 12, (7,), generator=gen)  # repeated indices: uncoalesced gradients
    return model["out"](model["emb"](idx)).pow(2).sum()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("spec", "cfg"),
    [(s, c) for s in TWINS for c in SPARSE_CONFIGS.get(s.name, ())],
    ids=lambda v: getattr(v, "name", None) or "-".join(f"{k}={x}" for k, x in v.items()),
)
def test_sparse_embeddings_train_as_in_torch(spec, cfg, engine):
    ours_model, theirs_model = _embedding_model(), _embedding_model()
    ours, theirs = pair(spec, ours_model.parameters(), theirs_model.parameters(), engine, cfg)
    for step in range(8):
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            opt.zero_grad()
            _embedding_loss(model, step).backward()
            opt.step()
        assert_same(ours_model.parameters(), theirs_model.parameters())
    assert_same(
        [v for s in ours.state.values() for v in s.values() if torch.is_tensor(v)],
        [v for s in theirs.state.values() for v in s.values() if torch.is_tensor(v)],
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "spec", [s for s in TWINS if s.name not in SPARSE_CONFIGS], ids=lambda s: s.name
)
def test_sparse_gradients_are_refused_with_torchs_message_on_every_engine(spec, engine):
    model = _embedding_model()
    ours = spec.cls(model.parameters(), engine=engine)
    theirs = spec.torch_cls(_embedding_model().parameters())
    _embedding_loss(model, 0).backward()
    for p, q in zip(model.parameters(), theirs.param_groups[0]["params"]):
        q.grad = p.grad.clone()
    with pytest.raises(RuntimeError) as torch_error:
        theirs.step()
    with pytest.raises(RuntimeError, match="does not support sparse gradients") as our_error:
        ours.step()
    assert str(our_error.value) == str(torch_error.value)


def test_sparse_gradients_with_coupled_decay_fail_as_in_torch():
    import optimlab

    for ours_cls, theirs_cls in ((optimlab.Adagrad, torch.optim.Adagrad),):
        errors = []
        for cls in (ours_cls, theirs_cls):
            model = _embedding_model()
            opt = cls(model.parameters(), weight_decay=0.1)
            _embedding_loss(model, 0).backward()
            with pytest.raises(RuntimeError) as error:
                opt.step()
            errors.append(str(error.value))
        assert errors[0] == errors[1]


# -- checkpoints crossing mid-run -------------------------------------------------------------
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _train(model, opt, steps, start):
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        x = torch.randn(10, 5, generator=gen, dtype=F64)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _through_a_file(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _crossed(make_first, make_second):
    """5 steps with ``make_first``'s optimizer, its checkpoint through a file into
    ``make_second``'s, 5 more steps; the final weights."""
    first_model = _mlp()
    first = make_first(first_model)
    _train(first_model, first, 5, 0)
    second_model = _mlp()
    second_model.load_state_dict(first_model.state_dict())
    second = make_second(second_model)
    second.load_state_dict(_through_a_file(first.state_dict()))
    _train(second_model, second, 5, 5)
    return list(second_model.parameters())


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("spec", TWINS, ids=lambda s: s.name)
def test_checkpoints_cross_mid_run(spec, engine, direction):
    """5 steps with one library, save, load into the other, 5 more steps: the same weights as
    torch.optim saving and loading its own checkpoint at the same point. (Loading casts state to
    the parameter's dtype, so NAdam's float32 ``mu_product`` continues in float64 after any
    load, in torch as here.)"""
    cfg = richest_config(spec)

    def ours(m):
        return spec.cls(m.parameters(), **cfg, engine=engine)

    def theirs(m):
        return spec.torch_cls(m.parameters(), **torch_kwargs(spec, cfg))

    reference = _crossed(theirs, theirs)
    crossed = _crossed(ours, theirs) if direction == "ours_to_torch" else _crossed(theirs, ours)
    assert_same(crossed, reference)


# -- a compiled training step -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_torch_compiled_training_step(engine, monkeypatch):
    """``torch.compile`` of a whole training step (forward, backward, step, zero_grad): dynamo
    leaves optimlab's step to its engine (a graph break) and the weights equal torch.optim's
    eager ones. (torch.optim's own step, when dynamo traces it, can differ from its eager step
    by far more than rounding: 4e-7 in float64 for AdamW here, so eager is the yardstick.)"""
    monkeypatch.setattr(fused, "COMPILE", True)

    def train_step(model, opt, x):
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    compiled = torch.compile(train_step)
    for spec in TWINS:
        cfg = richest_config(spec)
        ours_model, theirs_model = _mlp(), _mlp()
        ours, theirs = pair(spec, ours_model.parameters(), theirs_model.parameters(), engine, cfg)
        for step in range(4):
            gen = torch.Generator().manual_seed(step)
            x = torch.randn(10, 5, generator=gen, dtype=F64)
            compiled(ours_model, ours, x)
            train_step(theirs_model, theirs, x)
        assert_same(ours_model.parameters(), theirs_model.parameters(), rtol=1e-10)


# -- differentiable=True ----------------------------------------------------------------------
def _differentiable_run(make, steps):
    """``steps`` recorded steps on a non-leaf parameter; the parameter and the gradients of a
    loss after them with respect to the initial weights and to every gradient fed in."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, generator=gen, dtype=F64, requires_grad=True)
    fed = [torch.randn(3, 4, generator=gen, dtype=F64, requires_grad=True) for _ in range(steps)]
    p = start * 1.0  # a non-leaf tensor: the step is part of the graph
    try:
        opt = make([p])
        step = opt.step
    except ValueError:  # a torch class without the switch (Adafactor) refuses non-leaf tensors
        opt = make([start.detach().requires_grad_()])
        opt.param_groups[0]["params"] = [p]
        step = functools.partial(inspect.unwrap(type(opt).step), opt)  # autograd left on
    for g in fed:
        p.grad = g * 1.0
        with torch.enable_grad():
            step()
    return p.detach(), torch.autograd.grad(p.pow(2).sum(), [start, *fed])


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("spec", TWINS, ids=lambda s: s.name)
def test_differentiable_steps_carry_the_same_gradients_as_torch(spec, steps):
    """``differentiable=True`` (meta-learning, gradients through unrolled steps): parameters
    may be non-leaf tensors, autograd records the step, and the gradients of a loss after the
    steps with respect to the initial weights and to the gradients fed in equal torch.optim's.
    (Over two steps torch's own RMSprop(centered), AMSGrad and Adamax modify a tensor their
    first step saved and cannot differentiate; optimlab can, and that case is compared with
    nothing.) float64 default dtype: torch's differentiable path computes bias corrections in
    the step counter's dtype."""
    cfg = richest_config(spec)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        ours = _differentiable_run(lambda p: spec.cls(p, **cfg, differentiable=True), steps)
        try:
            switch = "differentiable" in inspect.signature(spec.torch_cls).parameters
            flag = {"differentiable": True} if switch else {}
            theirs = _differentiable_run(
                lambda p: spec.torch_cls(p, **torch_kwargs(spec, cfg), **flag), steps
            )
        except RuntimeError as error:
            # torch's own RMSprop(centered), AMSGrad and Adamax over two steps, and its
            # Adafactor at all: test_differentiable_steps_match_finite_differences covers them
            assert "modified by an inplace operation" in str(error)
            assert steps == 2 or spec.name == "adafactor"
            return
    finally:
        torch.set_default_dtype(previous)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-14)
    for a, b in zip(ours[1], theirs[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS if "differentiable" in inspect.signature(s.cls).parameters],
    ids=lambda s: s.name,
)
def test_differentiable_steps_match_finite_differences(spec):
    """The gradient through two ``differentiable=True`` steps, with respect to the initial
    weights and both gradients fed in, against central finite differences (float64
    ``gradcheck``): the check that needs no torch twin, and covers the cases torch.optim
    cannot differentiate."""
    # SGD's first momentum buffer is detached, as torch's is (docs/engines.md): momentum-free
    configs = [c for c in spec.configs if spec.name != "sgd" or "momentum" not in c]
    cfg = max(configs, key=len)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(3, 4, generator=gen, dtype=F64, requires_grad=True) for _ in range(3)]

    def after_two_steps(start, *fed):
        p = start * 1.0
        opt = spec.cls([p], **cfg, **spec.cls.float64_options, differentiable=True)
        for g in fed:
            p.grad = g * 1.0
            opt.step()
        return p

    assert torch.autograd.gradcheck(after_two_steps, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_torchs_switches_map_onto_engines_and_conflicts_fail_as_in_torch():
    import optimlab

    p = torch.nn.Parameter(torch.zeros(2))
    assert optimlab.Adam([p], foreach=True).engine == "foreach"
    assert optimlab.Adam([p], foreach=False).engine == "loop"
    assert optimlab.Adam([p], fused=True).engine == "fused"
    assert optimlab.RMSprop([p], 0.01, 0.99, 1e-8, 0, 0, False, False, True).engine == "foreach"
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        optimlab.AdamW([p], fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        optimlab.SGD([p], fused=True, differentiable=True)
    with pytest.raises(ValueError, match="engine='loop' contradicts fused=True"):
        optimlab.SGD([p], fused=True, engine="loop")
    with pytest.raises(ValueError, match="decoupled_weight_decay=True contradicts"):
        optimlab.NAdam([p], decoupled_weight_decay=True, weight_decay_mode="scheduled")
    opt = optimlab.RAdam([p], 1e-3, (0.9, 0.999), 1e-8, 0.1, True)  # torch's positional order
    assert opt.param_groups[0]["weight_decay_mode"] == "decoupled"
    # per group, as torch reads them
    q = torch.nn.Parameter(torch.zeros(3))
    opt = optimlab.Adam([{"params": [p]}, {"params": [q], "foreach": False}])
    p.grad, q.grad = torch.ones(2), torch.ones(3)
    opt.step()
    assert [info["engine"] for info in opt.step_info] == ["foreach", "loop"]


def test_capturable_fails_where_torch_fails():
    import optimlab

    for ours, theirs in (
        (optimlab.Adam, torch.optim.Adam),
        (optimlab.RMSprop, torch.optim.RMSprop),
    ):
        errors = []
        for cls in (ours, theirs):
            p = torch.nn.Parameter(torch.zeros(2))
            opt = cls([p], capturable=True)
            p.grad = torch.ones(2)
            with pytest.raises(AssertionError) as error:
                opt.step()
            errors.append(str(error.value))
        assert errors[0] == errors[1]
