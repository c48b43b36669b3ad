"""``capturable=True``, and gradients with respect to tensor hyperparameters, as in torch.optim.

``capturable=True`` promises a step that reads nothing back to the host, so that it can be
captured in a CUDA graph: step counts (and NAdam's μ product) are 0-d tensors on the
parameter's device and every scalar made from them stays there. torch accepts it on CUDA (and
XLA, HPU) and refuses it elsewhere. On a machine without CUDA these tests let both libraries
believe the CPU is a capturable device, so that torch's own capturable code path (its
``torch.where`` rectification in RAdam, its device-side bias corrections) is the reference on
the CPU, and check the "no host read" promise directly: any ``item()``, ``float()`` or
``bool()`` of a tensor inside the step fails. The CUDA-graph test itself needs a GPU.

``differentiable=True`` with a tensor ``lr`` or ``betas`` that requires grad: the gradient of
a loss after the step flows into them, as with torch.optim's SGD, Adam and AdamW.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect

import pytest
import torch

import optimlab

from specs import SPECS, torch_kwargs

F64 = torch.float64
#: optimizers whose torch twin has ``capturable``
CAPTURABLE = [
    s
    for s in SPECS
    if s.torch_exact
    and "capturable" in inspect.signature(s.cls).parameters
    and "capturable" in inspect.signature(s.torch_cls).parameters
]


def _pretend_cpu_is_capturable(monkeypatch):
    devices = ["cpu", "cuda"]
    monkeypatch.setattr("optimlab.optim.base._capturable_devices", lambda: devices)
    for name in ("optimizer", "adam", "adamw", "adamax", "nadam", "radam", "rmsprop", "adadelta"):
        module = importlib.import_module(f"torch.optim.{name}")
        if hasattr(module, "_get_capturable_supported_devices"):
            monkeypatch.setattr(module, "_get_capturable_supported_devices", lambda **_: devices)


@contextlib.contextmanager
def no_host_reads():
    """Any read of a tensor's value into Python (what synchronises a GPU and breaks a CUDA
    graph capture) raises inside this block."""
    names = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def refuse(*_args, **_kwargs):
        raise AssertionError("a tensor was read on the host")

    try:
        for name in names:
            setattr(torch.Tensor, name, refuse)
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def _configs(spec):
    return [c for c in spec.configs if torch_kwargs(spec, c) is not None]


def _params(dtype=F64):
    gen = torch.Generator().manual_seed(0)
    shapes = ((4, 3), (5,), ())
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


@pytest.mark.parametrize("default_dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("spec", CAPTURABLE, ids=lambda s: s.name)
def test_capturable_steps_follow_torchs_capturable_path(spec, default_dtype, monkeypatch):
    """Every config torch also computes, with a tensor lr, 12 steps with a skipped gradient:
    optimlab's capturable step against torch.optim's capturable step on float64 parameters,
    and the counts stay tensors on the parameter's device. The counts have torch's dtype, the
    default one's (float32 unless it is float64), and so do the bias corrections made from
    them on the device: 1e-12 with float64 counts; with float32 counts the two libraries
    arrange those float32 scalars differently (torch's capturable Adam divides √v by
    √(1−β₂ᵗ)·lr/(1−β₁ᵗ), as its own non-capturable path does not), so 1e-8."""
    _pretend_cpu_is_capturable(monkeypatch)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        _capturable_against_torch(spec, 1e-12 if default_dtype == F64 else 1e-8)
    finally:
        torch.set_default_dtype(previous)


def _capturable_against_torch(spec, rtol):
    gen = torch.Generator().manual_seed(1)
    for cfg in _configs(spec):
        lr = torch.tensor(cfg.get("lr", 1e-2), dtype=F64)
        ours_p, theirs_p = _params(), _params()
        ours = spec.cls(ours_p, **{**cfg, "lr": lr.clone()}, capturable=True)
        kwargs = {**torch_kwargs(spec, cfg), "lr": lr.clone()}
        theirs = spec.torch_cls(theirs_p, **kwargs, capturable=True)
        for step in range(12):
            for i, (a, b) in enumerate(zip(ours_p, theirs_p)):
                g = (
                    None
                    if (step == 4 and i == 1)
                    else torch.randn(a.shape, generator=gen, dtype=F64)
                )
                a.grad = None if g is None else g.clone()
                b.grad = None if g is None else g.clone()
            ours.step()
            theirs.step()
        for a, b in zip(ours_p, theirs_p):
            error = ((a - b).abs().max() / b.abs().max()).item()  # relative to the scale
            assert error <= rtol, (spec.name, cfg, error)
        for a, b in zip(ours_p, theirs_p):
            for key, value in ours.state[a].items():
                if value.dim() == 0:  # step counts, NAdam's mu_product
                    assert value.device == a.device
                    torch.testing.assert_close(value, theirs.state[b][key], check_dtype=False)
        assert ours.step_info[0]["capturable"] is True


@pytest.mark.parametrize("spec", CAPTURABLE, ids=lambda s: s.name)
def test_capturable_steps_read_nothing_back_to_the_host(spec, monkeypatch):
    """The promise itself: no tensor is read into Python during a capturable step (with a
    float lr and with a tensor lr), where the default step does read its step counts."""
    _pretend_cpu_is_capturable(monkeypatch)
    cfg = max(_configs(spec), key=len)
    for lr in (1e-2, torch.tensor(1e-2)):
        params = _params()
        opt = spec.cls(params, **{**cfg, "lr": lr}, capturable=True)
        for _ in range(3):
            for p in params:
                p.grad = torch.ones_like(p)
            with no_host_reads():
                opt.step()
    # the check can fail: an ordinary step reads its counts on the host
    params = _params()
    opt = spec.cls(params, **cfg, engine="loop")
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(AssertionError, match="read on the host"), no_host_reads():
        opt.step()


def test_capturable_loads_a_checkpoint_saved_without_it(monkeypatch):
    """A checkpoint of an ordinary run (counts on the CPU) continues under capturable=True
    as it would have without it (float64 counts, so that only the rounding of the scalars'
    arrangement can differ)."""
    _pretend_cpu_is_capturable(monkeypatch)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        _resume_capturable()
    finally:
        torch.set_default_dtype(previous)


def _resume_capturable():
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(4, 3, generator=gen, dtype=F64) for _ in range(6)]
    runs = []
    for capturable in (False, True):
        p = torch.nn.Parameter(torch.ones(4, 3, dtype=F64))
        opt = optimlab.NAdam([p], lr=0.01, engine="loop")
        for g in grads[:3]:
            p.grad = g
            opt.step()
        saved = copy.deepcopy(opt.state_dict())
        resumed = optimlab.NAdam([p], lr=0.01, capturable=capturable, engine="loop")
        resumed.load_state_dict(saved)
        for g in grads[3:]:
            p.grad = g
            resumed.step()
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-13, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", CAPTURABLE, ids=lambda s: s.name)
def test_a_capturable_step_replays_in_a_cuda_graph(spec):
    """Capture one step in a CUDA graph, replay it, and compare with eager steps."""
    cfg = max(_configs(spec), key=len)
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(64, 32, generator=gen).to(device) for _ in range(5)]
    eager_p = torch.nn.Parameter(torch.ones(64, 32, device=device))
    eager = spec.cls([eager_p], **cfg, engine="foreach")
    graph_p = torch.nn.Parameter(torch.ones(64, 32, device=device))
    opt = spec.cls([graph_p], **{**cfg, "lr": torch.tensor(cfg.get("lr", 1e-2), device=device)},
                   capturable=True)  # fmt: skip
    graph_p.grad = torch.zeros_like(graph_p)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up steps create the state, as torch's docs ask
        for g in grads[:2]:
            graph_p.grad.copy_(g)
            opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    for g in grads[:2]:
        eager_p.grad = g.clone()
        eager.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for g in grads[2:]:
        graph_p.grad.copy_(g)
        graph.replay()
        eager_p.grad = g.clone()
        eager.step()
    torch.cuda.synchronize()
    torch.testing.assert_close(graph_p, eager_p, rtol=1e-5, atol=1e-6)


# -- differentiable=True with tensor hyperparameters -------------------------------------------
TENSOR_HYPERPARAMETERS = {
    "sgd": ({"momentum": 0.9, "nesterov": True}, {"lr": 0.1}),
    "adam": ({"amsgrad": True, "weight_decay": 0.1}, {"lr": 0.01, "betas": (0.9, 0.99)}),
    "adamw": ({"weight_decay": 0.1}, {"lr": 0.01, "betas": (0.8, 0.95)}),
}


def _hypergradients(cls, cfg, tensors, steps):
    """The loss after ``steps`` differentiable steps and its gradient with respect to the
    tensor hyperparameters and the initial weights; each step's gradient is part of the graph
    (the total derivative, which a finite difference measures)."""
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(8, 3, generator=gen, dtype=F64), torch.randn(8, 4, generator=gen, dtype=F64)
    start = torch.randn(4, 3, generator=gen, dtype=F64, requires_grad=True)
    leaves = [
        t
        for value in tensors.values()
        for t in (value if isinstance(value, tuple) else (value,))
        if isinstance(t, torch.Tensor)
    ]
    p = start * 1.0
    opt = cls([p], **cfg, **tensors, differentiable=True)
    for _ in range(steps):
        residual = x @ p.T - y
        p.grad = 2.0 * residual.T @ x / y.numel()
        opt.step()
    loss = ((x @ p.T - y) ** 2).mean()
    return loss, torch.autograd.grad(loss, [*leaves, start])


def _as_tensors(values, requires_grad=True):
    def one(v):
        return torch.tensor(v, dtype=F64, requires_grad=requires_grad)

    return {
        k: tuple(one(b) for b in v) if isinstance(v, tuple) else one(v) for k, v in values.items()
    }


@pytest.mark.parametrize("name", sorted(TENSOR_HYPERPARAMETERS))
def test_differentiable_gradients_reach_a_tensor_lr_and_betas_as_in_torch(name):
    """One recorded step from a fresh state: d loss / d (lr, β₁, β₂, θ₀) equal torch.optim's."""
    spec = next(s for s in SPECS if s.name == name)
    cfg, values = TENSOR_HYPERPARAMETERS[name]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # torch's differentiable path rounds in the counter's dtype
    try:
        ours = _hypergradients(spec.cls, cfg, _as_tensors(values), steps=1)
        theirs = _hypergradients(spec.torch_cls, cfg, _as_tensors(values), steps=1)
    finally:
        torch.set_default_dtype(previous)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-13, atol=0)
    for a, b in zip(ours[1], theirs[1], strict=True):
        # at the first step dm̂/dβ₁ and dv̂/dβ₂ are exactly 0, torch's rounds to ~1e-16
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    assert ours[1][0].abs() > 1e-3  # the lr's gradient is there, not a zero by omission


