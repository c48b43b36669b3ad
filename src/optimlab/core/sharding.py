"""Sharded parameters: the formula on local shards, collectives for what spans a whole tensor.

FSDP2 (``torch.distributed.fsdp.fully_shard``) makes every parameter a ``DTensor``: each process
holds a part of it, its *local shard* (with ``Shard(0)``, a block of rows; when the rows do not
split evenly the last processes hold fewer, or none), and the gradients arrive sharded the same
way. A formula that works elementwise gives the same numbers on the shards as on the whole
tensor, so every engine runs it on the local tensors, without DTensor's per-operation dispatch.
What spans a whole tensor is computed on the whole tensor, in the way the vocabulary declares
for each such operation (``on_shards`` in :mod:`optimlab.core.vocabulary`):

* a reduction (an RMS, a factored second moment's row and column means) as local partial sums,
  added up by one all-reduce per operation call and process group, then finished; the sum runs
  in another order than on one process, so results agree to rounding, not bit for bit;
* Newton–Schulz on the whole matrix: the shards are gathered, every process orthogonalises the
  whole matrix (the same bits everywhere) and keeps its own rows;
* a product or reshape locally when the sharded dimension allows it (the rows of a factored
  statistic, the batch dimensions), gathered otherwise.

:class:`ShardedOps` wraps an engine's vocabulary and does this: it knows the :class:`Layout`
(mesh, placements, whole shape) of every local tensor it was given or has made. The same
helpers serve the guards: a global gradient norm (:func:`total_norm`) and sums that every
process agrees on (:func:`all_reduce`), so their decisions are the same on every rank.

Nothing here imports ``torch.distributed.tensor``: a process that never made a DTensor pays
nothing, and a torch built without distributed support works as before.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from optimlab.core.tensorlist import bind
from optimlab.core.vocabulary import VOCABULARY, Op, math_function

_MODULES = ("torch.distributed.tensor", "torch.distributed._tensor")


def _dtensor_module():
    for name in _MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "DTensor"):
            return module
    return None


def dtensor_type() -> type | None:
    """The ``DTensor`` class if torch's distributed tensors are in use in this process (a
    DTensor cannot exist before its module is imported), else ``None``."""
    module = _dtensor_module()
    return None if module is None else module.DTensor


def is_dtensor(t: Any) -> bool:
    cls = dtensor_type()
    return cls is not None and isinstance(t, cls)


def any_dtensor(tensors: Iterable[Any]) -> bool:
    cls = dtensor_type()
    return cls is not None and any(isinstance(t, cls) for t in tensors)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (the same storage: in-place updates reach the DTensor), or
    ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t


def local_numel(t: Tensor) -> int:
    return local(t).numel()


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


class Layout:
    """Where a local tensor sits in a whole one: the device mesh, the placements (one per mesh
    dimension: ``Shard(d)`` or ``Replicate()``) and the whole tensor's shape."""

    __slots__ = ("mesh", "placements", "shape", "sharded")

    def __init__(self, mesh, placements: Sequence, shape: Sequence[int]) -> None:
        self.mesh = mesh
        self.placements = tuple(placements)
        self.shape = tuple(shape)
        #: tensor dimension -> the mesh dimensions that shard it
        self.sharded: dict[int, tuple[int, ...]] = {}
        for mesh_dim, placement in enumerate(self.placements):
            if placement.is_shard():
                d = placement.dim % max(len(self.shape), 1)
                self.sharded[d] = (*self.sharded.get(d, ()), mesh_dim)
            elif not placement.is_replicate():
                raise NotImplementedError(
                    f"optimlab steps DTensors that are sharded or replicated; found {placement} "
                    "(a partial value must be reduced before the optimizer step)"
                )

    @classmethod
    def of(cls, t: Tensor) -> Layout:
        return cls(t.device_mesh, t.placements, t.shape)

    def __repr__(self) -> str:
        return f"Layout({list(self.placements)}, shape={self.shape})"

    def same_split(self, other: Layout) -> bool:
        return self.mesh == other.mesh and self.placements == other.placements

    def shards_any(self, dims: Iterable[int]) -> bool:
        return any(d in self.sharded for d in dims)

    def groups(self, dims: Iterable[int] | None = None) -> tuple:
        """The process groups over which a sum over ``dims`` (default: all) must be added up."""
        dims = self.sharded if dims is None else dims
        mesh_dims = sorted({m for d in dims for m in self.sharded.get(d, ())})
        return tuple(self.mesh.get_group(m) for m in mesh_dims)

    def with_shape(self, shape: Sequence[int]) -> Layout:
        return Layout(self.mesh, self.placements, shape)

    def reduced(self, dims: Iterable[int]) -> Layout | None:
        """The layout after reducing over ``dims`` (kept as size 1): those dimensions are whole
        on every process now. ``None`` when nothing stays sharded."""
        dims = set(dims)
        replicate = _dtensor_module().Replicate
        placements = [
            replicate() if p.is_shard() and p.dim % max(len(self.shape), 1) in dims else p
            for p in self.placements
        ]
        if not any(p.is_shard() for p in placements):
            return None
        shape = [1 if d in dims else n for d, n in enumerate(self.shape)]
        return Layout(self.mesh, placements, shape)

    def dtensor(self, local_tensor: Tensor) -> Tensor:
        """``local_tensor`` as this layout's DTensor (no communication)."""
        return _dtensor_module().DTensor.from_local(
            local_tensor,
            self.mesh,
            self.placements,
            run_check=False,
            shape=torch.Size(self.shape),
            stride=_contiguous_strides(self.shape),
        )

    def gather(self, local_tensor: Tensor) -> Tensor:
        """The whole tensor, on every process (an all-gather)."""
        return self.dtensor(local_tensor).full_tensor()

    def scatter(self, whole: Tensor) -> Tensor:
        """This process's part of ``whole``, a tensor every process holds identically (no
        communication: each process takes its own part)."""
        module = _dtensor_module()
        replicated = module.DTensor.from_local(
            whole, self.mesh, [module.Replicate()] * self.mesh.ndim, run_check=False
        )
        return replicated.redistribute(self.mesh, self.placements).to_local()


