"""The fused engine: one pass over memory per step, for every optimizer, from the same formula.

Two ideas make this work without a single hand-written kernel.

**Flat storage.** For each param group and each ``(device, dtype)`` the parameters, their
gradients and every elementwise state tensor live in one contiguous buffer each. Parameters stay
the same ``nn.Parameter`` objects: only their ``.data`` is re-pointed to a view of the flat
buffer, so the model, its hooks and its ``state_dict`` are unaffected. ``p.grad`` is a view of
the flat gradient buffer, so autograd accumulates straight into it; a gradient that arrives as
a new tensor (after ``model.zero_grad(set_to_none=True)``) is copied in and counted in
``fused_stats["grad_copies"]``. Per-parameter scalar state (``step``, NAdam's ``mu_product``) is
a 0-d view into a flat vector too, so a checkpoint has exactly the loop engine's keys and values.
Thousands of small tensors then cost one pass, like one big one.

**Record, then compile.** The optimizer's ``_update`` (its one formula) runs with
:class:`RecordingOps`, which writes down the sequence of tensor operations and the Python
scalars they use instead of executing them. The sequence (the *program*) depends only on the
optimizer's configuration; the scalars (lr, β, bias corrections, bounds...) change every step
and are passed to the compiled program as one tensor, so a schedule that changes lr at every
step causes no recompilation (the same trick as passing scalars as 0-d tensors). The program is
compiled once per (program, device, dtype) with ``torch.compile``: C++/OpenMP on CPU, Triton on
CUDA. Inductor fuses it into one loop that reads p, g and the state once and writes them once.

**Gradients keep torch's meaning.** ``opt.zero_grad()`` sets every ``p.grad`` to ``None``, as
torch does; a post-accumulate-grad hook on each parameter copies the gradient autograd then
makes into the parameter's slot of the flat gradient buffer and points ``p.grad`` at that view
(see :func:`attach_grad_hooks`). A parameter that gets no gradient keeps ``p.grad is None`` and
is skipped, exactly as torch.optim skips it.

A parameter that cannot be fused (complex, sparse gradient, a tensor subclass, state of another
shape) is stepped on the ``foreach`` path beside the buckets. A group falls back to that path
as a whole, counted in ``fused_stats["eager_steps"]``, for a step in which a parameter of its
buckets has no gradient, or when its state does not exist yet (SGD's momentum at the first
step). Buckets are also split by per-parameter step count (see :mod:`optimlab.core.engines`),
so parameters that skipped a step, or were unfrozen later, are fused in a bucket of their own
after one rebuild.
"""

from __future__ import annotations

import operator
import os
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from optimlab.core.tensorlist import LOOP, Scalar

#: compile the recorded programs (``False``: run them eagerly, for tests and debugging)
COMPILE = os.environ.get("OPTIMLAB_FUSED_COMPILE", "1") != "0"
#: ``engine="auto"`` fuses a group from this many elements; below it the compile time (seconds
#: on CPU) is not repaid and ``foreach`` is used.
AUTO_MIN_NUMEL = int(os.environ.get("OPTIMLAB_FUSED_MIN_NUMEL", 1_000_000))


