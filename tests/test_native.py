"""The fused engine's one-pass reductions on CPU (optimlab.core.native): the kernel against
torch, which programs get them, and that a step with them equals a step without."""

from __future__ import annotations

import pytest
import torch

import optimlab
from optimlab.core import codegen, native

needs_kernel = pytest.mark.skipif(
    not native.checked(torch.float32), reason="no C++ compiler for inductor's code cache"
)

SHAPES = [
    (1, 1, 1),  # one element
    (3, 5, 7),  # narrower than one vector
    (2, 257, 33),  # more rows than one block, a ragged last vector
    (1, 513, 64),  # two full blocks and one row
    (4, 16, 48),
]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_one_pass_equals_torch(shape, dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=dtype) * 3
    y = torch.randn(shape, generator=gen, dtype=dtype) * 1e-3
    tol = {"rtol": 2e-6, "atol": 0} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 0}
    for with_x in (True, False):
        rms_x, rms_y, rows, cols = native.reductions(x if with_x else None, y)
        x64, y64 = x.double(), y.double()
        if with_x:
            want = torch.sqrt(torch.mean(x64 * x64, dim=(1, 2), keepdim=True))
            torch.testing.assert_close(rms_x, want.to(dtype), **tol)
        else:
            assert rms_x is None
        want_y = torch.sqrt(torch.mean(y64 * y64, dim=(1, 2), keepdim=True))
        torch.testing.assert_close(rms_y, want_y.to(dtype), **tol)
        want_rows = torch.mean(y64 * y64, dim=-1, keepdim=True)
        torch.testing.assert_close(rows, want_rows.to(dtype), **tol)
        want_cols = torch.mean(y64 * y64, dim=-2, keepdim=True)
        torch.testing.assert_close(cols, want_cols.to(dtype), **tol)


@needs_kernel
def test_column_sums_stay_accurate_over_many_rows():
    """A column of 50,257 rows (GPT-2's token embedding) is summed in blocks of 256: the float32
    column means stay within a few float32 roundings of the float64 ones, where one running
    float32 sum drifts by orders of magnitude more."""
    gen = torch.Generator().manual_seed(2)
    y = torch.rand(1, 50257, 16, generator=gen) + 1.0
    _, _, _, cols = native.reductions(None, y)
    want = torch.mean(y.double() ** 2, dim=-2, keepdim=True)
    assert ((cols.double() - want).abs() / want).max() < 1e-6


