"""torch's own optimizer conformance database, applied to optimlab.

``torch.testing._internal.common_optimizers.optim_db`` lists, per torch.optim class, the
configurations torch tests itself with (``optim_inputs_func``) and the constructions that must
fail, with the exception type and a regex of the message (``optim_error_inputs_func``). For
every class optimlab also has, this module drives optimlab's twin with each configuration and
compares the trajectory with torch.optim's, and checks that each bad construction fails the
same way. The data is torch's, read at test time (it needs the ``expecttest`` package).
"""

from __future__ import annotations

import copy

import pytest
import torch

import optimlab

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers",
    reason="torch's optimizer database needs the expecttest package",
)
OptimizerErrorEnum = common_optimizers.OptimizerErrorEnum

TWINS = [info for info in common_optimizers.optim_db if hasattr(optimlab, info.optim_cls.__name__)]
SHAPES = ((4, 3), (5,), (), (2, 2, 3))
MATRIX_SHAPES = ((4, 3), (3, 5), (6, 6), (2, 7))  # for optimizers of matrices only (Muon)
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def _name(info) -> str:
    return info.optim_cls.__name__


def _inputs(dtype):
    for info in TWINS:
        for oi in info.optim_inputs_func("cpu", dtype):
            yield pytest.param(info, oi, id=f"{_name(info)}-{oi.desc.replace(' ', '_')}")


def _errors():
    for info in TWINS:
        for ei in info.optim_error_inputs_func("cpu", torch.float32):
            desc = ei.optimizer_error_input.desc.replace(" ", "_")
            yield pytest.param(info, ei, id=f"{_name(info)}-{desc}")


def _params(info, dtype):
    gen = torch.Generator().manual_seed(0)
    shapes = MATRIX_SHAPES if getattr(optimlab, _name(info)).matrix_only else SHAPES
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def _kwargs(kwargs):
    """A deep copy: tensor hyperparameters (lr, betas) must not be shared by the two runs."""
    return copy.deepcopy(kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("info", "optim_input"), list(_inputs(torch.float64)))
def test_every_torch_config_follows_torchs_trajectory(info, optim_input, dtype):
    ours_p, theirs_p = _params(info, dtype), _params(info, dtype)
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.02}]  # noqa: E731
    theirs = info.optim_cls(groups(theirs_p), **_kwargs(optim_input.kwargs))
    ours = getattr(optimlab, _name(info))(groups(ours_p), **_kwargs(optim_input.kwargs))
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for step in range(12):
        for i, (a, b) in enumerate(zip(ours_p, theirs_p)):
            g = None if (step == 5 and i == 0) else torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad = None if g is None else g.clone()
            b.grad = None if g is None else g.clone()
        ours.step()
        theirs.step()
        for a, b in zip(ours_p, theirs_p):
            if a.numel():
                scale = b.detach().abs().max().clamp_min(1e-30)
                worst = max(worst, ((a - b).detach().abs().max() / scale).item())
    tolerance = TOLERANCE[dtype]
    if _name(info) == "Muon" and isinstance(optim_input.kwargs.get("lr"), torch.Tensor):
        # torch.optim.Muon keeps a tensor lr a tensor: 1 − lr·λ and lr·√(A/B) are rounded to
        # the lr's float32 before they meet float64 parameters; optimlab computes them in
        # Python floats from lr.item() (docs/optimizers.md, Muon)
        tolerance = max(tolerance, 1e-6)
    assert worst <= tolerance


def test_the_database_covers_every_twin():
    names = {_name(info) for info in TWINS}
    assert names >= {"SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "RAdam"}
    assert names >= {"Adamax", "NAdam"}
    assert sum(1 for _ in _inputs(torch.float64)) >= 58


@pytest.mark.parametrize(("info", "error_input"), list(_errors()))
def test_every_torch_construction_error_is_ours_too(info, error_input):
    oi = error_input.optimizer_error_input
    params = oi.params
    if params is None:
        params = [torch.nn.Parameter(torch.randn(2, 2))]
    cls = getattr(optimlab, _name(info))
    if error_input.error_on == OptimizerErrorEnum.STEP_ERROR:
        opt = cls(params, **_kwargs(oi.kwargs))
        with pytest.raises(error_input.error_type, match=error_input.error_regex):
            opt.step()
    elif issubclass(error_input.error_type, Warning):
        with pytest.warns(error_input.error_type, match=error_input.error_regex):
            cls(params, **_kwargs(oi.kwargs))
    else:
        with pytest.raises(error_input.error_type, match=error_input.error_regex):
            cls(params, **_kwargs(oi.kwargs))
