"""The eager engines' operations over lists of tensors, generated from the vocabulary.

An optimizer's formula is written once against the operations of
:mod:`optimlab.core.vocabulary` (``mul_``, ``addcmul_``, ``lerp_``, ``rms``...). Each engine
executes them differently:

* :class:`LoopOps` applies each operation tensor by tensor (torch's native call where the
  vocabulary names one, else the operation's math). It is the readable baseline.
* :class:`ForeachOps` hands whole lists to ``torch._foreach_*`` kernels, which launch one
  kernel per list on CUDA; an operation without such a kernel runs as :class:`LoopOps`. This
  module (through the vocabulary) is the only place in optimlab that calls ``torch._foreach_*``.
* :class:`DifferentiableOps` computes the math out of place, so autograd can record the step.

A *scalar* argument is either one number for the whole list or a sequence with one number
per tensor (step-dependent quantities such as bias corrections differ per tensor when some
parameters skipped steps). Tensors in one call must share a device; callers group by
``(device, dtype)`` with :func:`group_by_device_and_dtype`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from optimlab.core.vocabulary import VOCABULARY, Op, math_function

Scalar = float | Tensor | Sequence[float]
TensorList = list[Tensor]


def _per_tensor(s: Scalar, n: int) -> Sequence:
    if isinstance(s, (list, tuple)):
        if len(s) != n:
            raise ValueError(f"expected {n} per-tensor scalars, got {len(s)}")
        return s
    return [s] * n


def _uniform(s: Scalar) -> Scalar:
    """A per-tensor list whose entries are all equal as one scalar; other lists as a list."""
    if isinstance(s, (list, tuple)):
        if s and all(x == s[0] for x in s):
            return s[0]
        return list(s)
    return s


def bind(op: Op, args: tuple, kwargs: dict) -> tuple[tuple, list, dict]:
    """``op``'s tensor lists, scalars (defaults applied) and static arguments from a call."""
    if len(args) < op.tensors:
        raise TypeError(f"{op.name}() takes {op.tensors} tensor lists, got {len(args)}")
    lists, scalars = args[: op.tensors], list(args[op.tensors :])
    statics = {}
    for name in op.statics:
        if name not in kwargs:
            raise TypeError(f"{op.name}() missing keyword argument {name!r}")
        statics[name] = kwargs.pop(name)
    first_default = len(op.scalars) - len(op.defaults)
    for i in range(len(scalars), len(op.scalars)):
        name = op.scalars[i]
        if name in kwargs:
            scalars.append(kwargs.pop(name))
        elif i >= first_default:
            scalars.append(op.defaults[i - first_default])
        else:
            raise TypeError(f"{op.name}() missing scalar {name!r}")
    if kwargs or len(scalars) > len(op.scalars):
        raise TypeError(f"{op.name}() got unexpected arguments {sorted(kwargs) or args}")
    return lists, scalars, statics


def _math_one(op: Op):
    """The op's math for one tensor, out of place; an op written for batches of parameters
    gets a batch of one (a group op's math is one tensor's part of the total)."""
    math = math_function(op)
    if op.kind in ("elementwise", "group"):
        return math

    def batched(*args, **statics):
        lifted = [
            a[None] if i < op.tensors and isinstance(a, Tensor) else a for i, a in enumerate(args)
        ]
        return math(*lifted, **statics)[0]

    return batched


def _one_tensor(op: Op):
    """The op for one tensor (and its scalars): torch's native call where the vocabulary
    names one, else its math (written into the first tensor for an in-place op)."""
    if op.kind == "elementwise" and op.loop is not None:
        return op.loop
    math = _math_one(op)
    if op.inplace:
        return lambda x, *rest, **statics: x.copy_(math(x, *rest, **statics))
    return math


class LoopOps:
    """One tensor at a time, with torch's native calls (see the module docstring)."""

    name = "loop"
    #: eager engines may skip work whose coefficient is zero; a recording engine may not
    static_program = False


class ForeachOps(LoopOps):
    """Whole lists at once through ``torch._foreach_*`` (one kernel launch per list on CUDA)."""

    name = "foreach"


class DifferentiableOps(LoopOps):
    """:class:`LoopOps` for ``differentiable=True``: autograd records the step.

    An in-place operation on a tensor that some backward function saved breaks autograd, so:
    tensors the step keeps (``persistent``: parameters and state) are updated in place, as
    torch.optim does, but through a clone of their old value (``x.copy_(f(x.clone(), ...))``),
    and every tensor is used as an operand through a clone, so a later in-place update cannot
    invalidate a saved value; every other tensor (intermediates of the formula) is replaced in
    its list by the out-of-place result. The numbers are those of each operation's math.
    """

    name = "loop"

    def __init__(self, persistent: set[int]) -> None:
        self.persistent = persistent

    def _operand(self, t):
        # every tensor operand, not only parameters and state: a buffer the step creates
        # (SGD's first momentum) becomes state that the next step updates in place, and a
        # product with a tensor lr that requires grad saves its other factor
        return t.clone() if isinstance(t, Tensor) else t