# -- collectives ---------------------------------------------------------------------------------
def all_reduce(values: Sequence[Tensor], groups: Sequence[tuple], op: str = "sum") -> list[Tensor]:
    """Each ``values[i]`` summed (or maximised, ``op="max"``) over the process groups
    ``groups[i]``: one all-reduce per distinct tuple of groups and group, in first-seen order, so
    every process issues the same collectives when it holds the same tensors."""
    import torch.distributed as dist

    reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
    out = list(values)
    by_groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(groups):
        if key:
            by_groups.setdefault(key, []).append(i)
    for key, idx in by_groups.items():
        buffer = torch.cat([values[i].reshape(-1) for i in idx])
        for group in key:
            dist.all_reduce(buffer, op=reduce_op, group=group)
        offset = 0
        for i in idx:
            n = values[i].numel()
            out[i] = buffer[offset : offset + n].view_as(values[i])
            offset += n
    return out


def shard_groups(t: Tensor) -> tuple:
    """The process groups over which a sum over all of ``t``'s elements must be added up: those
    of the mesh dimensions that shard it (none for a plain or replicated tensor)."""
    return Layout.of(t).groups() if is_dtensor(t) else ()


def _local_norm(t: Tensor, norm_type: float) -> Tensor:
    """The norm of a local shard; 0 for an empty one (a process that holds no rows of a
    small parameter), where torch has no ∞-norm."""
    if t.numel() == 0:
        return torch.zeros(
            (), dtype=t.dtype if t.dtype.is_floating_point else None, device=t.device
        )
    return torch.linalg.vector_norm(t, norm_type)


def total_norm(tensors: Sequence[Tensor], norm_type: float) -> Tensor:
    """The ``norm_type``-norm of all elements of ``tensors`` together: the norm of the
    per-tensor norms, as :func:`torch.nn.utils.get_total_norm` computes it. DTensors count
    whole: the norms of their local shards are added up as ``‖·‖ᵖ`` in float64 (maximised, for
    ∞) over the processes holding each tensor's shards, so every process gets the same value."""
    if not tensors:
        return torch.tensor(0.0)
    inf = math.isinf(norm_type)
    norms = [_local_norm(local(t), norm_type) for t in tensors]
    device = norms[0].device
    if not any_dtensor(tensors):
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), norm_type)
    if inf:
        parts = [n.to(device) for n in norms]
    else:
        parts = [n.to(device, torch.float64) ** norm_type for n in norms]
    parts = all_reduce(parts, [shard_groups(t) for t in tensors], "max" if inf else "sum")
    stacked = torch.stack(parts)
    if inf:
        return stacked.max().to(norms[0].dtype)
    return (stacked.sum() ** (1.0 / norm_type)).to(norms[0].dtype)


