"""Spec-driven tests: every optimizer against its NumPy reference, torch.optim, itself across
engines and checkpoints, and its error messages. The specs live in ``tests/specs.py``."""

from __future__ import annotations

import copy
import inspect
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import optimlab
from optimlab.reference import REFERENCES

from specs import SHAPES, SPEC_BY_NAME, SPECS, _common_errors, spec_configs, torch_kwargs

ROOT = Path(__file__).resolve().parents[1]
CASES = list(spec_configs())
CASE_IDS = [c[2] for c in CASES]


# -- helpers ---------------------------------------------------------------------------------
def default_lr(cls) -> float:
    return inspect.signature(cls).parameters["lr"].default


def make_params(dtype=torch.float64, seed=0, complex_=False, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        t = torch.randn(shape, dtype=dtype, generator=gen)
        if complex_:
            t = torch.complex(t, torch.randn(shape, dtype=dtype, generator=gen))
        out.append(t.requires_grad_())
    return out


def make_groups(params, cfg, cls):
    """Two param groups (the first half rounded up, then the rest): the second with its own
    lr and weight decay."""
    lr = cfg.get("lr", default_lr(cls))
    half = (len(params) + 1) // 2
    return [
        {"params": params[:half]},
        {
            "params": params[half:],
            "lr": 0.5 * lr,
            "weight_decay": cfg.get("weight_decay", 0) + 0.05,
        },
    ]


def grads_for_step(step, params, seed=1):
    """Random gradients, with a None gradient (step 7) and a zero gradient (step 13)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    grads = []
    for i, p in enumerate(params):
        g = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        if step == 7 and i == 0:
            g = None
        elif step == 13 and i == 3:
            g = torch.zeros_like(p)
        grads.append(g)
    return grads


def apply_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()


def schedule_lrs(opt, base_lrs, step):
    """A changing lr at every step, so lr-dependent conventions are exercised."""
    for group, lr in zip(opt.param_groups, base_lrs):
        group["lr"] = lr * 0.98**step


def reference_kwargs(ref, opt, index):
    """The reference's keyword arguments from group ``index``; its ``initial_lr`` is the base
    lr of the AdamW paper's schedule multiplier (:meth:`optimlab.Optimizer.base_lr`)."""
    group = opt.param_groups[index]
    names = list(inspect.signature(ref).parameters)[3:]
    return {k: opt.base_lr(index) if k == "initial_lr" else group[k] for k in names}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def all_state_tensors(opt):
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in sorted(opt.state.get(p, {}).items()):
                if torch.is_tensor(value):
                    out.append((key, value))
    return out


@pytest.fixture
def float64_default():
    """torch.optim keeps scalar state (``step``, NAdam's ``mu_product``) in the default dtype;
    a float64 comparison needs float64 there too."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# -- reference parity ------------------------------------------------------------------------
def _reference_run(spec, cfg, engine, complex_=False, steps=50):
    params = make_params(complex_=complex_, shapes=spec.shapes)
    cfg = {**cfg, **spec.cls.float64_options}
    opt = spec.cls(make_groups(params, cfg, spec.cls), **cfg, engine=engine)
    ref = REFERENCES[spec.name]
    base_lrs = [g["lr"] for g in opt.param_groups]
    group_of = [0, 0, 1, 1]

    def real(t):
        t = t.detach()
        return torch.view_as_real(t).numpy().copy() if t.is_complex() else t.numpy().copy()

    thetas = [real(p) for p in params]
    states = [{} for _ in params]
    worst = 0.0
    for step in range(steps):
        schedule_lrs(opt, base_lrs, step)
        grads = grads_for_step(step, params)
        apply_grads(params, grads)
        opt.step()
        for i, g in enumerate(grads):
            if g is None:
                continue
            kwargs = reference_kwargs(ref, opt, group_of[i])
            thetas[i] = ref(thetas[i], real(g), states[i], **kwargs)
        for i, p in enumerate(params):
            worst = max(worst, rel_err(real(p), thetas[i]))
    return worst


@pytest.mark.parametrize("engine", ["loop", "foreach"])
@pytest.mark.parametrize(("spec", "cfg"), [c[:2] for c in CASES], ids=CASE_IDS)
def test_matches_reference_float64(spec, cfg, engine, float64_default):
    assert _reference_run(spec, cfg, engine) <= 1e-10


@pytest.mark.parametrize("spec", [s for s in SPECS if s.supports_complex], ids=lambda s: s.name)
def test_complex_matches_reference_on_real_view(spec, float64_default):
    assert _reference_run(spec, spec.configs[0], "foreach", complex_=True, steps=20) <= 1e-10


def test_none_grad_parameter_untouched_and_stateless():
    for spec in SPECS:
        a = torch.randn(spec.shape(4), dtype=torch.float64, requires_grad=True)
        b = torch.randn(spec.shape(4), dtype=torch.float64, requires_grad=True)
        before = b.detach().clone()
        opt = spec.cls([a, b], **spec.configs[0])
        for _ in range(3):
            a.grad = torch.randn_like(a)
            opt.step()
        assert torch.equal(b, before), spec.name
        assert spec.name == "adagrad" or len(opt.state[b]) == 0, spec.name


# -- torch.optim parity ----------------------------------------------------------------------
TORCH_CASES = [(s, c, i) for s, c, i in CASES if s.torch_exact and torch_kwargs(s, c) is not None]


def _parity_run(spec, cfg, dtype, steps=100, complex_=False):
    ours_p = make_params(dtype, complex_=complex_, shapes=spec.torch_shapes)
    theirs_p = [p.detach().clone().requires_grad_() for p in ours_p]
    ours = spec.cls(make_groups(ours_p, cfg, spec.cls), **cfg)
    theirs = spec.torch_cls(make_groups(theirs_p, cfg, spec.cls), **torch_kwargs(spec, cfg))
    base_lrs = [g["lr"] for g in ours.param_groups]
    worst = 0.0
    for step in range(steps):
        for opt in (ours, theirs):
            schedule_lrs(opt, base_lrs, step)
        grads = grads_for_step(step, ours_p)
        apply_grads(ours_p, grads)
        apply_grads(theirs_p, grads)
        ours.step()
        theirs.step()
        for a, b in zip(ours_p, theirs_p):
            a, b = a.detach(), b.detach()
            if a.is_complex():
                a, b = torch.view_as_real(a), torch.view_as_real(b)
            worst = max(worst, rel_err(a.double().numpy(), b.double().numpy()))
    return worst, ours, theirs


@pytest.mark.parametrize(
    ("spec", "cfg"), [c[:2] for c in TORCH_CASES], ids=[c[2] for c in TORCH_CASES]
)
def test_matches_torch_float64(spec, cfg, float64_default):
    worst, _, _ = _parity_run(spec, cfg, torch.float64)
    assert worst <= 1e-12


@pytest.mark.parametrize(
    ("spec", "cfg"), [c[:2] for c in TORCH_CASES], ids=[c[2] for c in TORCH_CASES]
)
def test_matches_torch_float32(spec, cfg):
    worst, _, _ = _parity_run(spec, cfg, torch.float32)
    assert worst <= 1e-5


@pytest.mark.parametrize(
    "spec", [s for s in SPECS if s.torch_exact and s.supports_complex], ids=lambda s: s.name
)
def test_matches_torch_complex(spec, float64_default):
    cfg = [c for c in spec.configs if torch_kwargs(spec, c) is not None][-1]
    worst, _, _ = _parity_run(spec, cfg, torch.float64, steps=30, complex_=True)
    assert worst <= 1e-12


def test_every_torch_twin_is_checked():
    """SGD, Adagrad, RMSprop, Adadelta, Adam(±amsgrad), AdamW, RAdam, Adamax, NAdam."""
    checked = {s.name for s, _, _ in TORCH_CASES}
    assert checked >= {
        "sgd",
        "adagrad",
        "rmsprop",
        "adadelta",
        "adam",
        "amsgrad",
        "adamw",
        "radam",
        "adamax",
        "nadam",
    }
    for name in checked:  # non-default hyperparameters are among the torch cases
        assert sum(1 for s, _, _ in TORCH_CASES if s.name == name) >= 2 or name == "amsgrad"


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("spec", [s for s in SPECS if s.torch_exact], ids=lambda s: s.name)
def test_state_dict_crosses_to_and_from_torch(spec, direction):
    cfg = max((c for c in spec.configs if torch_kwargs(spec, c) is not None), key=len)
    first, second = (
        (spec.torch_cls, spec.cls) if direction == "torch_to_ours" else (spec.cls, spec.torch_cls)
    )

    def build(cls, params):
        kwargs = cfg if cls is spec.cls else torch_kwargs(spec, cfg)
        return cls(make_groups(params, cfg, spec.cls), **kwargs)

    p1 = make_params(shapes=spec.torch_shapes)
    opt1 = build(first, p1)
    for step in range(10):
        apply_grads(p1, grads_for_step(step, p1))
        opt1.step()
    p2 = [p.detach().clone().requires_grad_() for p in p1]
    opt2 = build(second, p2)
    buf = io.BytesIO()
    torch.save(opt1.state_dict(), buf)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for step in range(10, 30):
        grads = grads_for_step(step, p1)
        apply_grads(p1, grads)
        apply_grads(p2, grads)
        opt1.step()
        opt2.step()
    for a, b in zip(p1, p2):
        assert rel_err(a.detach().numpy(), b.detach().numpy()) <= 1e-12


# -- engines, checkpoints, copies ------------------------------------------------------------
@pytest.mark.parametrize(("spec", "cfg"), [c[:2] for c in CASES], ids=CASE_IDS)
def test_engines_agree_float32(spec, cfg):
    results = []
    for engine in ("loop", "foreach"):
        params = make_params(torch.float32, shapes=spec.shapes)
        opt = spec.cls(make_groups(params, cfg, spec.cls), **cfg, engine=engine)
        for step in range(30):
            apply_grads(params, grads_for_step(step, params))
            opt.step()
        results.append((params, all_state_tensors(opt)))
    (pa, sa), (pb, sb) = results
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert [k for k, _ in sa] == [k for k, _ in sb]
    for (_, a), (_, b) in zip(sa, sb):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _compiled_in_resume_test(spec, cfg) -> bool:
    """Compiling a fused kernel takes seconds: the resume test compiles the first config of
    each optimizer and every SGD config (whose momentum buffer is created by an eager step),
    and runs the other fused cases' recorded programs eagerly."""
    return spec.name == "sgd" or cfg is spec.configs[0]


@pytest.mark.parametrize("engine", ["loop", "foreach", "fused"])
@pytest.mark.parametrize(("spec", "cfg"), [c[:2] for c in CASES], ids=CASE_IDS)
def test_resume_is_bit_exact(spec, cfg, engine, monkeypatch):
    """k steps, save through a file, load into a fresh optimizer, N-k more: bit for bit the N
    straight steps, on every engine (compiled fused kernels: the first step after a load must
    run the same kernel as the straight run's)."""
    from optimlab.core import fused

    if engine == "fused" and not _compiled_in_resume_test(spec, cfg):
        monkeypatch.setattr(fused, "COMPILE", False)
    total, k = 24, 9

    def fresh():
        params = make_params(torch.float32, shapes=spec.shapes)
        return params, spec.cls(make_groups(params, cfg, spec.cls), **cfg, engine=engine)

    straight_p, straight = fresh()
    for step in range(total):
        apply_grads(straight_p, grads_for_step(step, straight_p))
        straight.step()

    first_p, first = fresh()
    for step in range(k):
        apply_grads(first_p, grads_for_step(step, first_p))
        first.step()
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in first_p], "opt": first.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed_p, resumed = fresh()
    with torch.no_grad():
        for p, s in zip(resumed_p, saved["params"]):
            p.copy_(s)
    resumed.load_state_dict(saved["opt"])
    for step in range(k, total):
        apply_grads(resumed_p, grads_for_step(step, resumed_p))
        resumed.step()

    for a, b in zip(straight_p, resumed_p):
        assert torch.equal(a, b)
    sa, sb = all_state_tensors(straight), all_state_tensors(resumed)
    assert [key for key, _ in sa] == [key for key, _ in sb]
    for (_, a), (_, b) in zip(sa, sb):
        assert torch.equal(a, b)


