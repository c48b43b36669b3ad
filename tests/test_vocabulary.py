"""The vocabulary, operation by operation: every engine computes the same thing.

Each operation of :mod:`optimlab.core.vocabulary` runs on random inputs through the loop
engine (torch's native call), the foreach engine (``torch._foreach_*``), the differentiable
engine (the math out of place), and the fused engine's recording, generated as a kernel and run
both eagerly and compiled; all agree with the operation's declared math.
"""

from __future__ import annotations

import pytest
import torch

from optimlab.core import codegen
from optimlab.core.recording import RecordingOps, Sym
from optimlab.core.tensorlist import FOREACH, LOOP, DifferentiableOps, ForeachOps, LoopOps
from optimlab.core.vocabulary import BY_NAME, VOCABULARY, math_function

SHAPES = ((3, 4), (5,), (2, 3, 4))
SCALARS = {"alpha": 0.7, "s": 1.3, "value": -0.4, "weight": 0.25, "lo": -0.5, "hi": 0.6}
STATICS = {"a": 3.4445, "b": -4.775, "c": 2.0315, "eps": 1e-7, "steps": 5, "dtype": torch.float64}


def statics(op) -> dict:
    return {name: STATICS[name] for name in op.statics}


def _inputs(op, seed=0, positive=False):
    gen = torch.Generator().manual_seed(seed)
    lists = []
    for _ in range(op.tensors):
        tensors = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
        if positive or op.name.startswith(("sqrt", "rsqrt", "reciprocal", "div")):
            tensors = [t.abs() + 0.5 for t in tensors]
        lists.append(tensors)
    if op.name == "newton_schulz":  # matrices, wide and tall
        lists = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in ((3, 4), (5, 2))]]
    if op.name in ("matmul",):  # square matrices, so any pair multiplies
        lists = [[torch.randn(4, 4, generator=gen, dtype=torch.float64)] for _ in range(2)]
    if op.name == "reshape_as":
        lists = [[torch.randn(2, 6, generator=gen, dtype=torch.float64)], [torch.zeros(3, 4)]]
    per_tensor = [[SCALARS[n] * (1 + 0.1 * i) for i in range(len(lists[0]))] for n in op.scalars]
    return lists, per_tensor


def _expected(op, lists, scalars):
    math = math_function(op)
    if op.kind == "group":  # every tensor's part, added up: one total for every tensor
        total = sum(math(x, **statics(op)) for x in lists[0])
        return [total] * len(lists[0])
    out = []
    for i in range(len(lists[0])):
        args = [lst[i] for lst in lists] + [s[i] for s in scalars]
        if op.kind != "elementwise":
            batched = [a[None] if j < op.tensors else a for j, a in enumerate(args)]
            out.append(math(*batched, **statics(op))[0])
        else:
            out.append(math(*args, **statics(op)))
    return out


def _run(ops, op, lists, scalars):
    lists = [[t.clone() for t in lst] for lst in lists]
    result = getattr(ops, op.name)(*lists, *scalars, **statics(op))
    return lists[0] if op.inplace else result


def _recorded(op, lists, scalars):
    """The op recorded on one symbolic input per list and generated as a kernel, run per tensor
    (the fused engine runs a program on a flat buffer, or a batch of same-shape parameters)."""
    out = []
    for i in range(len(lists[0])):
        rec = RecordingOps(op.tensors)
        syms = [[Sym(j)] for j in range(op.tensors)]
        result = getattr(rec, op.name)(*syms, *(s[i] for s in scalars), **statics(op))
        source = codegen.kernel_source(tuple(rec.program), op.tensors)
        source += f"    return t{0 if op.inplace else result[0].index}\n"
        namespace = dict(codegen.MATH_NAMESPACE)
        exec(source, namespace)  # noqa: S102
        inputs = [lst[i].clone() for lst in lists]
        if op.kind != "elementwise":
            inputs = [t[None] for t in inputs]
        got = namespace["kernel"](inputs, torch.tensor(rec.values, dtype=torch.float64))
        out.append(got[0] if op.kind != "elementwise" else got)
    return out


@pytest.mark.parametrize("op", VOCABULARY, ids=lambda op: op.name)
def test_every_engine_computes_the_declared_math(op):
    lists, scalars = _inputs(op)
    expected = _expected(op, lists, scalars)
    engines = {
        "loop": _run(LOOP, op, lists, scalars),
        "foreach": _run(FOREACH, op, lists, scalars),
        "differentiable": _run(DifferentiableOps(set()), op, lists, scalars),
    }
    if op.kind != "group":  # the fused engine runs group reductions on the foreach path
        engines["recorded"] = _recorded(op, lists, scalars)
    for name, got in engines.items():
        assert len(got) == len(expected), name
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"{op.name} on {name}")


