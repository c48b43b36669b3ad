"""Recording: an optimizer's formula, written down instead of executed.

The fused engine runs the optimizer's one formula with :class:`RecordingOps`. Every operation
on a list of :class:`Sym` (a placeholder for one of the kernel's tensors) is appended to a
*program*: which operation of :mod:`optimlab.core.vocabulary`, which tensors it reads, where its
result goes, and which slots of the scalars vector hold its Python scalars. The program depends
only on the optimizer's configuration; the scalars (lr, β, bias corrections, bounds...) change
every step and travel as one tensor, so a schedule causes no recompilation.
:mod:`optimlab.core.codegen` turns the program into a kernel.

Lists of real tensors (e.g. NAdam's 0-d ``mu_product``) are executed at once, eagerly, with
:data:`~optimlab.core.tensorlist.LOOP`. :attr:`RecordingOps.kinds` collects the kinds of the
recorded operations, from which the engines know what a formula needs (its capabilities).
"""

from __future__ import annotations

from optimlab.core.tensorlist import LOOP, Scalar, bind
from optimlab.core.vocabulary import VOCABULARY, Op


class Sym:
    """A placeholder for a tensor of the program (an input, or a value it computes)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _symbolic(xs) -> bool:
    return bool(xs) and isinstance(xs[0], Sym)


def _first(s: Scalar):
    if isinstance(s, (list, tuple)):
        if len(s) != 1:
            raise ValueError("the fused engine runs one tensor per list")
        return s[0]
    return s


class RecordingOps:
    """The vocabulary of :mod:`optimlab.core.vocabulary`, recorded (see the module docstring)."""

    name = "fused"
    static_program = True

    def __init__(self, n_inputs: int) -> None:
        self.program: list[tuple] = []
        self.values: list[float] = []
        self.size = n_inputs
        self.kinds: set[str] = set()

    def _emit(self, op: Op, tensors, scalars, statics: dict) -> list[Sym] | None:
        slots = []
        for s in scalars:
            self.values.append(float(_first(s)))
            slots.append(len(self.values) - 1)
        index = -1
        if not op.inplace:
            index = self.size
            self.size += 1
        self.kinds.add(op.kind)
        args = tuple(t[0].index for t in tensors)
        self.program.append((op.name, index, args, tuple(slots), tuple(statics.items())))
        return None if op.inplace else [Sym(index)]


def _recording_method(op: Op):
    eager = getattr(LOOP, op.name)

    def method(self, *args, **kwargs):
        lists, scalars, statics = bind(op, args, kwargs)
        if not _symbolic(lists[0]):
            return eager(*lists, *scalars, **statics)
        return self._emit(op, lists, scalars, statics)

    method.__name__ = op.name
    return method


for _op in VOCABULARY:
    setattr(RecordingOps, _op.name, _recording_method(_op))
del _op