def test_resume_in_a_fresh_process(tmp_path):
    """Save after k steps, continue in another Python process, compare bit for bit."""
    import subprocess
    import sys

    script = tmp_path / "resume.py"
    script.write_text(
        "import sys, torch, optimlab\n"
        "torch.manual_seed(0)\n"
        "p = torch.nn.Parameter(torch.randn(50))\n"
        "def grad(i):\n"
        "    return torch.randn(50, generator=torch.Generator().manual_seed(i))\n"
        "opt = optimlab.RAdam([p], lr=0.01, weight_decay=0.1)\n"
        "mode, path, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
        "if mode == 'resume':\n"
        "    ck = torch.load(path, weights_only=True)\n"
        "    p.data.copy_(ck['p']); opt.load_state_dict(ck['opt'])\n"
        "for i in range(k if mode == 'resume' else 0, n if mode != 'save' else k):\n"
        "    p.grad = grad(i); opt.step()\n"
        "torch.save({'p': p.detach(), 'opt': opt.state_dict()}, path)\n"
    )
    run = [sys.executable, str(script)]
    subprocess.run([*run, "straight", str(tmp_path / "a.pt"), "0", "20"], check=True)
    subprocess.run([*run, "save", str(tmp_path / "b.pt"), "7", "20"], check=True)
    subprocess.run([*run, "resume", str(tmp_path / "b.pt"), "7", "20"], check=True)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert torch.equal(a["p"], b["p"])
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(a["opt"]["state"][0][key], b["opt"]["state"][0][key])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_deepcopy_and_pickle(spec):
    params = make_params(shapes=spec.shapes)
    opt = spec.cls(make_groups(params, spec.configs[-1], spec.cls), **spec.configs[-1])
    apply_grads(params, grads_for_step(0, params))
    opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(clone) is type(opt)
        assert clone.engine == opt.engine
        assert clone.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        assert len(clone.state) == len(opt.state)