# -- the vocabulary on shards --------------------------------------------------------------------
def _batch_of_one(fn, tensors: int = 1):
    """``fn``, written for batches of parameters, on one: its first ``tensors`` arguments get a
    batch dimension of one, which the result loses."""

    def apply(*args):
        return fn(*(a[None] if i < tensors else a for i, a in enumerate(args)))[0]

    return apply


def _reduced_dims(op: Op, t: Tensor) -> tuple[int, ...]:
    if t.dim() == 0:
        return ()
    if op.over is None:
        return tuple(range(t.dim()))
    return tuple(d % t.dim() for d in op.over)


def _lowp(t: Tensor) -> Tensor:
    """Partial sums of half-precision tensors in float32 (torch's reductions accumulate so)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class ShardedOps:
    """An engine's vocabulary on local shards (see the module docstring).

    :meth:`enter` hands the formula the local tensor of a DTensor and remembers its layout;
    results of operations are remembered with the layout they have. Elementwise operations run
    as the wrapped engine runs them; the others as the vocabulary's ``on_shards`` says.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.static_program = inner.static_program
        self._known: dict[int, tuple[Tensor, Layout]] = {}

    def track(self, t: Tensor, layout: Layout | None) -> Tensor:
        if layout is not None:
            self._known[id(t)] = (t, layout)
        return t

    def layout(self, t: Any) -> Layout | None:
        entry = self._known.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    def enter(self, t: Tensor | None, param: Tensor, what: str) -> Tensor | None:
        """The local tensor the formula sees for ``t`` (``param``'s gradient or state ``what``),
        complex ones as pairs of reals. A DTensor parameter's gradient must be sharded like
        it, and its state be DTensors."""
        if t is None:
            return None
        if not is_dtensor(t):
            if t.dim() == 0:
                return t  # per-parameter scalar state (a step count)
            raise ValueError(
                f"{what} of a DTensor parameter is a plain tensor of shape {tuple(t.shape)}: "
                "give sharded parameters sharded state (load checkpoints of sharded models "
                "with torch.distributed.checkpoint.state_dict.set_optimizer_state_dict)"
            )
        layout = Layout.of(t)
        if what == "gradient" and not layout.same_split(Layout.of(param)):
            raise ValueError(
                f"the gradient of a DTensor parameter is placed {list(layout.placements)}, the "
                f"parameter {list(param.placements)}: redistribute it before the step"
            )
        tensor = t.to_local()
        if tensor.is_complex():
            tensor = torch.view_as_real(tensor)
            layout = layout.with_shape((*layout.shape, 2))
        return self.track(tensor, layout)

    def _like(self, result: Tensor, operands: Sequence[Any]) -> Layout | None:
        """The layout of an elementwise result: the known operands' whole shapes broadcast
        together, split like a sharded operand (a
        factored ``R^(-1/2)`` of shape [n, 1] times a replicated ``C^(-1/2)`` of shape
        [1, m] is an [n, m] tensor split like R)."""
        layouts = [lay for x in operands if (lay := self.layout(x)) is not None]
        if not layouts:
            return None
        if all(lay.shape == layouts[0].shape for lay in layouts):  # the usual case, cheaply
            return next((lay for lay in layouts if lay.sharded), layouts[0])
        shape = tuple(torch.broadcast_shapes(*(lay.shape for lay in layouts)))
        split = [lay for lay in layouts if lay.sharded] or layouts
        exact = [lay for lay in split if lay.shape == shape]
        chosen = exact[0] if exact else split[0]
        return chosen if chosen.shape == shape else chosen.with_shape(shape)


