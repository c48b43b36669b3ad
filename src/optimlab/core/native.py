"""One pass over a batch of matrices for several reductions at once (the fused engine, CPU).

Adafactor's step begins with three reductions over its parameters' elements: ``RMS(θ)``, and
the row and column means of ``g²``. Compiled, each is a kernel of its own, and each reads its
whole tensor from memory; on one core a reduction reads at the memory's rate (about 18 GB/s
on our 2-core EPYC VMs), so three of them cost three reads of 4 bytes per element. Inductor
cannot compute a row sum and a column sum in one loop nest: for the column sums it walks down
the columns, one cache line of each row at a time. This module computes them all in one pass
over the rows: for each row ``i`` of ``y``,

    rows[i] = Σⱼ y[i, j]² / m,   part[j] += y[i, j]²,   Σ y² += Σⱼ y[i, j]²,   Σ x² += Σⱼ x[i, j]²

where ``part`` (one row, in L1 cache) belongs to a block of 256 rows; the blocks' parts are
added into the column sums afterwards, so no column sum adds more than 256 terms in one run
(two-level summation, as a cascade sum). Each row sum is kept in vector lanes and each
matrix's total in double. The blocks run in parallel on torch's threads
(``torch.get_num_threads()``) and their results are added in a fixed order, so the numbers do
not depend on the thread count. They agree with torch's ``mean(x * x, ...)`` to the rounding
of float32 sums of this length.

The kernel is C++ compiled once per machine by inductor's C++ code cache (the same compiler,
flags and ``at::vec`` vector types as inductor's own CPU kernels, and the same on-disk cache);
that cache is not a public torch API, so :func:`kernel` returns ``None`` when it fails or
changes shape, and the first call of each dtype is checked against torch
(:func:`checked`): in either case the compiled segments compute the same reductions.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

#: ``OPTIMLAB_FUSED_NATIVE=0`` leaves every reduction to the compiled segments
ENABLED = os.environ.get("OPTIMLAB_FUSED_NATIVE", "1") != "0"

#: the vocabulary's reductions this pass computes (an RMS of ``x`` or ``y``, the rest of ``y``)
OPS = frozenset({"rms", "row_mean_sq", "col_mean_sq"})

_SOURCE = r"""
#include <torch/csrc/inductor/cpp_prefix.h>
#include <algorithm>
#include <vector>

// Row sums, column sums and the total of y², and the total of x², of each matrix of the
// batches x, y: [B, n, m] (optimlab/core/native.py). Tasks of BLOCK rows run in parallel on
// `threads` threads; each writes its own partial column sums and totals, which are then
// added in a fixed order, so the result does not depend on the number of threads.
template <bool HAS_X>
static void one_pass(const SCALAR* x, const SCALAR* y, double* x_ss, double* y_ss,
                     SCALAR* rows, SCALAR* cols, int64_t B, int64_t n, int64_t m,
                     int64_t threads) {
    using V = at::vec::Vectorized<SCALAR>;
    constexpr int64_t W = V::size();
    constexpr int64_t BLOCK = 256;
    const int64_t mv = m - m % W;
    const int64_t blocks = (n + BLOCK - 1) / BLOCK;
    const int64_t tasks = B * blocks;
    std::vector<SCALAR> parts(tasks * m);
    std::vector<double> xs(tasks), ys(tasks);
    #pragma omp parallel num_threads(threads)
    {
    std::vector<SCALAR> scratch(m);  // one row of column sums, hot in L1 from task to task
    SCALAR* pp = scratch.data();
    #pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
        const int64_t b = task / blocks;
        const int64_t i0 = (task % blocks) * BLOCK;
        const int64_t i1 = std::min(n, i0 + BLOCK);
        std::fill(pp, pp + m, SCALAR(0));
        double xt = 0.0, yt = 0.0;
        for (int64_t i = i0; i < i1; ++i) {
            const SCALAR* yr = y + (b * n + i) * m;
            const SCALAR* xr = HAS_X ? x + (b * n + i) * m : nullptr;
            V ya(SCALAR(0)), xa(SCALAR(0));
            int64_t j = 0;
            for (; j < mv; j += W) {
                V v = V::loadu(yr + j);
                V q = v * v;
                ya = ya + q;
                (V::loadu(pp + j) + q).store(pp + j);
                if (HAS_X) {
                    V u = V::loadu(xr + j);
                    xa = xa + u * u;
                }
            }
            auto add = [](V& a, V& c) { return a + c; };
            SCALAR yrow = at::vec::vec_reduce_all<SCALAR>(add, ya);
            SCALAR xrow = HAS_X ? at::vec::vec_reduce_all<SCALAR>(add, xa) : SCALAR(0);
            for (; j < m; ++j) {
                SCALAR q = yr[j] * yr[j];
                yrow += q;
                pp[j] += q;
                if (HAS_X) xrow += xr[j] * xr[j];
            }
            rows[b * n + i] = yrow / static_cast<SCALAR>(m);
            yt += yrow;
            xt += xrow;
        }
        std::copy(pp, pp + m, parts.data() + task * m);
        ys[task] = yt;
        xs[task] = xt;
    }
    }
    for (int64_t b = 0; b < B; ++b) {
        SCALAR* cb = cols + b * m;
        std::fill(cb, cb + m, SCALAR(0));
        double xt = 0.0, yt = 0.0;
        for (int64_t k = b * blocks; k < (b + 1) * blocks; ++k) {
            const SCALAR* pp = parts.data() + k * m;
            for (int64_t j = 0; j < m; ++j) cb[j] += pp[j];
            yt += ys[k];
            xt += xs[k];
        }
        for (int64_t j = 0; j < m; ++j) cb[j] /= static_cast<SCALAR>(n);
        y_ss[b] = yt;
        if (HAS_X) x_ss[b] = xt;
    }
}