# -- schedulers ------------------------------------------------------------------------------
def _make_scheduler(kind, opt):
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    if kind == "onecycle":
        cycle = any(k in opt.defaults for k in ("betas", "momentum"))
        if "momentum" in opt.defaults and opt.defaults["momentum"] == 0:
            cycle = False
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.05, total_steps=40, cycle_momentum=cycle
        )
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)


@pytest.mark.parametrize("kind", ["step", "onecycle", "plateau"])
@pytest.mark.parametrize("spec", [s for s in SPECS if s.torch_exact], ids=lambda s: s.name)
def test_torch_lr_schedulers_work_unchanged(spec, kind):
    cfg = spec.configs[1] if len(spec.configs) > 1 else spec.configs[0]
    if torch_kwargs(spec, cfg) is None:
        cfg = spec.configs[0]
    runs = []
    for cls, kwargs in ((spec.cls, cfg), (spec.torch_cls, torch_kwargs(spec, cfg))):
        params = make_params(shapes=spec.torch_shapes)
        opt = cls(make_groups(params, cfg, spec.cls), **kwargs)
        sched = _make_scheduler(kind, opt)
        lrs, betas = [], []
        for step in range(40):
            apply_grads(params, grads_for_step(step, params))
            opt.step()
            sched.step(1.0) if kind == "plateau" else sched.step()
            lrs.append(opt.param_groups[0]["lr"])
            betas.append(opt.param_groups[0].get("betas"))
        runs.append((params, lrs, betas))
    (pa, la, ba), (pb, lb, bb) = runs
    assert la == lb and ba == bb
    assert len(set(la)) > 1  # the schedule really moved the lr
    for a, b in zip(pa, pb):
        assert rel_err(a.detach().numpy(), b.detach().numpy()) <= 1e-12