@pytest.mark.parametrize("name", sorted(TENSOR_HYPERPARAMETERS))
def test_hypergradients_through_three_steps_match_finite_differences(name):
    """Three recorded steps (where torch's SGD with momentum cannot differentiate, since it
    updates a buffer its first step saved): the derivative with respect to each tensor
    hyperparameter against a central finite difference of the same loss."""
    spec = next(s for s in SPECS if s.name == name)
    cfg, values = TENSOR_HYPERPARAMETERS[name]
    _, grads = _hypergradients(spec.cls, cfg, _as_tensors(values), steps=3)
    flat = [
        (k, i)
        for k, v in values.items()
        for i in (range(len(v)) if isinstance(v, tuple) else [None])
    ]
    h = 1e-6
    for (key, index), analytic in zip(flat, grads):
        losses = []
        for sign in (1.0, -1.0):
            moved = dict(values)
            if index is None:
                moved[key] = values[key] + sign * h
            else:
                moved[key] = tuple(b + sign * h * (j == index) for j, b in enumerate(values[key]))
            loss, _ = _hypergradients(spec.cls, cfg, _as_tensors(moved), steps=3)
            losses.append(loss.item())
        numeric = (losses[0] - losses[1]) / (2 * h)
        assert analytic.item() == pytest.approx(numeric, rel=1e-5, abs=1e-9), (key, index)