def _elementwise(op: Op):
    def method(self, *args, **kwargs):
        out = getattr(self.inner, op.name)(*args, **kwargs)
        if out is not None:
            lists = args[: op.tensors]
            for i, result in enumerate(out):
                self.track(result, self._like(result, [lst[i] for lst in lists]))
        return out

    return method


def _summed(op: Op):
    """A reduction: locally where no reduced dimension is sharded, else partial sums that are
    all-reduced and finished."""
    partial = _batch_of_one(math_function(op, "partial"))
    finish = _batch_of_one(math_function(op, "finish"))

    def method(self, *args, **kwargs):
        (xs,), _, _ = bind(op, args, dict(kwargs))
        out: list = [None] * len(xs)
        local_idx, pending = [], []
        for i, x in enumerate(xs):
            layout, dims = self.layout(x), _reduced_dims(op, x)
            if layout is not None and layout.shards_any(dims):
                pending.append((i, layout, dims))
            else:
                local_idx.append((i, layout, dims))
        if local_idx:
            results = getattr(self.inner, op.name)([xs[i] for i, _, _ in local_idx])
            for (i, layout, dims), r in zip(local_idx, results):
                out[i] = self.track(r, layout.reduced(dims) if layout is not None else None)
        if pending:
            sums = all_reduce(
                [partial(_lowp(xs[i])) for i, _, _ in pending],
                [layout.groups(dims) for _, layout, dims in pending],
            )
            for (i, layout, dims), total in zip(pending, sums):
                count = math.prod(layout.shape[d] for d in dims)
                result = finish(total, float(count)).to(xs[i].dtype)
                out[i] = self.track(result, layout.reduced(dims))
        return out

    return method


def _gathered(op: Op):
    """An operation on whole matrices: gathered, computed whole everywhere, then each process
    keeps its part (the input's layout)."""

    def method(self, *args, **kwargs):
        lists, scalars, statics = bind(op, args, dict(kwargs))
        xs = lists[0]
        out: list = [None] * len(xs)
        plain = [i for i, x in enumerate(xs) if self.layout(x) is None]
        if plain:
            sub = [[lst[i] for i in plain] for lst in lists]
            for i, r in zip(plain, getattr(self.inner, op.name)(*sub, *scalars, **statics)):
                out[i] = r
        for i, x in enumerate(xs):
            layout = self.layout(x)
            if layout is None:
                continue
            whole = [layout.gather(x)]
            result = getattr(self.inner, op.name)(whole, *scalars, **statics)[0]
            out[i] = self.track(layout.scatter(result), layout)
        return out

    return method


def _rows_only(layout: Layout | None) -> bool:
    return layout is not None and set(layout.sharded) <= {0}


def _reshaped(op: Op):
    """A reshape: local when only the first dimension is sharded and stays the first
    dimension, else on the gathered whole tensor."""
    one = _batch_of_one(math_function(op), op.tensors)

    def method(self, *args, **kwargs):
        lists, scalars, statics = bind(op, args, dict(kwargs))
        n = len(lists[0])
        out: list = [None] * n
        for i in range(n):
            x = lists[0][i]
            target = lists[1][i] if op.tensors == 2 else None
            lx = self.layout(x)
            lt = self.layout(target) if target is not None else None
            if lx is None and lt is None:
                out[i] = getattr(self.inner, op.name)(*[[lst[i]] for lst in lists])[0]
                continue
            # the whole result's shape, from the whole input's (nothing is allocated)
            meta = [
                torch.empty(layout.shape if layout else t.shape, dtype=t.dtype, device="meta")
                for t, layout in ((x, lx), (target, lt))
                if t is not None
            ]
            shape = tuple(one(*meta).shape)
            rows = _rows_only(lx) and (lt is None or _rows_only(lt) and lt.same_split(lx))
            if rows and shape[:1] == lx.shape[:1]:
                result = getattr(self.inner, op.name)(*[[lst[i]] for lst in lists])[0]
                out[i] = self.track(result, lx.with_shape(shape))
                continue
            whole_x = lx.gather(x) if lx is not None else x
            operands = [whole_x] if target is None else [whole_x, meta[1]]
            whole = one(*operands)
            out[i] = self.track(lt.scatter(whole), lt) if lt is not None else whole
        return out

    return method