extern "C" void kernel(const SCALAR* x, const SCALAR* y, double* x_ss, double* y_ss,
                       SCALAR* rows, SCALAR* cols, const int64_t B, const int64_t n,
                       const int64_t m, const int64_t has_x, const int64_t threads) {
    if (has_x) one_pass<true>(x, y, x_ss, y_ss, rows, cols, B, n, m, threads);
    else one_pass<false>(x, y, x_ss, y_ss, rows, cols, B, n, m, threads);
}
"""

_ARGTYPES = {
    torch.float32: "float",
    torch.float64: "double",
}
_KERNELS: dict[torch.dtype, object] = {}
_CHECKED: dict[torch.dtype, bool] = {}


def kernel(dtype: torch.dtype):
    """The compiled one-pass kernel for ``dtype`` (float32, float64), or ``None`` where it
    cannot be built (no compiler, a torch whose code cache works differently)."""
    if not ENABLED or dtype not in _ARGTYPES:
        return None
    if dtype not in _KERNELS:
        scalar = _ARGTYPES[dtype]
        try:
            from torch._inductor.codecache import CppPythonBindingsCodeCache

            argtypes = [f"const {scalar}*"] * 2 + ["double*"] * 2 + [f"{scalar}*"] * 2
            argtypes += ["const int64_t"] * 5
            source = f"#define SCALAR {scalar}\n" + _SOURCE
            _KERNELS[dtype] = CppPythonBindingsCodeCache.load_pybinding(argtypes, source)
        except Exception:  # noqa: BLE001 - any failure leaves the compiled segments in charge
            _KERNELS[dtype] = None
    return _KERNELS[dtype]


def reductions(x: Tensor | None, y: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
    """For batches ``x, y: [B, n, m]``: ``RMS(x)`` and ``RMS(y)`` (``[B, 1, 1]``) and the row
    and column means of ``y²`` (``[B, n, 1]``, ``[B, 1, m]``), from one pass over memory;
    ``RMS(x)`` is ``None`` without ``x``. The kernel must exist (:func:`kernel`)."""
    b, n, m = y.shape
    run = kernel(y.dtype)
    totals = torch.empty(2, b, dtype=torch.float64)
    rows = torch.empty(b, n, 1, dtype=y.dtype)
    cols = torch.empty(b, 1, m, dtype=y.dtype)
    has_x, threads = int(x is not None), torch.get_num_threads()
    run(y if x is None else x, y, totals[0], totals[1], rows, cols, b, n, m, has_x, threads)
    rms = totals.div_(n * m).sqrt_().to(y.dtype).view(2, b, 1, 1)
    return (None if x is None else rms[0]), rms[1], rows, cols


def applies(x: Tensor | None, y: Tensor) -> bool:
    """Whether :func:`reductions` can take these tensors: CPU, contiguous, a batch of
    matrices of float32 or float64, ``x`` (if any) of ``y``'s shape and dtype, no autograd, and a
    kernel that compiled and passed its check."""
    if not (
        type(y) is Tensor
        and y.device.type == "cpu"
        and y.dim() == 3
        and y.numel() > 0
        and y.is_contiguous()
        and not y.requires_grad
    ):
        return False
    if x is not None and not (
        type(x) is Tensor
        and x.shape == y.shape
        and x.dtype == y.dtype
        and x.device.type == "cpu"
        and x.is_contiguous()
        and not x.requires_grad
    ):
        return False
    return checked(y.dtype)


def checked(dtype: torch.dtype) -> bool:
    """Whether the kernel for ``dtype`` exists and computes what torch computes, on a batch
    with a ragged last dimension and more rows than one block (checked once per process)."""
    if dtype not in _CHECKED:
        ok = kernel(dtype) is not None
        if ok:
            gen = torch.Generator().manual_seed(0)
            x, y = (torch.randn(2, 300, 21, generator=gen, dtype=dtype) for _ in range(2))
            try:
                got = reductions(x, y)
                want = (
                    torch.sqrt(torch.mean(x * x, dim=(1, 2), keepdim=True)),
                    torch.sqrt(torch.mean(y * y, dim=(1, 2), keepdim=True)),
                    torch.mean(y * y, dim=-1, keepdim=True),
                    torch.mean(y * y, dim=-2, keepdim=True),
                )
                ok = all(torch.allclose(a, b, rtol=1e-5, atol=0) for a, b in zip(got, want))
            except Exception:  # noqa: BLE001 - a binding that takes other arguments
                ok = False
        _CHECKED[dtype] = ok
    return _CHECKED[dtype]
