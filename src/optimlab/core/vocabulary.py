"""The one vocabulary every engine speaks, declared once.

An optimizer's formula calls operations on lists of tensors (``ops.lerp_(m, g, 1 - β1)``). Each
operation is declared here once, as an :class:`Op`: its math as a Python expression over its
tensors ``t0, t1, ...`` and scalars ``s0, s1, ...``, and optionally the native torch calls that
compute the same thing faster for one tensor (``loop``) or a whole list (``foreach``). From
this table come:

* :class:`~optimlab.core.tensorlist.LoopOps`: the native call per tensor, or the math;
* :class:`~optimlab.core.tensorlist.ForeachOps`: the ``torch._foreach_*`` call, or the loop;
* :class:`~optimlab.core.tensorlist.DifferentiableOps`: the math, out of place (autograd);
* :class:`~optimlab.core.recording.RecordingOps`: the math, written into the fused engine's
  generated kernel.

``tests/test_vocabulary.py`` runs every operation on every engine and holds them to each other.
Adding an operation is one entry here (see docs/contributing.md).

A scalar is one number for the whole list, or one per tensor (a list): bias corrections differ
per tensor when some parameters skipped steps.

Kinds: ``"elementwise"`` operations act on each element alone, so the fused engine can fuse any
sequence of them into one pass over flat buffers. ``"reduction"`` operations reduce over a
parameter's own elements (an RMS, the row and column means of a factored second moment),
``"matrix"`` ones treat a parameter as a matrix (a product, Newton–Schulz); the fused engine
runs those on batches of same-shape parameters (leading dimension: the batch), and every other
engine gives them a batch of one. Their math is written for such a batch: ``_param_dims(t)`` are
the dimensions of one parameter. ``"group"`` operations reduce over every tensor of the list
(a global norm, the sums parameter-free methods need): their math is one tensor's part, the
engines add the parts, and each tensor gets the same 0-d total; the fused engine runs a
formula with one on the foreach path (``step_info``'s ``fallback`` says so).

On sharded parameters (FSDP2's ``DTensor``, see :mod:`optimlab.core.sharding`) the formula runs on
each process's local shard. Elementwise operations need nothing more; every other operation
declares here how it reaches the whole tensor (``on_shards``):

* ``"sum"``: a reduction written as a sum of local ``partial`` results, which are all-reduced
  over the processes holding the shards and turned into the result by ``finish`` (its ``t0``
  is the summed partial, its ``s0`` the number of elements summed over the whole tensor);
* ``"gather"``: the operation needs the whole matrix (Newton–Schulz): the shards are gathered,
  every process computes the whole result and keeps its own part;
* ``"group"``: a group operation's parts of sharded tensors are sums of their local shards'
  parts, all-reduced over the processes holding the shards before the parts are added up;
* ``"reshape"`` and ``"matmul"``: reshapes and products whose shards stay local when the
  sharded dimension allows it (rows of a matrix, the batch dimensions), gathered otherwise.

An operation that declares none cannot run on shards, and says so instead of computing on one
shard as if it were the whole tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("elementwise", "reduction", "matrix", "group")


@dataclass(frozen=True)
class Op:
    """One operation of the vocabulary (see the module docstring)."""

    name: str
    math: str
    tensors: int
    scalars: tuple[str, ...] = ()
    defaults: tuple = ()  # defaults of the trailing scalars
    inplace: bool = False  # the result is written into the first tensor
    kind: str = "elementwise"
    loop: Callable | None = None  # native, one tensor (and its scalars) at a time
    foreach: Callable | None = None  # native, whole lists (scalars as given: one or a list)
    doc: str = ""
    #: keyword arguments that are part of the program, not scalars (an iteration count, a
    #: dtype): named in ``math`` by their own names, written into a generated kernel as values
    statics: tuple[str, ...] = ()
    #: how a non-elementwise operation reaches the whole tensor of sharded parameters (module
    #: docstring); elementwise ones run on the local shards as they are
    on_shards: str | None = None
    #: for ``on_shards="sum"``: the dimensions of one parameter it reduces over (negative, from
    #: the last; ``None``: all of them), its local partial sums and how they finish
    over: tuple[int, ...] | None = None
    partial: str = ""
    finish: str = ""

    @property
    def arity(self) -> int:
        return self.tensors + len(self.scalars)


def _param_dims(t: Tensor) -> tuple[int, ...]:
    """The dimensions of one parameter in a batch ``[B, *shape]``."""
    return tuple(range(1, t.dim()))


def _rms(t: Tensor) -> Tensor:
    """Root mean square of each parameter in a batch, shape ``[B, 1, ..., 1]``.

    The mean of the rows' means (rows of equal length: the same value up to rounding): a
    compiled reduction of one row at a time reads memory about twice as fast on CPU as one
    reduction to a scalar, which inductor computes as a cascade sum (Adafactor's RMS(U) on
    12 × 768 × 3072 elements: 4.7 ms against 8.3)."""
    dims = _param_dims(t)
    if not dims:
        return t.abs()
    rows = torch.mean(t * t, dim=-1, keepdim=True)
    return torch.sqrt(torch.mean(rows, dim=dims, keepdim=True) if len(dims) > 1 else rows)


def _as_matrix(t: Tensor) -> Tensor:
    """Each parameter of a batch as a matrix ``[out, rest]`` (conv weights: ``[out, in·kh·kw]``)."""
    return t.reshape(t.shape[0], t.shape[1], -1) if t.dim() > 3 else t


def _newton_schulz(g: Tensor, a: float, b: float, c: float, steps: int, eps: float, dtype):
    """Newton–Schulz orthogonalisation of each matrix of a batch ``[B, m, n]``, computed in
    ``dtype``: ``X ← X/max(‖X‖_F, eps)``, then ``steps`` times ``A = X·Xᵀ``,
    ``X ← a·X + (b·A + c·A·A)·X`` on the wide orientation (``m ≤ n``); the result has ``g``'s
    shape and ``dtype``. The quintic's coefficients (Jordan et al. 2024) push every singular
    value into about [0.7, 1.2] in five steps. A batch of one runs torch.optim.Muon's own 2-D
    ``addmm`` calls, so it rounds as torch does in bfloat16 (the batched ``baddbmm`` of larger
    batches may round one matrix differently)."""
    single = g.shape[0] == 1
    x = g.to(dtype)[0] if single else g.to(dtype)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    norm = torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True)
    x = x / torch.clamp(norm, min=eps)
    product = torch.addmm if single else torch.baddbmm
    for _ in range(steps):
        gram = x @ x.mT
        update = product(gram, gram, gram, beta=b, alpha=c)
        x = product(x, update, x, beta=a)
    x = x.mT if tall else x
    return x[None] if single else x


#: names available to an operation's math (and to the fused engine's generated kernels)
MATH_NAMESPACE = {
    "torch": torch,
    "_param_dims": _param_dims,
    "_rms": _rms,
    "_as_matrix": _as_matrix,
    "_newton_schulz": _newton_schulz,
}


def _add_foreach(xs, ys, a):
    if isinstance(a, list):  # torch's foreach add has no per-tensor alpha
        return torch._foreach_add(xs, torch._foreach_mul(ys, a))
    return torch._foreach_add(xs, ys, alpha=a)


def _add_foreach_(xs, ys, a):
    if not isinstance(a, list):
        torch._foreach_add_(xs, ys, alpha=a)
        return
    # one fused x + α·y per distinct α (Muon's per-shape lr: a few), so each element rounds
    # once, as add_(y, alpha=α) does, not twice as a multiply then an add would
    by_alpha: dict[float, list[int]] = {}
    for i, alpha in enumerate(a):
        by_alpha.setdefault(alpha, []).append(i)
    for alpha, idx in by_alpha.items():
        torch._foreach_add_([xs[i] for i in idx], [ys[i] for i in idx], alpha=alpha)


def _clamp_foreach_(xs, lo, hi):
    torch._foreach_clamp_min_(xs, lo)
    torch._foreach_clamp_max_(xs, hi)


def _value_foreach(kernel):
    """A foreach addcmul/addcdiv: torch takes one ``value=`` or a list positionally."""

    def call(xs, ys, zs, v):
        if isinstance(v, list):
            return kernel(xs, ys, zs, v)
        return kernel(xs, ys, zs, value=v)

    return call


E = "elementwise"
VOCABULARY: tuple[Op, ...] = (
    # -- new lists ---------------------------------------------------------------------------
    Op("clone", "t0.clone()", 1, loop=torch.clone, foreach=lambda xs: torch._foreach_mul(xs, 1.0)),
    Op("neg", "-t0", 1, loop=torch.neg, foreach=torch._foreach_neg),
    Op("abs", "torch.abs(t0)", 1, loop=torch.abs, foreach=torch._foreach_abs),
    Op("sign", "torch.sign(t0)", 1, loop=torch.sign, foreach=torch._foreach_sign),
    Op("sqrt", "torch.sqrt(t0)", 1, loop=torch.sqrt, foreach=torch._foreach_sqrt),
    Op("rsqrt", "torch.rsqrt(t0)", 1, loop=torch.rsqrt, foreach=torch._foreach_rsqrt),
    Op("reciprocal", "torch.reciprocal(t0)", 1, loop=torch.reciprocal,
       foreach=torch._foreach_reciprocal),
    Op("add", "t0 + t1 * s0", 2, ("alpha",), (1.0,),
       loop=lambda x, y, a: torch.add(x, y, alpha=a), foreach=_add_foreach),
    Op("mul", "t0 * s0", 1, ("s",), loop=torch.mul, foreach=torch._foreach_mul),
    Op("mul_tensors", "t0 * t1", 2, loop=torch.mul, foreach=torch._foreach_mul),
    Op("div_tensors", "t0 / t1", 2, loop=torch.div, foreach=torch._foreach_div),
    Op("addcmul", "t0 + s0 * (t1 * t2)", 3, ("value",),
       loop=lambda x, y, z, v: torch.addcmul(x, y, z, value=v),
       foreach=_value_foreach(torch._foreach_addcmul)),
    Op("lerp", "t0 + s0 * (t1 - t0)", 2, ("weight",), loop=torch.lerp,
       foreach=torch._foreach_lerp),
    Op("maximum", "torch.maximum(t0, t1)", 2, loop=torch.maximum,
       foreach=torch._foreach_maximum),
    Op("positive", "(t0 > 0).to(t0.dtype)", 1,
       doc="a mask: 1 where x > 0, else 0 (NaN gives 0)"),
    Op("clamp_min", "torch.clamp(t0, min=s0)", 1, ("lo",),
       loop=lambda x, lo: torch.clamp(x, min=lo), foreach=torch._foreach_clamp_min),
    # -- in place: the result is written into the first list ----------------------------------
    Op("copy_", "t1", 2, inplace=True, loop=Tensor.copy_, foreach=torch._foreach_copy_),
    Op("add_", "t0 + t1 * s0", 2, ("alpha",), (1.0,), inplace=True,
       loop=lambda x, y, a: x.add_(y, alpha=a), foreach=_add_foreach_),
    Op("add_scalar_", "t0 + s0", 1, ("s",), inplace=True, loop=Tensor.add_,
       foreach=torch._foreach_add_),
    Op("mul_", "t0 * s0", 1, ("s",), inplace=True, loop=Tensor.mul_,
       foreach=torch._foreach_mul_),
    Op("mul_tensors_", "t0 * t1", 2, inplace=True, loop=Tensor.mul_,
       foreach=torch._foreach_mul_),
    Op("div_", "t0 / s0", 1, ("s",), inplace=True, loop=Tensor.div_,
       foreach=torch._foreach_div_),
    Op("div_tensors_", "t0 / t1", 2, inplace=True, loop=Tensor.div_,
       foreach=torch._foreach_div_),
    Op("addcmul_", "t0 + s0 * (t1 * t2)", 3, ("value",), inplace=True,
       loop=lambda x, y, z, v: x.addcmul_(y, z, value=v),
       foreach=_value_foreach(torch._foreach_addcmul_)),
    Op("addcdiv_", "t0 + s0 * (t1 / t2)", 3, ("value",), inplace=True,
       loop=lambda x, y, z, v: x.addcdiv_(y, z, value=v),
       foreach=_value_foreach(torch._foreach_addcdiv_)),
    Op("lerp_", "t0 + s0 * (t1 - t0)", 2, ("weight",), inplace=True, loop=Tensor.lerp_,
       foreach=torch._foreach_lerp_),
    Op("sqrt_", "torch.sqrt(t0)", 1, inplace=True, loop=Tensor.sqrt_,
       foreach=torch._foreach_sqrt_),
    Op("maximum_", "torch.maximum(t0, t1)", 2, inplace=True,
       loop=lambda x, y: torch.maximum(x, y, out=x), foreach=torch._foreach_maximum_),
    Op("clamp_", "torch.clamp(t0, min=s0, max=s1)", 1, ("lo", "hi"), inplace=True,
       loop=lambda x, lo, hi: x.clamp_(min=lo, max=hi), foreach=_clamp_foreach_),
    Op("clamp_min_", "torch.clamp(t0, min=s0)", 1, ("lo",), inplace=True,
       loop=lambda x, lo: x.clamp_(min=lo), foreach=torch._foreach_clamp_min_),
    Op("clamp_max_", "torch.clamp(t0, max=s0)", 1, ("hi",), inplace=True,
       loop=lambda x, hi: x.clamp_(max=hi), foreach=torch._foreach_clamp_max_),
    # -- over a parameter's elements (batched: one value per parameter of the batch) ---------
    Op("rms", "_rms(t0)", 1, kind="reduction", on_shards="sum",
       partial="torch.sum(t0 * t0, dim=_param_dims(t0), keepdim=True)",
       finish="torch.sqrt(t0 / s0)",
       doc="√(mean(x²)) of each parameter, broadcastable against it"),
    Op("row_mean_sq", "torch.mean(t0 * t0, dim=-1, keepdim=True)", 1, kind="reduction",
       on_shards="sum", over=(-1,), partial="torch.sum(t0 * t0, dim=-1, keepdim=True)",
       finish="t0 / s0",
       doc="mean of x² over the last dimension (a factored second moment's rows)"),
    Op("col_mean_sq", "torch.mean(t0 * t0, dim=-2, keepdim=True)", 1, kind="reduction",
       on_shards="sum", over=(-2,), partial="torch.sum(t0 * t0, dim=-2, keepdim=True)",
       finish="t0 / s0",
       doc="mean of x² over the second-to-last dimension (its columns)"),
    Op("row_mean", "torch.mean(t0, dim=-2, keepdim=True)", 1, kind="reduction",
       on_shards="sum", over=(-2,), partial="torch.sum(t0, dim=-2, keepdim=True)",
       finish="t0 / s0",
       doc="mean over the second-to-last dimension (a factor's normaliser)"),
    # -- over the whole list (one 0-d total, the same for every tensor) ------------------------
    Op("group_sum", "torch.sum(t0)", 1, kind="group", on_shards="group",
       doc="Σ of every element of every tensor of the group"),
    Op("group_sum_sq", "torch.sum(t0 * t0)", 1, kind="group", on_shards="group",
       doc="Σ x² over the whole group: the squared global norm"),
    # -- matrices --------------------------------------------------------------------------------
    Op("matmul", "t0 @ t1", 2, kind="matrix", on_shards="matmul"),
    Op("newton_schulz", "_newton_schulz(t0, a, b, c, steps, eps, dtype)", 1,
       statics=("a", "b", "c", "steps", "eps", "dtype"), kind="matrix", on_shards="gather",
       doc="Newton–Schulz orthogonalisation of each matrix (see _newton_schulz)"),
    Op("as_matrix", "_as_matrix(t0)", 1, kind="matrix", on_shards="reshape",
       doc="each parameter as [out, rest] (conv weights flattened as Muon's authors do)"),
    # t0's own dtype: the add that uses it casts on the fly, as torch.optim.Muon's does, where
    # a cast here would write and read one more full-size tensor
    Op("reshape_as", "t0.reshape(t1.shape)", 2, kind="matrix", on_shards="reshape",
       doc="t0's elements in t1's shape (undoes as_matrix), in t0's dtype"),
)  # fmt: skip

BY_NAME: dict[str, Op] = {op.name: op for op in VOCABULARY}


def math_function(op: Op, field: str = "math") -> Callable:
    """The op's math as a Python function of its tensors and scalars (out of place); with
    ``field="partial"`` or ``"finish"``, its sharded form's (``finish(t0, s0)``)."""
    if field == "finish":
        return eval(f"lambda t0, s0: {op.finish}", dict(MATH_NAMESPACE))  # noqa: S307
    args = [f"t{i}" for i in range(op.tensors)] + [f"s{i}" for i in range(len(op.scalars))]
    if op.statics:
        args += ["*", *op.statics]
    body = getattr(op, field)
    return eval(f"lambda {', '.join(args)}: {body}", dict(MATH_NAMESPACE))  # noqa: S307