class CapturableOps(LoopOps):
    """The ops of ``capturable=True``: one tensor at a time, with scalars that may be tensors
    on the parameters' device (the step count, a tensor lr, the bias corrections made from
    them), so that nothing is read back to the host and the step can be captured in a CUDA
    graph. An operation runs torch's native call as :class:`LoopOps` does, or its math where
    one of its scalars is such a tensor (not every native call takes one); parameters and state
    are updated in place either way (a graph replays on fixed addresses). ``static_program``: a
    graph replays the same kernels, so no work is skipped for a coefficient that happens to be
    zero at capture time.
    """

    static_program = True


def _group_total(parts: list) -> list:
    """Each tensor's part of a group reduction added up: the same 0-d total for every tensor
    (parts on several devices are added on the first one's)."""
    if not parts:
        return []
    device = parts[0].device
    total = torch.stack([p.to(device) for p in parts]).sum()
    return [total] * len(parts)


def _capturable_one(op: Op):
    """:func:`_one_tensor`, except that scalars given as tensors take the op's math."""
    native = _one_tensor(op)
    if op.kind != "elementwise" or op.loop is None:
        return native  # the math already
    math = _math_one(op)

    def one(*args, **statics):
        if not any(isinstance(a, Tensor) for a in args[op.tensors :]):
            return native(*args, **statics)
        if op.inplace:
            return args[0].copy_(math(*args, **statics))
        return math(*args, **statics)

    return one


def _loop_method(op: Op, one=None):
    one = one or _one_tensor(op)
    if op.kind == "group":

        def group_method(self, *args, **kwargs):
            lists, _, statics = bind(op, args, kwargs)
            return _group_total([one(x, **statics) for x in lists[0]])

        return group_method

    def method(self, *args, **kwargs):
        lists, scalars, statics = bind(op, args, kwargs)
        n = len(lists[0])
        columns = [*lists, *(_per_tensor(s, n) for s in scalars)]
        results = [one(*(c[i] for c in columns), **statics) for i in range(n)]
        return None if op.inplace else results

    return method


def _foreach_method(op: Op, fallback):
    def method(self, *args, **kwargs):
        lists, scalars, statics = bind(op, args, kwargs)
        if not lists[0]:
            return None if op.inplace else []
        out = op.foreach(*lists, *(_uniform(s) for s in scalars), **statics)
        return None if op.inplace else list(out)

    return method if op.foreach is not None else fallback


def _differentiable_method(op: Op):
    math = _math_one(op)
    if op.kind == "group":

        def group_method(self, *args, **kwargs):
            lists, _, statics = bind(op, args, kwargs)
            return _group_total([math(self._operand(x), **statics) for x in lists[0]])

        return group_method

    def method(self, *args, **kwargs):
        lists, scalars, statics = bind(op, args, kwargs)
        n = len(lists[0])
        operands = [*lists[1:], *(_per_tensor(s, n) for s in scalars)]
        if not op.inplace:
            columns = [lists[0], *operands]
            return [math(*(self._operand(c[i]) for c in columns), **statics) for i in range(n)]
        xs = lists[0]
        for i, x in enumerate(xs):
            rest = [self._operand(c[i]) for c in operands]
            if id(x) in self.persistent:
                x.copy_(math(self._operand(x), *rest, **statics))
            else:
                xs[i] = math(x, *rest, **statics)
        return None

    return method


for _op in VOCABULARY:
    _loop = _loop_method(_op)
    _loop.__name__ = _op.name
    _loop.__doc__ = _op.doc or f"{_op.name}: ``{_op.math}``"
    setattr(LoopOps, _op.name, _loop)
    _each = _foreach_method(_op, _loop)
    setattr(ForeachOps, _op.name, _each)
    setattr(DifferentiableOps, _op.name, _differentiable_method(_op))
    _capture = _loop_method(_op, _capturable_one(_op))
    _capture.__name__, _capture.__doc__ = _loop.__name__, _loop.__doc__
    setattr(CapturableOps, _op.name, _capture)
del _op, _loop, _each, _capture

LOOP = LoopOps()
FOREACH = ForeachOps()


def group_by_device_and_dtype(tensors: Sequence[Tensor]) -> dict[tuple, list[int]]:
    """Indices of ``tensors`` bucketed by ``(device, dtype)``, in first-seen order."""
    buckets: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    return buckets