def _multiplied(op: Op):
    """A matrix product: local when the shards are rows of the left factor, columns of the
    right one, or batch dimensions sharded alike; else on the gathered whole factors."""

    def method(self, *args, **kwargs):
        (xs, ys), _, _ = bind(op, args, dict(kwargs))
        out: list = [None] * len(xs)
        for i, (x, y) in enumerate(zip(xs, ys)):
            lx, ly = self.layout(x), self.layout(y)
            result = None
            if lx is None and ly is None:
                out[i] = getattr(self.inner, op.name)([x], [y])[0]
                continue
            layout = _product_layout(x, lx, y, ly)
            if layout is not None:
                result = getattr(self.inner, op.name)([x], [y])[0]
                out[i] = self.track(result, layout)
                continue
            whole_x = lx.gather(x) if lx is not None else x
            whole_y = ly.gather(y) if ly is not None else y
            out[i] = getattr(self.inner, op.name)([whole_x], [whole_y])[0]
        return out

    return method


def _product_layout(x: Tensor, lx: Layout | None, y: Tensor, ly: Layout | None):
    """The layout of ``x @ y`` computed on local shards, or ``None`` if the shards do not
    allow it."""
    nx, ny = x.dim(), y.dim()
    if nx < 2 or ny < 2 or nx != ny:
        return None
    batch = set(range(nx - 2))
    if lx is not None and not set(lx.sharded) <= batch | {nx - 2}:
        return None  # the contracted dimension of x is split
    if ly is not None and not set(ly.sharded) <= batch | {ny - 1}:
        return None  # the contracted dimension of y is split
    if lx is not None and ly is not None:
        bx = {d: m for d, m in lx.sharded.items() if d in batch}
        by = {d: m for d, m in ly.sharded.items() if d in batch}
        if bx != by or lx.mesh != ly.mesh or (nx - 2 in lx.sharded and ny - 1 in ly.sharded):
            return None
    base = lx if lx is not None else ly
    rows = lx.shape[-2] if lx is not None else x.shape[-2]
    cols = ly.shape[-1] if ly is not None else y.shape[-1]
    lead = (lx.shape if lx is not None else ly.shape)[:-2]
    placements = list(base.placements)
    if lx is not None and ly is not None:
        for m, p in enumerate(ly.placements):
            if p.is_shard() and p.dim % ny == ny - 1:
                placements[m] = p
    return Layout(base.mesh, placements, (*lead, rows, cols))


def _grouped(op: Op):
    """A reduction over the whole group: each tensor's part from its local shard, the parts
    of sharded tensors all-reduced over the processes holding their shards, then added up,
    so every process gets the same total. (The parts are added in one order everywhere; the
    total equals one process's up to the order of its sums.)"""
    one = math_function(op)

    def method(self, *args, **kwargs):
        lists, _, statics = bind(op, args, dict(kwargs))
        xs = lists[0]
        if not xs:
            return []
        parts = [_lowp(one(x, **statics)).reshape(1) for x in xs]
        groups = [layout.groups() if (layout := self.layout(x)) is not None else () for x in xs]
        parts = all_reduce(parts, groups)
        device = parts[0].device
        total = torch.cat([p.to(device) for p in parts]).sum().to(xs[0].dtype)
        return [total] * len(xs)

    return method


_FORMS = {
    "group": _grouped,
    "sum": _summed,
    "gather": _gathered,
    "reshape": _reshaped,
    "matmul": _multiplied,
}


def _unsupported(op: Op):
    def method(self, *args, **kwargs):
        lists = args[: op.tensors]
        if any(self.layout(t) is not None for lst in lists for t in lst):
            raise NotImplementedError(
                f"the {op.kind} operation {op.name!r} declares no form for sharded tensors "
                "(on_shards in optimlab.core.vocabulary), so it cannot run on DTensor shards"
            )
        return getattr(self.inner, op.name)(*args, **kwargs)

    return method


for _op in VOCABULARY:
    if _op.kind == "elementwise":
        _method = _elementwise(_op)
    else:
        _method = _FORMS.get(_op.on_shards, lambda op: _unsupported(op))(_op)
    _method.__name__ = _op.name
    setattr(ShardedOps, _op.name, _method)
del _op, _method