def test_one_compiled_kernel_of_every_elementwise_op_computes_the_declared_math():
    """Every elementwise op recorded into one program (each on inputs of its own), generated,
    compiled once with torch.compile and run: the results are the declared math's."""
    ops = [op for op in VOCABULARY if op.kind == "elementwise"]
    cases = [_inputs(op, seed=k) for k, op in enumerate(ops)]
    inputs, first = [], []
    for lists, _ in cases:
        first.append(len(inputs))
        inputs += [lst[0].clone() for lst in lists]
    rec = RecordingOps(len(inputs))
    outputs, expected = [], []
    for op, (lists, scalars), base in zip(ops, cases, first):
        syms = [[Sym(base + j)] for j in range(op.tensors)]
        result = getattr(rec, op.name)(*syms, *(s[0] for s in scalars))
        outputs.append(base if op.inplace else result[0].index)
        expected.append(_expected(op, [lst[:1] for lst in lists], [s[:1] for s in scalars])[0])
    source = codegen.kernel_source(tuple(rec.program), len(inputs))
    source += "    return (" + ", ".join(f"t{o}" for o in outputs) + ",)\n"
    namespace = dict(codegen.MATH_NAMESPACE)
    exec(source, namespace)  # noqa: S102
    kernel = torch.compile(namespace["kernel"], fullgraph=True)
    got = kernel(inputs, torch.tensor(rec.values, dtype=torch.float64))
    for a, b, op in zip(got, expected, ops):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=op.name)


def test_foreach_uses_its_kernels_where_the_vocabulary_names_one():
    """The foreach engine never silently inherits a per-tensor loop: an op with a
    ``torch._foreach_*`` binding runs it."""
    for op in VOCABULARY:
        ours, loop = getattr(ForeachOps, op.name), getattr(LoopOps, op.name)
        if op.foreach is not None:
            assert ours is not loop, op.name
        else:
            assert ours is loop, op.name


def test_every_engine_has_every_operation_and_nothing_else():
    names = {op.name for op in VOCABULARY}
    for cls in (LoopOps, ForeachOps, DifferentiableOps, RecordingOps):
        assert all(callable(getattr(cls, n, None)) for n in names), cls.__name__
    assert set(BY_NAME) == names and len(names) == len(VOCABULARY)


def test_scalars_default_and_bind_by_keyword():
    x, y = [torch.ones(3)], [torch.full((3,), 2.0)]
    assert torch.equal(LOOP.add(x, y)[0], torch.full((3,), 3.0))  # alpha defaults to 1
    assert torch.equal(FOREACH.add(x, y, alpha=0.5)[0], torch.full((3,), 2.0))
    with pytest.raises(TypeError, match="missing scalar 's'"):
        LOOP.mul(x)


def test_a_formula_with_a_group_reduction_runs_unfused_and_says_why():
    """A toy optimizer that normalises by the group's global norm: θ ← θ − lr·g/‖g‖ (‖g‖
    over every tensor of the group), with a mask that moves only coordinates whose gradient
    is positive. The fused engine cannot give one bucket the others' part of the norm: the
    group runs on the foreach path, with the same numbers, and ``step_info`` says why."""
    from optimlab.optim.base import Optimizer

    class GlobalNormSign(Optimizer):
        def __init__(self, params, lr=0.1, engine="auto"):
            defaults = dict(lr=lr, weight_decay=0.0, weight_decay_mode="decoupled")
            super().__init__(params, defaults, engine=engine)

        def _validate_group(self, group):
            pass

        def _update(self, s):
            ops = s.ops
            norm = ops.sqrt(ops.group_sum_sq(s.grads))  # the same 0-d ‖g‖ for every tensor
            g = ops.mul_tensors(s.grads, ops.positive(s.grads))
            ops.addcdiv_(s.params, g, norm, -s.group["lr"])

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ((3, 4), (5,))]
    grads = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in start]
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    expected = [t - 0.1 * g * (g > 0) / norm for t, g in zip(start, grads)]
    for engine in ("loop", "foreach", "fused"):
        params = [t.clone().requires_grad_() for t in start]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = GlobalNormSign(params, engine=engine)
        opt.step()
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14, msg=engine)
        if engine == "fused":
            assert opt.step_info[0]["engine"] == "foreach"
            assert opt.step_info[0]["fallback"] == "a reduction over the whole group"