def test_onecycle_cycles_betas_of_adam():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = optimlab.Adam([p])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    seen = set()
    for _ in range(9):
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
        seen.add(opt.param_groups[0]["betas"][0])
    assert len(seen) > 3 and max(seen) <= 0.95 and min(seen) >= 0.85


# -- param groups ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_per_group_lr_and_weight_decay(spec, float64_default):
    """A group with lr = 0 does not move; the group with decay differs from the one without."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(spec.shape(6), dtype=torch.float64, generator=gen)
    frozen, plain, decayed = (x.clone().requires_grad_() for _ in range(3))
    cfg = {k: v for k, v in spec.configs[0].items() if k not in ("lr", "weight_decay")}
    cfg.update(spec.cls.float64_options)
    opt = spec.cls(
        [
            {"params": [frozen], "lr": 0.0, "weight_decay": 0.0},
            {"params": [plain], "lr": 0.01, "weight_decay": 0.0},
            {"params": [decayed], "lr": 0.01, "weight_decay": 0.5},
        ],
        **cfg,
    )
    for _ in range(5):
        g = torch.randn(spec.shape(6), dtype=torch.float64, generator=gen)
        for p in (frozen, plain, decayed):
            p.grad = g.clone()
        opt.step()
    assert torch.equal(frozen.detach(), x)
    assert not torch.equal(plain.detach(), x)
    assert not torch.allclose(plain, decayed)
    ref = REFERENCES[spec.name]
    theta, state = x.numpy().copy(), {}
    gen = torch.Generator().manual_seed(3)
    torch.randn(spec.shape(6), dtype=torch.float64, generator=gen)
    for _ in range(5):
        g = torch.randn(spec.shape(6), dtype=torch.float64, generator=gen).numpy()
        theta = ref(theta, g, state, **reference_kwargs(ref, opt, 2))
    assert rel_err(decayed.detach().numpy(), theta) <= 1e-10


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_invalid_hyperparameters_raise_value_error(spec):
    for bad, message in _common_errors(spec.cls) + spec.error_configs:
        p = torch.nn.Parameter(torch.zeros(spec.shape(2)))
        with pytest.raises(ValueError, match=message):
            spec.cls([p], **bad)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_invalid_value_in_an_added_param_group(spec):
    opt = spec.cls([torch.nn.Parameter(torch.zeros(spec.shape(2)))])
    with pytest.raises(ValueError, match=re.escape(spec.cls.lr_message.format(float("nan")))):
        opt.add_param_group(
            {"params": [torch.nn.Parameter(torch.zeros(spec.shape(2)))], "lr": float("nan")}
        )
    assert len(opt.param_groups) == 1  # the bad group was not kept


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_structural_errors(spec):
    p = torch.nn.Parameter(torch.zeros(spec.shape(2)))
    with pytest.raises(ValueError, match="empty parameter list"):
        spec.cls([])
    with pytest.raises(TypeError, match="ordered collections"):
        spec.cls({p})
    with pytest.raises(ValueError, match="non-leaf"):
        spec.cls([p * 2])
    with pytest.raises(ValueError, match="more than one parameter group"):
        spec.cls([{"params": [p]}, {"params": [p]}])
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        spec.cls([p, p])  # torch only warns, and so do we
    opt = spec.cls([p])
    p.grad = torch.zeros(spec.shape(2)).to_sparse()
    if spec.cls.supports_sparse:
        opt.step()
    else:
        with pytest.raises(RuntimeError, match="does not support sparse gradients"):
            opt.step()


# -- registry and docs -----------------------------------------------------------------------
def _known_answer_checks() -> dict[str, list[str]]:
    """Optimizer name -> the tests marked ``@pytest.mark.known_answer(<names>)``, read from
    the test files' source (independent checks: a hand-computed step, or parity with an
    implementation outside optimlab)."""
    import ast

    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                call = deco if isinstance(deco, ast.Call) else None
                if call is None or ast.unparse(call.func) != "pytest.mark.known_answer":
                    continue
                for arg in call.args:
                    for name in (
                        ast.literal_eval(arg)
                        if isinstance(arg, ast.Tuple)
                        else [ast.literal_eval(arg)]
                    ):
                        found.setdefault(name, []).append(f"{path.name}::{node.name}")
    return found


@pytest.mark.parametrize("name", optimlab.available_optimizers())
def test_registry_completeness(name):
    """Everything the project needs of an optimizer exists, declared on its class or in its
    own files: a failure names what is missing."""
    cls = optimlab.get_optimizer_class(name)
    docs = (ROOT / "docs" / "optimizers.md").read_text()
    assert name in REFERENCES, f"{name} has no NumPy reference in optimlab.reference"
    assert f"## {cls.__name__}" in docs, f"{name} has no section in docs/optimizers.md"
    cites = r"arXiv|ICML|ICLR|NeurIPS|JMLR|lecture|Polyak"
    assert re.search(cites, cls.__doc__ or ""), f"{name}'s docstring cites no paper"
    own = cls.__dict__
    for attribute in ("name", "year", "configs"):
        assert attribute in own, f"{name} does not declare its own {attribute!r}"
    assert cls.search_space, f"{name} declares no search_space for the lab"
    assert cls.torch_twin is not None or cls.stand_in is not None, (
        f"{name} declares neither a torch_twin nor a stand_in for the benchmark"
    )
    assert name in _known_answer_checks(), (
        f"{name} has no independent known-answer check: mark a hand-computed step or an "
        f"outside-implementation parity test with @pytest.mark.known_answer({name!r})"
    )
    assert name in SPEC_BY_NAME and SPEC_BY_NAME[name].cls is cls


def test_registry_exports_every_optimizer_under_its_class_name():
    for name, cls in optimlab.optim.OPTIMIZERS.items():
        assert getattr(optimlab, cls.__name__) is cls
        assert cls.__name__ in optimlab.__all__ and cls.name == name
    years = [cls.year for cls in optimlab.optim.OPTIMIZERS.values()]
    assert years == sorted(years)


def _documented_signature(cls) -> inspect.Signature:
    """The signature in the ```python block of the class's section in docs/optimizers.md."""
    import ast
    import re

    docs = (ROOT / "docs" / "optimizers.md").read_text()
    block = re.search(rf"```python\n({cls.__name__}\(.*?\))\n```", docs, re.S)
    assert block, f"{cls.__name__} has no signature block in docs/optimizers.md"
    namespace: dict = {"torch": torch}
    exec(compile(ast.parse(f"def {block.group(1)}: pass"), "<docs>", "exec"), namespace)
    return inspect.signature(namespace[cls.__name__])


@pytest.mark.parametrize("name", optimlab.available_optimizers())
def test_documented_signature_is_the_real_one(name):
    """Names, order, kinds and defaults of every argument, as docs/optimizers.md shows them."""
    cls = optimlab.get_optimizer_class(name)
    real = list(inspect.signature(cls).parameters.values())
    documented = list(_documented_signature(cls).parameters.values())
    assert [(p.name, p.kind) for p in documented] == [(p.name, p.kind) for p in real]
    assert [p.default for p in documented] == [p.default for p in real]


def test_constructors_take_torchs_arguments_in_torchs_order():
    """Every keyword torch.optim's twin accepts, at the same position: positional calls
    written for torch.optim mean the same here."""
    for spec in SPECS:
        if spec.torch_cls is None:
            continue
        theirs = list(inspect.signature(spec.torch_cls).parameters.values())
        ours = inspect.signature(spec.cls).parameters
        ours_list = list(ours.values())
        fixed = set(spec.torch_fixed)  # AMSGrad is Adam(amsgrad=True): no amsgrad argument
        for i, p in enumerate(theirs):
            if p.name in fixed:
                continue
            assert p.name in ours, f"{spec.name} lacks torch's {p.name!r}"
            assert ours[p.name].default == p.default, (spec.name, p.name)
            if p.kind is p.POSITIONAL_OR_KEYWORD and not fixed:
                assert ours_list[i].name == p.name, f"{spec.name}: {p.name} not at position {i}"
                assert ours_list[i].kind is p.kind


def test_create_optimizer_by_name():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = optimlab.create_optimizer("RAdam", [p], lr=1e-3)
    assert isinstance(opt, optimlab.RAdam) and opt.param_groups[0]["lr"] == 1e-3
    assert isinstance(optimlab.create_optimizer(" adamw ", [p]), optimlab.AdamW)
    with pytest.raises(ValueError, match="did you mean .*'adam'"):
        optimlab.create_optimizer("adma", [p])
    with pytest.raises(ValueError, match="Unknown optimizer 'no-such'"):
        optimlab.create_optimizer("no-such", [p])


def test_amsgrad_aliases_are_the_same_algorithm():
    runs = []
    for cls, kwargs in ((optimlab.AMSGrad, {}), (optimlab.Adam, {"amsgrad": True})):
        params = make_params()
        opt = cls(params, lr=0.01, **kwargs)
        for step in range(20):
            apply_grads(params, grads_for_step(step, params))
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        assert torch.equal(a, b)
