"""Flat storage: the fused engine's buffers, and the gradients routed into them.

For each param group and each ``(device, dtype)`` (and scalar state, see
:mod:`optimlab.core.engines`) the parameters, their gradients and every elementwise state
tensor live in one contiguous buffer each. Parameters stay the same ``nn.Parameter`` objects:
only their ``.data`` is re-pointed to a view of the flat buffer, so the model, its hooks and its
``state_dict`` are unaffected. Per-parameter scalar state (``step``, NAdam's ``mu_product``) is
a 0-d view into a flat vector too, so a checkpoint has exactly the loop engine's keys and values.
Thousands of small tensors then cost one pass, like one big one.

**Gradients keep torch's meaning.** ``opt.zero_grad()`` sets every ``p.grad`` to ``None``, as
torch does; a post-accumulate-grad hook on each parameter copies the gradient autograd then
makes into the parameter's slot of the flat gradient buffer and points ``p.grad`` at that view
(see :func:`attach_grad_hooks`). A parameter that gets no gradient keeps ``p.grad is None`` and
is skipped, exactly as torch.optim skips it. Under torch's fused kernels large gradients stay
where autograd made them (:func:`build_bucket`).
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary


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
    #: a batch of same-shape parameters (for formulas that reduce over a parameter or treat it
    #: as a matrix): the parameters' shape, and each state tensor's; ``None``: a flat bucket
    shape: tuple[int, ...] | None = None
    state_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def kernel_inputs(self, keys: tuple[str, ...]) -> list[Tensor]:
        """The kernel's tensors: parameters, gradients, then the state in ``keys`` order; flat
        1-D buffers, or ``[B, *shape]`` views of them for a batch."""
        tensors = [self.flat_param, self.flat_grad, *(self.state[k] for k in keys)]
        if self.shape is None:
            return tensors
        n = len(self.params)
        shapes = [self.shape, self.shape, *(self.state_shapes[k] for k in keys)]
        return [t.view(n, *shape) for t, shape in zip(tensors, shapes)]

    # What the fused engine asks of every kind of bucket (see also
    # :class:`optimlab.core.shard_buckets.ShardBucket`).
    @property
    def like(self) -> Tensor:
        """A tensor with the device and dtype the bucket's kernels run in."""
        return self.flat_param

    def kernel_calls(self, keys: tuple[str, ...]) -> list[list[Tensor]]:
        """The inputs of each kernel call of one step: one call over the flat buffers."""
        return [self.kernel_inputs(keys)]

    def torch_lists(self) -> tuple[list[Tensor], list[Tensor], dict]:
        return torch_kernel_lists(self)

    def sync(self, stats: dict) -> int:
        return sync_grads(self, stats)

    def zero_grad(self, set_to_none: bool) -> None:
        zero_bucket_grads(self, set_to_none)

    def release(self) -> None:
        release_bucket(self)


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
    params: list[Tensor],
    states: list[dict],
    keys: tuple[str, ...],
    *,
    direct_grads: bool = False,
    batched: bool = False,
) -> FlatBucket:
    """Move ``params``, their grads and state into flat buffers; re-point everything to views.

    ``direct_grads`` (the bucket is stepped by one of torch's fused kernels, which take lists
    of tensors): parameters of :data:`DIRECT_GRAD_MIN_NUMEL` elements or more get no slot in
    the flat gradient buffer. Their gradients are used where autograd made them, which saves
    copying them (8 B per fp32 element at every backward); the kernel then sees one tensor per
    such parameter, and one per run of the others, whose gradients are copied in, cheaply,
    while they are small and still in cache. Compiled kernels need every gradient in the flat
    buffer.

    ``batched``: the parameters share one shape and the kernel sees ``[B, *shape]`` views;
    state tensors may then have shapes of their own (a factored second moment's rows).
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
        _VIEWS[params[i]] = view.data_ptr()

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
        state_shapes = {}
        for key in keys:
            shapes = [tuple(state[key].shape) for state in states]
            shape = state_shapes[key] = shapes[0]

            def set_state(i, view, key=key, shapes=shapes):
                states[i][key] = view.view(shapes[i])

            where, sizes, total = offsets, numels, size
            if batched:  # every parameter's state of this key has this shape
                k, n = math.prod(shape), len(params)
                where, sizes, total = [i * k for i in range(n)], [k] * n, k * n
            state[key] = _move_into_flat(
                total, like, where, sizes, lambda i, key=key: states[i][key], set_state
            )
    scalars = stack_scalars(states, keys)
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
        shape=tuple(params[0].shape) if batched else None,
        state_shapes=state_shapes,
    )
    attach_grad_hooks(bucket)
    return bucket


def stack_scalars(states: list[dict], keys: tuple[str, ...]) -> dict[str, Tensor]:
    """Per-parameter 0-d state (``step``, NAdam's ``mu_product``) as one vector per key, each
    parameter's entry re-pointed to a 0-d view of it: one update serves a whole bucket, and a
    checkpoint still has one 0-d tensor per parameter."""
    scalars = {}
    for key, value in states[0].items():
        if key not in keys and type(value) in PLAIN_TYPES and value.dim() == 0:
            vec = torch.stack([s[key] for s in states])
            for i, s in enumerate(states):
                s[key] = vec[i]
            scalars[key] = vec
    return scalars


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
#: subclasses (FSDP2's DTensor, quantized wrappers...) keep their own storage (FSDP2's sharded
#: parameters are stepped on their local shards, see :mod:`optimlab.core.shard_buckets`).
PLAIN_TYPES = (Tensor, torch.nn.Parameter)

#: each parameter the fused engine has re-pointed into one of its flat buffers, with the address
#: it gave it: a parameter that is a view of some other buffer is not the engine's to move
_VIEWS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def owns_storage(t: Tensor) -> bool:
    """Whether ``t`` is the only tensor its storage was made for (not a view of a larger one)."""
    return t.untyped_storage().nbytes() <= t.numel() * t.element_size()


def is_engine_view(p: Tensor) -> bool:
    """Whether ``p`` lives in a flat buffer the fused engine made for it."""
    return _VIEWS.get(p) == p.data_ptr()


_ALONE: int | None = None
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _shared(t: Tensor) -> bool:
    """Whether another tensor uses ``t``'s storage (its use count is above that of a tensor
    alone, measured once per process); ``False`` where torch does not expose the count."""
    global _ALONE
    count = _use_count
    if count is None:
        return False

    def uses(tensor: Tensor) -> int:
        storage = tensor.untyped_storage()  # held while it is counted, as for the probe
        return count(storage._cdata)

    if _ALONE is None:
        probe = torch.empty(1)
        _ALONE = uses(probe)
    return uses(t) > _ALONE


def foreign_view(p: Tensor) -> bool:
    """Whether ``p``'s memory belongs to someone else too: it is a view of a larger buffer, or
    another tensor shares its storage (``ZeroRedundancyOptimizer``'s buckets with
    ``parameters_as_bucket_view=True``, FSDP1's flat parameters, tensors loaded with
    ``mmap=True`` and assigned). Moving it into a flat buffer of ours would leave that owner
    reading (and broadcasting) stale values."""
    if p.numel() == 0 or is_engine_view(p):
        return False
    return not owns_storage(p) or _shared(p)


def unfusable_reason(
    p: Tensor, state: dict, keys: tuple[str, ...], shapes: dict | None = None
) -> str | None:
    """Why ``p`` cannot live in flat buffers (``None`` if it can): it must be a plain real dense
    floating-point leaf whose gradient is dense and whose state ``keys`` all exist with its
    dtype and device, and the shape ``shapes`` gives (default: the parameter's)."""
    if type(p) not in PLAIN_TYPES:
        return f"tensor subclass {type(p).__name__}"
    if foreign_view(p):
        return "its memory is shared with a buffer the optimizer does not own (read there)"
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
        shape = p.shape if shapes is None else shapes[key]
        if value.shape != shape or value.dtype != p.dtype or value.device != p.device:
            return f"state {key!r} of another shape, dtype or device"
    return None


SYNC_OK, SYNC_NONE, SYNC_MOVED = 0, 1, 2
_data_ptr = Tensor.data_ptr
_grad_of = operator.attrgetter("grad")


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
