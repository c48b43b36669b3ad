"""The tensor-list backend: elementwise operations over lists of tensors.

An optimizer's formula is written once against the small vocabulary below (``mul_``,
``addcmul_``, ``lerp_``, ...). Each engine executes that vocabulary differently:

* :class:`LoopOps` applies each operation tensor by tensor. It is the readable baseline and
  the form that ``torch.compile`` traces for the fused engine.
* :class:`ForeachOps` hands whole lists to ``torch._foreach_*`` kernels, which launch one
  kernel per list on CUDA. This module is the only place in optimlab allowed to call
  ``torch._foreach_*``.

A *scalar* argument is either one number for the whole list or a sequence with one number
per tensor (step-dependent quantities such as bias corrections differ per tensor when some
parameters skipped steps). Tensors in one call must share a device; callers group by
``(device, dtype)`` with :func:`group_by_device_and_dtype`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Scalar = float | Tensor | Sequence[float]
TensorList = list[Tensor]


def _per_tensor(s: Scalar, n: int) -> Sequence:
    if isinstance(s, (list, tuple)):
        if len(s) != n:
            raise ValueError(f"expected {n} per-tensor scalars, got {len(s)}")
        return s
    return [s] * n


def _uniform(s: Scalar) -> Scalar:
    """Collapse a per-tensor list whose entries are all equal into one scalar."""
    if isinstance(s, (list, tuple)) and s and all(x == s[0] for x in s):
        return s[0]
    return s


class LoopOps:
    """One tensor at a time, with plain in-place tensor methods."""

    name = "loop"
    #: eager engines may skip work whose coefficient is zero; a recording engine may not
    static_program = False

    def clone(self, xs: TensorList) -> TensorList:
        return [x.clone() for x in xs]

    def neg(self, xs: TensorList) -> TensorList:
        return [torch.neg(x) for x in xs]

    def copy_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            x.copy_(y)

    def add(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> TensorList:
        return [torch.add(x, y, alpha=alpha) for x, y in zip(xs, ys)]

    def add_(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> None:
        for x, y in zip(xs, ys):
            x.add_(y, alpha=alpha)

    def add_scalar_(self, xs: TensorList, s: Scalar) -> None:
        for x, si in zip(xs, _per_tensor(s, len(xs))):
            x.add_(si)

    def add_scaled_(self, xs: TensorList, ys: TensorList, s: Scalar) -> None:
        """``x ← x + s·y`` with a per-tensor ``s``."""
        for x, y, si in zip(xs, ys, _per_tensor(s, len(xs))):
            x.add_(y, alpha=si)

    def mul(self, xs: TensorList, s: Scalar) -> TensorList:
        return [torch.mul(x, si) for x, si in zip(xs, _per_tensor(s, len(xs)))]

    def mul_(self, xs: TensorList, s: Scalar) -> None:
        for x, si in zip(xs, _per_tensor(s, len(xs))):
            x.mul_(si)

    def mul_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            x.mul_(y)

    def div_(self, xs: TensorList, s: Scalar) -> None:
        for x, si in zip(xs, _per_tensor(s, len(xs))):
            x.div_(si)

    def div_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            x.div_(y)

    def addcmul(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> TensorList:
        return [torch.addcmul(x, y, z, value=value) for x, y, z in zip(xs, ys, zs)]

    def addcmul_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: Scalar) -> None:
        for x, y, z, v in zip(xs, ys, zs, _per_tensor(value, len(xs))):
            x.addcmul_(y, z, value=v)

    def addcdiv_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: Scalar) -> None:
        for x, y, z, v in zip(xs, ys, zs, _per_tensor(value, len(xs))):
            x.addcdiv_(y, z, value=v)

    def lerp_(self, xs: TensorList, ys: TensorList, weight: float) -> None:
        for x, y in zip(xs, ys):
            x.lerp_(y, weight)

    def sqrt(self, xs: TensorList) -> TensorList:
        return [torch.sqrt(x) for x in xs]

    def sqrt_(self, xs: TensorList) -> None:
        for x in xs:
            x.sqrt_()

    def abs(self, xs: TensorList) -> TensorList:
        return [torch.abs(x) for x in xs]

    def maximum_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            torch.maximum(x, y, out=x)

    def reciprocal(self, xs: TensorList) -> TensorList:
        return [torch.reciprocal(x) for x in xs]

    def clamp_(self, xs: TensorList, lo: Scalar, hi: Scalar) -> None:
        n = len(xs)
        for x, a, b in zip(xs, _per_tensor(lo, n), _per_tensor(hi, n)):
            x.clamp_(min=a, max=b)


class ForeachOps(LoopOps):
    """Whole lists at once through ``torch._foreach_*`` (one kernel launch per list on CUDA)."""

    name = "foreach"

    def clone(self, xs: TensorList) -> TensorList:
        return list(torch._foreach_mul(xs, 1.0)) if xs else []

    def neg(self, xs: TensorList) -> TensorList:
        return list(torch._foreach_neg(xs))

    def copy_(self, xs: TensorList, ys: TensorList) -> None:
        torch._foreach_copy_(xs, ys)

    def add(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> TensorList:
        return list(torch._foreach_add(xs, ys, alpha=alpha))

    def add_(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> None:
        torch._foreach_add_(xs, ys, alpha=alpha)

    def add_scalar_(self, xs: TensorList, s: Scalar) -> None:
        torch._foreach_add_(xs, _uniform(s))

    def mul(self, xs: TensorList, s: Scalar) -> TensorList:
        return list(torch._foreach_mul(xs, _uniform(s)))

    def mul_(self, xs: TensorList, s: Scalar) -> None:
        torch._foreach_mul_(xs, _uniform(s))

    def mul_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        torch._foreach_mul_(xs, ys)

    def div_(self, xs: TensorList, s: Scalar) -> None:
        torch._foreach_div_(xs, _uniform(s))

    def div_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        torch._foreach_div_(xs, ys)

    def addcmul(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> TensorList:
        return list(torch._foreach_addcmul(xs, ys, zs, value=value))

    def addcmul_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: Scalar) -> None:
        value = _uniform(value)
        if isinstance(value, (list, tuple)):
            torch._foreach_addcmul_(xs, ys, zs, list(value))
        else:
            torch._foreach_addcmul_(xs, ys, zs, value=value)

    def addcdiv_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: Scalar) -> None:
        value = _uniform(value)
        if isinstance(value, (list, tuple)):
            torch._foreach_addcdiv_(xs, ys, zs, list(value))
        else:
            torch._foreach_addcdiv_(xs, ys, zs, value=value)

    def lerp_(self, xs: TensorList, ys: TensorList, weight: float) -> None:
        torch._foreach_lerp_(xs, ys, weight)

    def sqrt(self, xs: TensorList) -> TensorList:
        return list(torch._foreach_sqrt(xs))

    def sqrt_(self, xs: TensorList) -> None:
        torch._foreach_sqrt_(xs)

    def abs(self, xs: TensorList) -> TensorList:
        return list(torch._foreach_abs(xs))

    def maximum_(self, xs: TensorList, ys: TensorList) -> None:
        torch._foreach_maximum_(xs, ys)

    def reciprocal(self, xs: TensorList) -> TensorList:
        return list(torch._foreach_reciprocal(xs))

    def clamp_(self, xs: TensorList, lo: Scalar, hi: Scalar) -> None:
        torch._foreach_clamp_min_(xs, _uniform(lo))
        torch._foreach_clamp_max_(xs, _uniform(hi))


class DifferentiableOps(LoopOps):
    """:class:`LoopOps` for ``differentiable=True``: autograd records the step.

    An in-place operation on a tensor that some backward function saved breaks autograd, so:
    tensors the step keeps (``persistent``: parameters and state) are updated in place, as
    torch.optim does, but through a clone of their old value (``x.copy_(f(x.clone(), ...))``),
    and used as operands through a clone too, so a later in-place update cannot invalidate a
    saved value; every other tensor (intermediates of the formula) is replaced in its list by
    the out-of-place result. The numbers are those of :class:`LoopOps`.
    """

    name = "loop"

    def __init__(self, persistent: set[int]) -> None:
        self.persistent = persistent

    def _operand(self, t):
        return t.clone() if isinstance(t, Tensor) and id(t) in self.persistent else t

    def _each_(self, xs: TensorList, f, *columns) -> None:
        for i, x in enumerate(xs):
            args = [self._operand(c[i]) for c in columns]
            if id(x) in self.persistent:
                x.copy_(f(x.clone(), *args))
            else:
                xs[i] = f(x, *args)

    def _map(self, f, *columns) -> TensorList:
        return [f(*(self._operand(c[i]) for c in columns)) for i in range(len(columns[0]))]

    def clone(self, xs):
        return self._map(torch.clone, xs)

    def neg(self, xs):
        return self._map(torch.neg, xs)

    def add(self, xs, ys, alpha=1.0):
        return self._map(lambda x, y: torch.add(x, y, alpha=alpha), xs, ys)

    def mul(self, xs, s):
        return self._map(torch.mul, xs, _per_tensor(s, len(xs)))

    def addcmul(self, xs, ys, zs, value):
        return self._map(lambda x, y, z: torch.addcmul(x, y, z, value=value), xs, ys, zs)

    def sqrt(self, xs):
        return self._map(torch.sqrt, xs)

    def abs(self, xs):
        return self._map(torch.abs, xs)

    def reciprocal(self, xs):
        return self._map(torch.reciprocal, xs)

    def copy_(self, xs, ys):
        self._each_(xs, lambda x, y: y.clone(), ys)

    def add_(self, xs, ys, alpha=1.0):
        self._each_(xs, lambda x, y: torch.add(x, y, alpha=alpha), ys)

    def add_scalar_(self, xs, s):
        self._each_(xs, torch.add, _per_tensor(s, len(xs)))

    def add_scaled_(self, xs, ys, s):
        self._each_(xs, lambda x, y, a: torch.add(x, y, alpha=a), ys, _per_tensor(s, len(xs)))

    def mul_(self, xs, s):
        self._each_(xs, torch.mul, _per_tensor(s, len(xs)))

    def mul_tensors_(self, xs, ys):
        self._each_(xs, torch.mul, ys)

    def div_(self, xs, s):
        self._each_(xs, torch.div, _per_tensor(s, len(xs)))

    def div_tensors_(self, xs, ys):
        self._each_(xs, torch.div, ys)

    def addcmul_(self, xs, ys, zs, value):
        f = lambda x, y, z, v: torch.addcmul(x, y, z, value=v)  # noqa: E731
        self._each_(xs, f, ys, zs, _per_tensor(value, len(xs)))

    def addcdiv_(self, xs, ys, zs, value):
        f = lambda x, y, z, v: torch.addcdiv(x, y, z, value=v)  # noqa: E731
        self._each_(xs, f, ys, zs, _per_tensor(value, len(xs)))

    def lerp_(self, xs, ys, weight):
        self._each_(xs, lambda x, y: torch.lerp(x, y, weight), ys)

    def sqrt_(self, xs):
        self._each_(xs, torch.sqrt)

    def maximum_(self, xs, ys):
        self._each_(xs, torch.maximum, ys)

    def clamp_(self, xs, lo, hi):
        n = len(xs)
        self._each_(xs, lambda x, a, b: x.clamp(a, b), _per_tensor(lo, n), _per_tensor(hi, n))


LOOP = LoopOps()
FOREACH = ForeachOps()


def group_by_device_and_dtype(tensors: Sequence[Tensor]) -> dict[tuple, list[int]]:
    """Indices of ``tensors`` bucketed by ``(device, dtype)``, in first-seen order."""
    buckets: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    return buckets