# -- recording ----------------------------------------------------------------------------------
class Sym:
    """A placeholder for a flat tensor (an input of the program, or a value it computes)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _symbolic(xs) -> bool:
    return bool(xs) and isinstance(xs[0], Sym)


def _first(s: Scalar):
    if isinstance(s, (list, tuple)):
        if len(s) != 1:
            raise ValueError("the fused engine runs one flat tensor per list")
        return s[0]
    return s


class RecordingOps:
    """The tensor-list vocabulary of :class:`~optimlab.core.tensorlist.LoopOps`, recorded.

    Lists of :class:`Sym` are recorded; lists of real tensors (e.g. a 0-d ``mu_product``) are
    executed at once, eagerly.
    """

    name = "fused"
    static_program = True

    def __init__(self, n_inputs: int) -> None:
        self.program: list[tuple] = []
        self.values: list[float] = []
        self.size = n_inputs

    def _emit(self, op: str, tensors, scalars=(), out: bool = False):
        slots = []
        for s in scalars:
            self.values.append(float(_first(s)))
            slots.append(len(self.values) - 1)
        index = -1
        if out:
            index = self.size
            self.size += 1
        self.program.append((op, index, tuple(t[0].index for t in tensors), tuple(slots)))
        return [Sym(index)] if out else None

    def _dispatch(op: str, n_tensors: int, n_scalars: int, out: bool):  # noqa: N805
        def method(self, *args, **kwargs):
            if kwargs:  # only ``alpha=`` is ever passed by keyword
                args = (*args, *kwargs.values())
            tensors, scalars = args[:n_tensors], args[n_tensors:]
            if not _symbolic(tensors[0]):
                return getattr(LOOP, op)(*args)
            if len(scalars) < n_scalars:  # ``add``/``add_`` default alpha
                scalars = (*scalars, 1.0)
            return self._emit(op, tensors, scalars, out)

        method.__name__ = op
        return method

    clone = _dispatch("clone", 1, 0, True)
    neg = _dispatch("neg", 1, 0, True)
    copy_ = _dispatch("copy_", 2, 0, False)
    add = _dispatch("add", 2, 1, True)
    add_ = _dispatch("add_", 2, 1, False)
    add_scalar_ = _dispatch("add_scalar_", 1, 1, False)
    add_scaled_ = _dispatch("add_scaled_", 2, 1, False)
    mul = _dispatch("mul", 1, 1, True)
    mul_ = _dispatch("mul_", 1, 1, False)
    mul_tensors_ = _dispatch("mul_tensors_", 2, 0, False)
    div_ = _dispatch("div_", 1, 1, False)
    div_tensors_ = _dispatch("div_tensors_", 2, 0, False)
    addcmul = _dispatch("addcmul", 3, 1, True)
    addcmul_ = _dispatch("addcmul_", 3, 1, False)
    addcdiv_ = _dispatch("addcdiv_", 3, 1, False)
    lerp_ = _dispatch("lerp_", 2, 1, False)
    sqrt = _dispatch("sqrt", 1, 0, True)
    sqrt_ = _dispatch("sqrt_", 1, 0, False)
    abs = _dispatch("abs", 1, 0, True)
    maximum_ = _dispatch("maximum_", 2, 0, False)
    reciprocal = _dispatch("reciprocal", 1, 0, True)
    clamp_ = _dispatch("clamp_", 1, 2, False)
    del _dispatch


# -- executing ----------------------------------------------------------------------------------
# How each recorded operation reads as Python source, from its tensors ``t*`` and scalars ``s*``
# (0-d tensors). In-place results are written with ``copy_`` so the compiled graph stores
# straight into the flat input buffers.
_SOURCE = {
    "clone": "{t0}.clone()",
    "neg": "-{t0}",
    "copy_": "{t0}.copy_({t1})",
    "add": "{t0} + {t1} * {s0}",
    "add_": "{t0}.copy_({t0} + {t1} * {s0})",
    "add_scalar_": "{t0}.copy_({t0} + {s0})",
    "add_scaled_": "{t0}.copy_({t0} + {t1} * {s0})",
    "mul": "{t0} * {s0}",
    "mul_": "{t0}.copy_({t0} * {s0})",
    "mul_tensors_": "{t0}.copy_({t0} * {t1})",
    "div_": "{t0}.copy_({t0} / {s0})",
    "div_tensors_": "{t0}.copy_({t0} / {t1})",
    "addcmul": "{t0} + {s0} * ({t1} * {t2})",
    "addcmul_": "{t0}.copy_({t0} + {s0} * ({t1} * {t2}))",
    "addcdiv_": "{t0}.copy_({t0} + {s0} * ({t1} / {t2}))",
    "lerp_": "{t0}.copy_({t0} + {s0} * ({t1} - {t0}))",
    "sqrt": "torch.sqrt({t0})",
    "sqrt_": "{t0}.copy_(torch.sqrt({t0}))",
    "abs": "torch.abs({t0})",
    "maximum_": "{t0}.copy_(torch.maximum({t0}, {t1}))",
    "reciprocal": "torch.reciprocal({t0})",
    "clamp_": "{t0}.copy_(torch.minimum(torch.maximum({t0}, {s0}), {s1}))",
}


def kernel_source(program: tuple, n_inputs: int) -> str:
    """The recorded program as the source of a straight-line function ``kernel``."""
    names = ", ".join(f"t{i}" for i in range(n_inputs))
    lines = ["def kernel(inputs, scalars):", f"    {names}, = inputs"]
    for op, out, args, slots in program:
        fields = {f"t{j}": f"t{a}" for j, a in enumerate(args)}
        fields.update({f"s{j}": f"scalars[{k}]" for j, k in enumerate(slots)})
        expr = _SOURCE[op].format(**fields)
        lines.append(f"    t{out} = {expr}" if out >= 0 else f"    {expr}")
    return "\n".join(lines) + "\n"


def build_kernel(program: tuple, n_inputs: int):
    """A plain Python function running ``program`` on ``(inputs, scalars)``.

    Each program gets its own generated function (its own code object) because torch.compile
    caches compiled code per code object: one shared interpreter function would be
    "recompiled" for every optimizer configuration and hit dynamo's recompile limit.
    """
    source = kernel_source(program, n_inputs)
    namespace = {"torch": torch}
    exec(compile(source, f"<optimlab-fused-{abs(hash(program)):x}>", "exec"), namespace)
    kernel = namespace["kernel"]
    kernel.source = source
    return kernel


_KERNELS: dict[tuple, object] = {}
_VERIFIED: set = set()  # kernels that have run once (compiled successfully)


def get_kernel(key: tuple):
    """The kernel for ``key = (program, n_inputs, device, dtype, compile)``, built (and
    compiled) once per key.

    The flat length is symbolic (``dynamic=True``): buckets of every size (param groups of
    different sizes, say one per layer) share one compiled kernel. With static shapes each new
    size was a recompile, and a ninth one hit dynamo's recompile limit, a hard error under
    ``fullgraph=True``. Dynamo still specializes lengths 0 and 1, which costs at most two more
    compiles per program.
    """
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = build_kernel(*key[:2])
        if key[4]:
            if key[2] == "cpu":
                kernel = CompiledKernel(kernel)
            else:
                kernel = torch.compile(kernel, fullgraph=True, dynamic=True)
        _KERNELS[key] = kernel
    return kernel


def reset_kernels() -> None:
    """Forget every built kernel, as a new process would (inductor's disk cache still applies).
    ``torch._dynamo.reset()`` alone does not: a :class:`CompiledKernel` keeps calling the graphs
    it remembers."""
    _KERNELS.clear()
    _VERIFIED.clear()


#: call a compiled CPU kernel straight away for input signatures dynamo has already dispatched
#: (see :class:`CompiledKernel`); ``OPTIMLAB_FUSED_DIRECT=0`` sends every call through dynamo
DIRECT_CALLS = os.environ.get("OPTIMLAB_FUSED_DIRECT", "1") != "0"


class CompiledKernel:
    """One recorded program compiled with ``torch.compile``, remembering dynamo's dispatch.

    Every call of a compiled function first runs dynamo's frame hook and guards. With cold
    caches (as after a backward pass) that costs 0.15-0.2 ms on our CPUs, 5% of a step of
    8 M parameters and more than all the other Python of the step. Our kernels are only ever
    called one way: contiguous 1-D flat buffers of the key's dtype and device, made by
    ``torch.empty``, never aliasing and never requiring grad, plus one scalars vector. The
    guards can then tell two calls apart only by the lengths and by global state, of which
    grad mode and the thread count change the compiled code. So the first call of each
    *signature* (buffer length, scalars length, grad mode, threads) goes through dynamo, which
    compiles a graph or picks one; that graph and how dynamo passed it our tensors are
    remembered, and later calls with the signature call the graph directly. A new lr is a new
    value in the scalars vector, not a new signature.

    Not seen by a remembered graph: the rest of the global state dynamo guards on (autocast,
    deterministic mode, the default dtype, torch-function modes, ``torch.compiler.set_stance``).
    None of it changes an elementwise program of in-place stores. The graph comes from
    ``torch._inductor.compile_fx.compile_fx``, the function behind the ``"inductor"`` backend;
    without it (a torch that moved it), or with ``OPTIMLAB_FUSED_DIRECT=0``, every call goes
    through dynamo as usual.
    """

    def __init__(self, fn) -> None:
        self.direct: dict[tuple, tuple] = {}
        self._ran: tuple | None = None  # the graph the current dynamo call ran, and its args
        try:
            from torch._inductor.compile_fx import compile_fx
        except ImportError:  # pragma: no cover - depends on torch's internals
            self.compiled = torch.compile(fn, fullgraph=True, dynamic=True)
            return

        def backend(gm, example_inputs):
            graph = compile_fx(gm, example_inputs)

            def probe(*args):
                self._ran = (graph, args)
                return graph(*args)

            return probe

        self.compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend=backend)

    def __call__(self, inputs: list[Tensor], scalars: Tensor):
        signature = (
            inputs[0].shape[0],
            scalars.shape[0],
            torch.is_grad_enabled(),
            torch.get_num_threads(),
        )
        direct = self.direct.get(signature) if DIRECT_CALLS else None
        if direct is not None:
            graph, plan = direct
            ours = (*inputs, scalars)
            return graph(*[ours[v] if is_ours else v for is_ours, v in plan])
        self._ran = None
        try:
            out = self.compiled(inputs, scalars)
            if DIRECT_CALLS and self._ran is not None:
                graph, args = self._ran
                plan = _argument_plan(args, (*inputs, scalars))
                if plan is not None:
                    self.direct[signature] = (graph, plan)
        finally:
            self._ran = None  # holds the flat buffers: a rebuild must be able to free them
        return out


def _argument_plan(args, ours) -> tuple | None:
    """How to rebuild ``args`` (what dynamo passed a graph) from ``ours``: each tensor by its
    position in ``ours``, each size as the constant it is for this signature; ``None`` if an
    argument is neither (then every call goes through dynamo)."""
    plan = []
    for a in args:
        if isinstance(a, Tensor):
            found = [j for j, t in enumerate(ours) if t is a]
            if len(found) != 1:
                return None
            plan.append((True, found[0]))
        elif type(a) is int:
            plan.append((False, a))
        else:
            return None
    return tuple(plan)


def _is_compile_error(error: Exception) -> bool:
    """Whether ``error`` was raised while compiling, before the program touched a tensor."""
    from torch._dynamo import exc

    names = ("BackendCompilerFailed", "FailOnRecompileLimitHit", "Unsupported")
    return isinstance(error, tuple(getattr(exc, n) for n in names if hasattr(exc, n)))


# -- flat storage -------------------------------------------------------------------------------
@dataclass
class FlatBucket:
    """The flat buffers of the parameters of one group that share a device and dtype."""

    params: list[Tensor]
    flat_param: Tensor
    flat_grad: Tensor  # the gradients of ``grad_params``, in their order
    grad_params: list[Tensor]  # parameters whose gradients live in ``flat_grad``
    grad_views: list[Tensor]  # their views of it
    state: dict[str, Tensor]  # elementwise state, one flat buffer per key
    scalars: dict[str, Tensor]  # 0-d per-parameter state (step, mu_product), one vector per key
    first: dict[str, Tensor]  # each scalar vector's element 0, as a 0-d view
    ptrs: list[int] = field(default_factory=list)
    #: the flat parameter buffer's storage (its address) and how many tensors used it when the
    #: parameters were last checked one by one (-1: not yet)
    storage: int = 0
    aliases: int = -1
    cursor: int = 0  # where the rotating address check goes on
    #: each gradient view's use count at the last one-by-one check (None: check one by one)
    grad_counts: list[int] | None = None
    grad_cursor: int = 0
    #: the program's scalars, refilled at every step (CPU; see :func:`pack_scalars`)
    scalar_buffer: Tensor | None = None
    #: handles of the post-accumulate-grad hooks that route gradients into ``grad_views``
    hooks: list = field(default_factory=list)
    #: parameters whose gradient is used where autograd made it (see :func:`build_bucket`)
    direct: list[Tensor] = field(default_factory=list)
    #: the bucket as torch's fused kernels see it: (param, grad or None for a direct
    #: parameter, {state key: tensor}) per contiguous run of routed parameters or direct one
    runs: list[tuple] = field(default_factory=list)


def _move_into_flat(n: int, like: Tensor, offsets: list[int], numels: list[int], get, put):
    """Copy tensor ``i = get(i)`` into slot ``i`` of a new flat buffer and ``put(i, view)`` it
    back, one tensor at a time. Rebinding each tensor as soon as it is copied lets its old
    storage go at once, so building the buffers needs about one tensor of extra memory, not a
    second copy of the group (on CPU the new buffer's pages are committed as they are written).
    """
    flat = torch.empty(n, dtype=like.dtype, device=like.device)
    for i, (o, k) in enumerate(zip(offsets, numels)):
        view = flat[o : o + k]
        source = get(i)
        if source is None:
            view.zero_()
        else:
            view.copy_(source.reshape(-1))
        put(i, view)
        del source
    return flat


#: with torch's fused kernels, a parameter from this many elements keeps the gradient autograd
#: made instead of having it copied into the flat buffer (see :func:`build_bucket`)
DIRECT_GRAD_MIN_NUMEL = int(os.environ.get("OPTIMLAB_FUSED_DIRECT_GRAD_NUMEL", 1 << 17))


def _offsets(params: list[Tensor]) -> tuple[list[int], list[int], int]:
    offsets, numels, offset = [], [], 0
    for p in params:
        offsets.append(offset)
        numels.append(p.numel())
        offset += p.numel()
    return offsets, numels, offset


def build_bucket(
    params: list[Tensor], states: list[dict], keys: tuple[str, ...], *, direct_grads: bool = False
) -> FlatBucket:
    """Move ``params``, their grads and state into flat buffers; re-point everything to views.

    ``direct_grads`` (the bucket is stepped by one of torch's fused kernels, which take lists
    of tensors): parameters of :data:`DIRECT_GRAD_MIN_NUMEL` elements or more get no slot in
    the flat gradient buffer. Their gradients are used where autograd made them, which saves
    copying them (8 B per fp32 element at every backward); the kernel then sees one tensor per
    such parameter, and one per run of the others, whose gradients are copied in, cheaply,
    while they are small and still in cache. Compiled kernels need every gradient in the flat
    buffer.
    """
    direct = [p for p in params if direct_grads and p.numel() >= DIRECT_GRAD_MIN_NUMEL]
    is_direct = {id(p) for p in direct}
    routed = [p for p in params if id(p) not in is_direct]
    offsets, numels, size = _offsets(params)
    goffsets, gnumels, gsize = _offsets(routed)
    like = params[0]
    grad_views: list[Tensor] = [None] * len(routed)  # type: ignore[list-item]

    def set_param(i, view):
        params[i].data = view.view_as(params[i])

    def set_grad(i, view):
        grad_views[i] = view.view_as(routed[i])
        routed[i].grad = grad_views[i]

    with torch.no_grad():
        flat_param = _move_into_flat(
            size, like, offsets, numels, lambda i: params[i].detach(), set_param
        )
        flat_grad = _move_into_flat(
            gsize, like, goffsets, gnumels, lambda i: routed[i].grad, set_grad
        )
        state = {}
        for key in keys:

            def set_state(i, view, key=key):
                states[i][key] = view.view_as(params[i])

            state[key] = _move_into_flat(
                size, like, offsets, numels, lambda i, key=key: states[i][key], set_state
            )
    scalars = {}
    for key, value in states[0].items():
        if key not in keys and torch.is_tensor(value) and value.dim() == 0:
            vec = torch.stack([s[key] for s in states])
            for i, s in enumerate(states):
                s[key] = vec[i]
            scalars[key] = vec
    bucket = FlatBucket(
        params=list(params),
        flat_param=flat_param,
        flat_grad=flat_grad,
        grad_params=routed,
        grad_views=grad_views,
        state=state,
        scalars=scalars,
        first={key: vec[0] for key, vec in scalars.items()},
        ptrs=[p.data_ptr() for p in params],
        storage=flat_param.untyped_storage()._cdata,
        direct=direct,
        runs=_runs(params, is_direct, offsets, flat_param, flat_grad, state) if direct else [],
    )
    attach_grad_hooks(bucket)
    return bucket


def _runs(params, is_direct, offsets, flat_param, flat_grad, state) -> list[tuple]:
    """Contiguous runs of routed parameters, and direct parameters one by one, as 1-D views:
    ``(param, grad or None, {key: state})`` (see :attr:`FlatBucket.runs`)."""
    runs = []
    start = g_start = g_at = 0
    bounds = [*offsets, flat_param.numel()]
    for i, p in enumerate(params):
        if id(p) not in is_direct:
            g_at += p.numel()
            continue
        a, b = bounds[i], bounds[i + 1]
        if a > start:  # the routed run before this parameter
            runs.append(_run(flat_param, flat_grad[g_start:g_at], state, start, a))
        runs.append(_run(flat_param, None, state, a, b))
        start, g_start = b, g_at
    if flat_param.numel() > start:
        runs.append(_run(flat_param, flat_grad[g_start:g_at], state, start, flat_param.numel()))
    return runs


def _run(flat_param, grad, state, a: int, b: int) -> tuple:
    return flat_param[a:b], grad, {key: buf[a:b] for key, buf in state.items()}


def torch_kernel_lists(bucket: FlatBucket) -> tuple[list[Tensor], list[Tensor], dict]:
    """The bucket's parameters, gradients and state as lists for one of torch's fused
    kernels: the flat buffers whole, or the runs with each direct parameter's own gradient."""
    if not bucket.runs:
        return [bucket.flat_param], [bucket.flat_grad], {k: [v] for k, v in bucket.state.items()}
    direct = iter(bucket.direct)
    params, grads = [], []
    state: dict[str, list[Tensor]] = {key: [] for key in bucket.state}
    for param, grad, run_state in bucket.runs:
        params.append(param)
        if grad is None:
            g = next(direct).grad
            grad = g.reshape(-1) if g.is_contiguous() else g.contiguous().reshape(-1)
        grads.append(grad)
        for key, value in run_state.items():
            state[key].append(value)
    return params, grads, state


#: parameter types whose ``.data`` can be re-pointed to a view of a plain flat buffer; tensor
#: subclasses (FSDP2's DTensor, quantized wrappers...) keep their own storage and run eagerly.
PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def unfusable_reason(p: Tensor, state: dict, keys: tuple[str, ...]) -> str | None:
    """Why ``p`` cannot live in flat buffers (``None`` if it can): it must be a plain real dense
    floating-point leaf whose gradient is dense and whose state ``keys`` all exist with its own
    shape and dtype."""
    if type(p) not in PLAIN_TYPES:
        return f"tensor subclass {type(p).__name__}"
    if p.is_complex():
        return "complex parameter"
    if p.is_sparse or not p.dtype.is_floating_point:
        return "sparse or non-floating-point parameter"
    if p.grad is not None and p.grad.is_sparse:
        return "sparse gradient"
    for key in keys:
        value = state.get(key)
        if not torch.is_tensor(value):
            return f"state {key!r} not created yet"
        if value.shape != p.shape or value.dtype != p.dtype or value.device != p.device:
            return f"state {key!r} of another shape, dtype or device"
    return None


SYNC_OK, SYNC_NONE, SYNC_MOVED = 0, 1, 2
_data_ptr = Tensor.data_ptr
_grad_of = operator.attrgetter("grad")
_use_count = getattr(torch._C, "_storage_Use_Count", None)


#: parameters whose address :func:`params_in_place` compares at every step, in rotation
ADDRESS_SAMPLE = 64


def params_in_place(bucket: FlatBucket) -> bool:
    """Whether every parameter still lives in its slot of the flat buffer.

    Comparing ``p.data_ptr()`` of thousands of parameters costs a cache miss or two each, at
    every step. A parameter re-pointed elsewhere (``p.data = t``, ``model.half()``) drops its
    reference to the flat storage, so the storage's use count is checked instead, together with
    the addresses of :data:`ADDRESS_SAMPLE` parameters in rotation. When the count changed
    (someone re-pointed a parameter, or made or freed a view of one) every address is compared
    and the new count remembered. A parameter re-pointed in the same step as an unrelated view
    of the buffer is made leaves the count as it was; the rotation finds it within
    ``len(params) / ADDRESS_SAMPLE`` steps (see docs/engines.md).
    """
    params, ptrs = bucket.params, bucket.ptrs
    count = _use_count(bucket.storage) if _use_count is not None else -1
    if count == bucket.aliases >= 0:
        i = bucket.cursor
        j = i + ADDRESS_SAMPLE
        bucket.cursor = j if j < len(params) else 0
        return list(map(_data_ptr, params[i:j])) == ptrs[i:j]
    if list(map(_data_ptr, params)) != ptrs:
        return False
    bucket.aliases = count
    return True


#: gradients whose identity :func:`grads_in_place` checks at every step, in rotation
GRAD_SAMPLE = 64
_tensor_use_count = getattr(Tensor, "_use_count", None)
_USE_COUNT_WORKS: bool | None = None


def _use_counts_track_grads() -> bool:
    """Whether a tensor's use count drops by one when it stops being some ``p.grad``; checked
    once per process, so a torch that counts differently only loses the shortcut."""
    global _USE_COUNT_WORKS
    if _USE_COUNT_WORKS is None:
        try:
            p = torch.zeros(1, requires_grad=True)
            view = torch.zeros(2)[:1]
            p.grad = view
            attached = _tensor_use_count(view)
            p.grad = None
            _USE_COUNT_WORKS = attached == _tensor_use_count(view) + 1
        except Exception:  # noqa: BLE001 - no or different _use_count: use identity checks
            _USE_COUNT_WORKS = False
    return _USE_COUNT_WORKS


def grads_in_place(bucket: FlatBucket) -> bool:
    """Whether every ``p.grad`` of the bucket is still its view of the flat gradient buffer.

    Reading ``p.grad`` of thousands of parameters costs several cache misses each (parameter,
    its autograd data, the gradient). The views themselves were allocated together, and each
    is referenced once more while it is some ``p.grad``: a gradient set to ``None`` or replaced
    lowers its view's use count. So each step compares the views' use counts with those of
    the last one-by-one check, plus the identity of :data:`GRAD_SAMPLE` gradients in rotation;
    any difference means one ``p.grad is view`` check per parameter, which also takes the new
    counts. What the counts cannot see is a view that stops being ``p.grad`` while other C++
    code takes a reference to that same tensor in the same step (say ``q.grad = p.grad`` then
    ``p.grad = None``); the rotation finds that within ``len(params) / GRAD_SAMPLE`` steps.
    """
    params, views = bucket.grad_params, bucket.grad_views
    counts = bucket.grad_counts
    if counts is not None and list(map(_tensor_use_count, views)) == counts:
        i = bucket.grad_cursor
        j = i + GRAD_SAMPLE
        bucket.grad_cursor = j if j < len(params) else 0
        if all(map(operator.is_, map(_grad_of, params[i:j]), views[i:j])):
            return True
    if not all(map(operator.is_, map(_grad_of, params), views)):
        bucket.grad_counts = None
        return False
    if _tensor_use_count is not None and _use_counts_track_grads():
        bucket.grad_counts = list(map(_tensor_use_count, views))
    return True


def sync_grads(bucket: FlatBucket, stats: dict) -> int:
    """Make every ``p.grad`` the flat view again, copying in gradients that arrived elsewhere."""
    if not params_in_place(bucket):
        return SYNC_MOVED
    for p in bucket.direct:
        g = p.grad
        if g is None or g.is_sparse or g.dtype != p.dtype or g.shape != p.shape:
            return SYNC_NONE
    if grads_in_place(bucket):
        return SYNC_OK
    for p, view in zip(bucket.grad_params, bucket.grad_views):
        g = p.grad
        if g is None or g.is_sparse:
            return SYNC_NONE
        if g is not view:
            view.copy_(g)
            p.grad = view
            stats["grad_copies"] += 1
    return SYNC_OK


def attach_grad_hooks(bucket: FlatBucket) -> None:
    """Route every gradient autograd makes for a bucket parameter into its flat view.

    After ``opt.zero_grad()`` a parameter's ``.grad`` is ``None``, as in torch; the next
    backward makes a new gradient tensor, and this parameter's post-accumulate-grad hook copies
    it into the parameter's slot of the flat gradient buffer and points ``p.grad`` at that view.
    Later backward passes (gradient accumulation) then add into the view in place. The copy
    happens while the new gradient is still in cache, and costs 8 bytes per fp32 element, less
    than keeping zeroed views for autograd to add into (a zeroing pass, then a read and a write).
    A parameter that gets no gradient keeps ``p.grad is None``. A gradient made with
    ``create_graph=True`` (it has a graph of its own), a sparse one, or one of another dtype is
    left where autograd put it; :func:`sync_grads` sees it at the step.

    The hooks hold the bucket's views, not the optimizer, so they never keep an optimizer
    alive; they are removed when the bucket is released (:func:`release_bucket`).
    """
    for p, view in zip(bucket.grad_params, bucket.grad_views):

        def route(param: Tensor, view: Tensor = view) -> None:
            grad = param.grad
            if grad is view or grad is None:
                return  # accumulated in place, or nothing arrived
            if grad.is_sparse or grad.dtype != view.dtype or torch.is_grad_enabled():
                return  # left for sync_grads (create_graph=True backward: grad mode is on)
            view.copy_(grad)
            param.grad = view

        bucket.hooks.append(p.register_post_accumulate_grad_hook(route))


def release_bucket(bucket: FlatBucket) -> None:
    """Remove the bucket's gradient hooks (the bucket is being dropped or rebuilt)."""
    for handle in bucket.hooks:
        handle.remove()
    bucket.hooks.clear()


def zero_grad_(params: list[Tensor], set_to_none: bool) -> None:
    """torch's ``zero_grad`` for ``params``: ``.grad`` becomes ``None``, or existing gradients
    are zeroed in place (``None`` stays ``None``)."""
    for p in params:
        g = p.grad
        if g is None:
            continue
        if set_to_none:
            p.grad = None
            continue
        if g.grad_fn is not None:
            g.detach_()
        else:
            g.requires_grad_(False)
        g.zero_()


def zero_bucket_grads(bucket: FlatBucket, set_to_none: bool) -> None:
    """:func:`zero_grad_` for a bucket. With ``set_to_none`` the views stay with the bucket and
    its hooks route the next gradients back into them; otherwise, when every gradient is its
    view, one pass zeroes the flat buffer."""
    zero_grad_(bucket.direct, set_to_none)
    if not set_to_none and grads_in_place(bucket):
        bucket.flat_grad.zero_()
        return
    zero_grad_(bucket.grad_params, set_to_none)


def pack_scalars(bucket: FlatBucket, values: list[float], dtype: torch.dtype) -> Tensor:
    """The program's scalars as one vector on the bucket's device.

    On CPU the bucket's vector is refilled through a NumPy view of it, which costs a third of
    building a new tensor from a list (cold caches: 9 µs against 30). The kernel runs
    synchronously, so the vector is free again when the step ends. Elsewhere a new vector is
    copied to the device at every step, so a copy in flight never sees the next step's values.
    """
    device = bucket.flat_param.device
    if device.type != "cpu":
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)
    buffer = bucket.scalar_buffer
    if buffer is None or buffer.shape[0] != len(values) or buffer.dtype != dtype:
        buffer = bucket.scalar_buffer = torch.empty(len(values), dtype=dtype)
    buffer.numpy()[:] = values
    return buffer


def count_step(bucket: FlatBucket) -> float:
    """Add one to every parameter's step count in the bucket; the new count (all are equal)."""
    steps = bucket.scalars["step"]
    if steps.device.type == "cpu":
        # a NumPy view skips torch's dispatcher: 15 µs against 45 for ``add_`` and ``item``
        counts = steps.numpy()
        counts += 1.0
        return float(counts[0])
    steps.add_(1.0)
    return steps[0].item()


def torch_kernel_applies(opt, group: dict, like: Tensor) -> bool:
    """Whether one of torch's fused kernels computes ``group``'s formula exactly for tensors
    like ``like``: on CPU (on CUDA they want the step counts on the device; the compiled path
    serves there), fp32/fp64 (torch's bf16 SGD kernel rounds more often), torch's values of
    every switch (the optimizer's ``_torch_kernel_applies``)."""
    return (
        like.device.type == "cpu"
        and like.dtype in (torch.float32, torch.float64)
        and opt._torch_kernel_applies(group)
    )


def run_fused(
    opt, group: dict, bucket: FlatBucket, keys: tuple[str, ...], info: dict, stats: dict
) -> None:
    """One fused step of ``opt``'s formula over ``bucket``."""
    first = dict(bucket.first)  # _update may rebind entries; the views stay
    steps = [count_step(bucket)] if opt.counts_steps else None
    flat = bucket.flat_param
    if torch_kernel_applies(opt, group, flat):
        params, grads, state = torch_kernel_lists(bucket)
        opt._torch_fused(group, params, grads, state, first.get("step"))
        stats["torch_fused_steps"] += 1
        return
    if bucket.direct:  # pragma: no cover - guarded by the caller (the group is rebuilt)
        raise RuntimeError("a bucket with direct gradients needs one of torch's fused kernels")
    n_inputs = 2 + len(keys)  # param, grad, then the state buffers in ``keys`` order
    rec = RecordingOps(n_inputs)
    state = {key: [Sym(2 + j)] for j, key in enumerate(keys)}
    opt._update(rec, group, [Sym(0)], [Sym(1)], state, steps, [first], info)
    for key, vec in bucket.scalars.items():
        if key != "step":  # other scalar state was updated on element 0 only
            vec.fill_(first[key].item())
    # bf16/fp16 parameters compute their scalars in fp32 (the kernel upcasts anyway).
    sdtype = flat.dtype if flat.dtype in (torch.float32, torch.float64) else torch.float32
    scalars = pack_scalars(bucket, rec.values, sdtype)
    inputs = [flat, bucket.flat_grad, *(bucket.state[k] for k in keys)]
    compile_ = COMPILE
    key = (tuple(rec.program), n_inputs, str(flat.device), flat.dtype, compile_)
    kernel = get_kernel(key)
    started = time.perf_counter()
    try:
        kernel(inputs, scalars)
    except Exception as error:  # noqa: BLE001 - any compiler failure falls back, loudly
        verified = kernel in _VERIFIED
        if not compile_ or (verified and not _is_compile_error(error)):
            raise
        # The first call compiles; without a working toolchain (no C++ compiler, no Triton) the
        # same program still runs eagerly, one pass per operation, and the step is not lost. A
        # kernel that has worked before and fails to compile for a new bucket (a recompile)
        # stays compiled for the buckets it serves.
        warnings.warn(
            f"optimlab fused engine: torch.compile failed ({type(error).__name__}: {error}); "
            "running the recorded program eagerly instead",
            RuntimeWarning,
            stacklevel=4,
        )
        stats["compile_failures"] = stats.get("compile_failures", 0) + 1
        kernel = get_kernel((*key[:4], False))  # the same program, eagerly
        if not verified:
            _KERNELS[key] = kernel
        kernel(inputs, scalars)
    _VERIFIED.add(kernel)
    if stats.get("compile_seconds") is None and compile_:
        if flat.device.type == "cuda":
            torch.cuda.synchronize(flat.device)
        stats["compile_seconds"] = time.perf_counter() - started
    stats["fused_steps"] += 1