@needs_kernel
def test_the_numbers_do_not_depend_on_the_thread_count():
    """Blocks of rows run in parallel on torch's threads; their partial sums are added in a
    fixed order, so one thread and two give the same bits."""
    gen = torch.Generator().manual_seed(5)
    x, y = (torch.randn(3, 700, 40, generator=gen) for _ in range(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.reductions(x, y)
        torch.set_num_threads(2)
        two = native.reductions(x, y)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_only_cpu_contiguous_float_batches_of_matrices_take_the_pass():
    y = torch.zeros(2, 3, 4)
    assert not native.applies(None, y.to(torch.bfloat16))
    assert not native.applies(None, y[:, :, :2])  # not contiguous
    assert not native.applies(None, y.view(2, 12))  # not a batch of matrices
    assert not native.applies(None, torch.zeros(0, 3, 4))
    assert not native.applies(torch.zeros(2, 3, 5), y)  # x of another shape
    assert not native.applies(y.double(), y)  # x of another dtype
    assert not native.applies(None, y.requires_grad_())


def test_adafactor_hoists_its_three_input_reductions():
    """Adafactor's program reads RMS(θ) and the row and column means of g² straight from its
    inputs, before writing either: those three are hoisted to the front, where RMS(U) (of a
    computed value) and the normaliser (of a state written first) are not."""
    ps = [torch.zeros(3, 4, 5, requires_grad=True)]
    program = _recorded_program(optimlab.Adafactor(ps, engine="fused"), ps)
    positions, front, y, x = codegen.hoisted_reductions(program, 4)
    assert [program[p][0] for p in positions] == ["rms", "row_mean_sq", "col_mean_sq"]
    assert (y, x) == (1, 0)  # g for the rows and columns, θ for its RMS alone
    moved = codegen.hoist(program, positions, front)
    assert sorted(moved) == sorted(program) and moved[:3] == tuple(program[p] for p in positions)


def test_squares_of_a_negated_input_are_the_input_s_squares():
    """Maximizing, Adafactor's g is −grad: its row and column means are read from the
    gradient itself."""
    ps = [torch.zeros(3, 4, 5, requires_grad=True)]
    program = _recorded_program(optimlab.Adafactor(ps, engine="fused", maximize=True), ps)
    positions, front, y, x = codegen.hoisted_reductions(program, 4)
    assert [op[0] for op in front] == ["rms", "row_mean_sq", "col_mean_sq"]
    assert [op[2] for op in front] == [(0,), (1,), (1,)] and (y, x) == (1, 0)
    assert any(program[p][2] != (1,) for p in positions[1:])  # they read −g in the program


def test_reductions_of_a_written_input_or_a_lone_one_stay_in_place():
    program = (
        ("rms", 2, (0,), (), ()),  # the only reduction of an unwritten input
        ("mul_", -1, (1,), (0,), ()),  # t1 written...
        ("row_mean_sq", 3, (1,), (), ()),  # ...before this reads it
        ("col_mean_sq", 4, (1,), (), ()),
    )
    assert codegen.hoisted_reductions(program, 2)[0] == ()
    negated_then_written = (
        ("neg", 2, (1,), (), ()),
        ("mul_", -1, (2,), (0,), ()),  # −g scaled: no longer the gradient's squares
        ("row_mean_sq", 3, (2,), (), ()),
        ("col_mean_sq", 4, (2,), (), ()),
    )
    assert codegen.hoisted_reductions(negated_then_written, 2)[0] == ()


def _recorded_program(opt, params) -> tuple:
    codegen.reset_kernels()
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    keys = [key for key in codegen._KERNELS if key[5]]
    assert len(keys) == 1
    return keys[0][0]


CONFIGS = (
    {},
    {"beta1": 0.9, "maximize": True, "weight_decay": 0.1},
    {"eps": (1e-30, 1e-3), "eps1_mode": "add", "relative_step": False, "lr": 0.05},
    {"scale_parameter": False},
)


@needs_kernel
@pytest.mark.parametrize("cfg", CONFIGS, ids=["torch", "beta1", "paper", "no-scale"])
def test_a_step_with_the_pass_equals_one_without(cfg, monkeypatch):
    """Adafactor on batches of matrices, fused, with the one-pass reductions and without
    (``native.ENABLED`` off: the compiled segments compute them), and the loop engine: the
    same parameters, to float32's rounding; and the pass did run."""
    calls = []
    original = native.reductions

    def spy(x, y):
        calls.append(y.shape)
        return original(x, y)

    monkeypatch.setattr(native, "reductions", spy)
    shapes = [(40, 24), (40, 24), (24, 40), (24, 40), (24,)]
    gen = torch.Generator().manual_seed(3)
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(3)]
    results = []
    for engine, enabled in (("fused", True), ("fused", False), ("loop", True)):
        monkeypatch.setattr(native, "ENABLED", enabled)
        codegen.reset_kernels()
        ps = [p.clone().requires_grad_() for p in start]
        opt = optimlab.Adafactor(ps, engine=engine, **cfg)
        for step in grads:
            for p, g in zip(ps, step):
                p.grad = g.clone()
            opt.step()
        if engine == "fused":
            assert opt.fused_stats["fused_steps"] > 0
        results.append([p.detach() for p in ps])
        if enabled and engine == "fused":
            assert sorted(set(calls)) == [(2, 24, 40), (2, 40, 24)]
            calls.clear()
    assert not calls  # disabled: never called
    for native_, compiled, loop in zip(*results):
        torch.testing.assert_close(native_, compiled, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(native_, loop, rtol=1e-5, atol=1e-7)


@needs_kernel
def test_bfloat16_batches_run_the_compiled_segments(monkeypatch):
    """The pass is float32/float64 only: a bfloat16 batch takes the compiled segments of the
    same (hoisted) program."""
    calls = []
    monkeypatch.setattr(native, "reductions", lambda *a: calls.append(a))
    codegen.reset_kernels()
    gen = torch.Generator().manual_seed(4)
    ps = [torch.randn(8, 6, generator=gen).bfloat16().requires_grad_() for _ in range(2)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    a = optimlab.Adafactor(ps, engine="fused")
    b = optimlab.Adafactor(qs, engine="loop")
    for _ in range(2):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape, generator=gen).bfloat16()
            q.grad = p.grad.clone()
        a.step()
        b.step()
    assert not calls and a.fused_stats["fused_steps"] > 0
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=2e-2, atol=1e-3)
