"""Engines: how one optimizer formula is executed over a param group.

``loop`` and ``foreach`` run the optimizer's ``_update`` eagerly with
:data:`~optimlab.core.tensorlist.LOOP` or :data:`~optimlab.core.tensorlist.FOREACH` ops.
``fused`` runs the same ``_update`` once per step over flat contiguous buffers, compiled
(see :mod:`optimlab.core.fused`). ``auto`` picks the best engine that applies.

The optimizer is duck-typed here (the core never imports :mod:`optimlab.optim`): it provides
``_counts_steps(group)``, ``_state_keys(group)``, ``_init_state(group, p, state)``, ``state``,
``_flat``, ``_numel_cache``, ``fused_stats`` and
``_update(StepInputs)``; see :mod:`optimlab.core.state`.
"""

from __future__ import annotations

import operator
from itertools import repeat

import torch
from torch import Tensor

from optimlab.core import flat as storage
from optimlab.core import fused, shard_buckets, sharding
from optimlab.core.recording import RecordingOps, Sym
from optimlab.core.state import StepInputs
from optimlab.core.tensorlist import (
    FOREACH,
    LOOP,
    CapturableOps,
    DifferentiableOps,
    group_by_device_and_dtype,
)

ENGINES = ("auto", "loop", "foreach", "fused")
_grad_of = operator.attrgetter("grad")


def resolve_engine(name: str, numel: int = 0, device: torch.device | None = None) -> str:
    """The concrete engine ``name`` stands for, for a group of ``numel`` elements on ``device``.

    ``auto`` fuses on CUDA, and on CPU once the group is large enough to repay the compile
    (:data:`optimlab.core.fused.AUTO_MIN_NUMEL`); otherwise it uses ``foreach``.
    """
    if name != "auto":
        return name
    if device is not None and device.type == "cuda":
        return "fused"
    if device is not None and device.type != "cpu":
        return "foreach"  # other backends (mps, xpu...) are not tested with the fused engine
    return "fused" if numel >= fused.AUTO_MIN_NUMEL else "foreach"


def as_real(t: Tensor | None) -> Tensor | None:
    """Complex tensors are optimized as pairs of reals, exactly as torch.optim does."""
    if t is not None and torch.is_complex(t):
        return torch.view_as_real(t)
    return t


def run_step(
    opt,
    group: dict,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict],
    info: dict,
    engine: str,
) -> None:
    """Advance step counters and apply ``opt._update`` to ``params`` of one group, eagerly.

    ``engine="loop"`` steps one tensor at a time, anything else through ``torch._foreach_*``
    per (device, dtype). Sparse gradients always take the loop (the foreach kernels, like
    torch's, have no sparse form).
    """
    capturable = bool(group.get("capturable"))  # the caller chose the loop engine for it
    recording = torch.is_grad_enabled()  # differentiable=True: autograd records the step
    if engine != "loop" and any(g.is_sparse for g in grads):
        engine = "loop"
        info["sparse_gradients"] = "loop engine"
    if engine == "loop":
        ops, buckets = LOOP, [list(range(len(params)))]
    else:
        ops, buckets = FOREACH, list(group_by_device_and_dtype(params).values())
    sharded = sharding.any_dtensor(params)
    if sharded and (recording or capturable):
        switch = "capturable" if capturable else "differentiable"
        raise NotImplementedError(
            f"{switch}=True with DTensor parameters: optimlab steps sharded parameters on "
            f"their local shards, outside autograd and CUDA graphs; use {switch}=False"
        )
    keys = opt._state_keys(group)
    for idx in buckets:
        raw = [states[i] for i in idx]
        if sharded:  # the formula runs on local shards (see optimlab.core.sharding)
            ops = sharding.ShardedOps(FOREACH if engine != "loop" else LOOP)
            p = [ops.enter(params[i], params[i], "parameter") for i in idx]
            g = [ops.enter(grads[i], params[i], "gradient") for i in idx]
            state = {
                k: [ops.enter(s.get(k), params[i], f"state {k!r}") for i, s in zip(idx, raw)]
                for k in keys
            }
        else:
            p = [as_real(params[i]) for i in idx]
            g = [as_real(grads[i]) for i in idx]
            state = {k: [as_real(s.get(k)) for s in raw] for k in keys}
        if capturable:
            _scalars_to_device(raw, p)
        if recording:  # the math, with in-place writes to what the step keeps
            kept = [*p, *(t for ts in state.values() for t in ts if t is not None)]
            kept += [t for s in raw for t in s.values() if torch.is_tensor(t)]
            ops = DifferentiableOps({id(t) for t in kept})
        elif capturable:
            ops = CapturableOps()
        fresh = {k: [i for i, t in enumerate(state[k]) if t is None] for k in keys}
        steps = None
        if opt._counts_steps(group):
            counters = [s["step"] for s in raw]
            ops.add_scalar_(counters, 1.0)
            # capturable: the counts stay tensors on the device, and so does every scalar the
            # formula makes from them
            steps = counters if capturable else [c.item() for c in counters]
        # the parameters' own shapes (a sharded parameter's whole shape), as the formula sees
        # them: a complex parameter as pairs of reals
        shapes = [_real_shape(params[i]) for i in idx]
        dtypes = [t.dtype for t in p]
        opt._update(StepInputs(ops, group, p, g, state, steps, raw, info, shapes, dtypes))
        # Buffers an optimizer creates lazily (SGD's momentum) are stored back with the
        # parameter's own dtype, complex included, and sharded like it.
        for k, positions in fresh.items():
            for i in positions:
                t = state[k][i]
                if t is None:
                    continue
                param = params[idx[i]]
                if param.is_complex():
                    t = torch.view_as_complex(t)
                raw[i][k] = sharding.Layout.of(param).dtensor(t) if sharded else t


def _real_shape(p: Tensor) -> tuple[int, ...]:
    return (*p.shape, 2) if p.is_complex() else tuple(p.shape)


def _scalars_to_device(states: list[dict], params: list[Tensor]) -> None:
    """capturable=True keeps 0-d state (step counts, NAdam's μ product) on the parameter's
    device, as torch.optim does; a checkpoint saved without it brings them on the CPU."""
    for state, p in zip(states, params):
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() == 0 and value.device != p.device:
                state[key] = value.to(p.device)


def new_fused_stats() -> dict:
    """Counters the fused engine keeps per optimizer (see :mod:`optimlab.core.fused`)."""
    return {
        "fused_steps": 0,
        "torch_fused_steps": 0,
        "eager_steps": 0,
        "grad_copies": 0,
        "rebuilds": 0,
        "compile_seconds": None,
    }


class FlatGroup(list):
    """The flat buckets of one param group, and the parameters kept outside them.

    ``idle`` parameters had no gradient when the buckets were built (frozen layers passed to the
    optimizer): they are skipped, and one that gets a gradient rebuilds the group. ``eager``
    parameters cannot live in flat buffers (``reasons`` says why, e.g. a complex parameter or a
    sparse gradient): they are stepped on the foreach (or loop) path beside the buckets.
    """

    def __init__(self, buckets, idle, eager, reasons) -> None:
        super().__init__(buckets)
        self.idle: list[Tensor] = list(idle)
        self.eager: list[Tensor] = list(eager)
        self.reasons: list[str] = list(reasons)
        self.size = sum(len(b.params) for b in buckets) + len(self.idle) + len(self.eager)


def drop_flat(opt, index: int) -> None:
    """Forget group ``index``'s flat buckets (they are rebuilt at a later step)."""
    flat = opt._flat.pop(index, None)
    if flat is not None:
        for bucket in flat:
            bucket.release()


def release_all_flat(flat: dict) -> None:
    """Release every bucket of an optimizer's ``_flat`` and empty it (also run when the
    optimizer is garbage-collected, so no gradient hook outlives it)."""
    for group_flat in flat.values():
        for bucket in group_flat:
            bucket.release()
    flat.clear()


def drop_all_flat(opt) -> None:
    release_all_flat(opt._flat)


def try_fused_step(opt, index: int, group: dict, info: dict) -> list[Tensor] | None:
    """Step group ``index``'s flat buckets fused, if they exist and fit this step.

    Returns the group's ``eager`` parameters, which the caller steps on the eager path, or
    ``None`` when the buckets cannot serve this step (the caller then steps the whole group
    eagerly and the buckets are rebuilt at a later step).
    """
    flat = opt._flat.get(index)
    if flat is None:
        return None
    stats = opt.fused_stats
    copies = stats["grad_copies"]
    if flat.size != len(group["params"]) or any(
        map(operator.is_not, map(_grad_of, flat.idle), repeat(None))
    ):
        # a parameter was added, or one left idle has a gradient now: rebuild
        drop_flat(opt, index)
        return None
    for bucket in flat:
        if bucket.direct and not fused.torch_kernel_applies(opt, group, bucket.like):
            drop_flat(opt, index)  # a switch changed: rebuild with every gradient in the buffer
            return None
        status = bucket.sync(stats)
        if status == storage.SYNC_MOVED:
            drop_flat(opt, index)  # someone replaced a parameter's storage: rebuild
            return None
        if status == storage.SYNC_NONE:
            # A parameter of the buckets has no gradient (or a sparse one): this step runs
            # eagerly on the flat views, and the group is rebuilt at the next step, with
            # parameters that still have no gradient then (frozen since) left idle.
            stats["eager_steps"] += 1
            info["fused"] = False
            drop_flat(opt, index)
            return None
    for bucket in flat:
        fused.run_fused(opt, group, bucket, opt._state_keys(group, bucket.params[0]), info, stats)
    # Reported per step so StepDiagnostics (and the lab's TensorBoard logs) can show them.
    info["engine"] = "fused"
    info["fused"] = bool(flat)
    info["grad_copies"] = stats["grad_copies"] - copies
    if flat.eager:
        info["eager_params"] = len(flat.eager)
        info["fallback"] = "; ".join(flat.reasons)
    return flat.eager


BUILT, DEFERRED, NOT_FUSED = 0, 1, 2


def maybe_build_buckets(opt, index: int, group: dict, engine: str, info: dict | None = None) -> int:
    """Move a group that wants the fused engine (``engine`` "fused" or "auto") into flat
    buffers; return ``BUILT``, ``DEFERRED`` (try again after this step) or ``NOT_FUSED``.

    State is created right away for parameters that have none, so the first step already runs
    fused and no state is allocated twice. A group whose state is created from the first
    gradient (SGD's momentum buffer is ``g`` at the first step) is ``DEFERRED`` until every
    parameter has it: after one eager step, or at once after a checkpoint is loaded.
    ``info`` (this step's ``step_info`` entry) hears why a group the formula cannot fuse is
    stepped eagerly (``"fallback"``).
    """
    params = group["params"]
    if not params or index in opt._flat:
        return NOT_FUSED
    if engine == "auto":
        # ``auto`` asks this at every step of a small model: remember the group's size.
        cached = opt._numel_cache.get(index)
        if cached is None or cached[0] != len(params):
            numel = sum(sharding.local_numel(p) for p in params)  # the work on this process
            cached = opt._numel_cache[index] = (len(params), numel)
        if resolve_engine("auto", cached[1], params[0].device) != "fused":
            return NOT_FUSED
    if len(set(params)) != len(params):
        if info is not None:
            info["fallback"] = "a parameter listed twice"
        return NOT_FUSED  # a parameter listed twice (torch warns) is stepped twice, eagerly
    mode = fused_mode(opt, group)
    if mode is None:
        # a reduction over the whole group needs every bucket's part before any bucket can
        # go on: no per-bucket kernel computes it
        if info is not None:
            info["fallback"] = "a reduction over the whole group"
        return NOT_FUSED
    # Parameters without a gradient now (frozen ones, typically) stay idle and are skipped, as
    # every engine skips them; if one gets a gradient later, the group is rebuilt around it.
    idle = [p for p in params if p.grad is None]
    if len(idle) == len(params):
        return NOT_FUSED
    live = [p for p in params if p.grad is not None]
    batched = mode == "batched"
    states = []
    for p in live:
        state = opt.state[p]
        if len(state) == 0:
            opt._init_state(group, p, state)
        if any(key not in state for key in opt._state_keys(group, p)):
            return DEFERRED  # created from the first gradient, by an eager step
        states.append(state)
    fusable, eager, reasons = [], [], []
    for p, state in zip(live, states):
        keys = opt._state_keys(group, p)
        if sharding.is_dtensor(p):
            reason = shard_buckets.unfusable_reason(p, state, keys, mode)
        else:
            shapes = expected_state_shapes(opt, group, p) if batched else None
            reason = storage.unfusable_reason(p, state, keys, shapes)
        if reason is None:
            fusable.append((p, state))
        else:
            eager.append(p)
            if reason not in reasons:
                reasons.append(reason)
    for p in idle + eager:
        _release_flat_views(p, opt.state.get(p, {}))
    buckets = []
    if fusable:
        fparams = [p for p, _ in fusable]
        fstates = [s for _, s in fusable]
        for idx in _uniform_buckets(opt, group, fparams, fstates, batched):
            bparams = [fparams[i] for i in idx]
            keys = opt._state_keys(group, bparams[0])
            bstates = [fstates[i] for i in idx]
            if sharding.is_dtensor(bparams[0]):
                buckets.append(shard_buckets.build(bparams, bstates, keys))
                continue
            direct = not batched and fused.torch_kernel_applies(opt, group, bparams[0])
            buckets.append(
                storage.build_bucket(bparams, bstates, keys, direct_grads=direct, batched=batched)
            )
    opt._flat[index] = FlatGroup(buckets, idle, eager, reasons)
    opt.fused_stats["rebuilds"] += 1
    return BUILT


def _release_flat_views(p: Tensor, state: dict) -> None:
    """Give a parameter that leaves the flat buffers (it lost its gradient, or can no longer
    be fused) storage of its own, for its data and state: a view would keep a whole old flat
    buffer alive. A parameter that is a view of someone else's buffer stays where it is."""
    if type(p) not in storage.PLAIN_TYPES or p.is_sparse:
        return
    with torch.no_grad():
        if storage.is_engine_view(p) and not storage.owns_storage(p):
            p.data = p.data.clone()
        for key, value in state.items():
            if (
                type(value) in storage.PLAIN_TYPES
                and not value.is_sparse
                and not storage.owns_storage(value)
            ):
                state[key] = value.clone()


def _uniform_buckets(
    opt, group: dict, params: list[Tensor], states: list[dict], batched: bool
) -> list[list[int]]:
    """Indices of ``params`` by device, dtype and per-parameter scalar state (the step count,
    NAdam's ``mu_product``): one compiled call steps a bucket with one set of scalars, so
    parameters unfrozen later, or skipped once, get their own bucket. (The state tensors of a
    0-d parameter are 0-d too, and are not scalar state.) ``batched``: also by shape. Sharded
    parameters: also by device mesh and placements, apart from plain ones."""
    buckets: dict[tuple, list[int]] = {}
    for i, (p, state) in enumerate(zip(params, states)):
        keys = opt._state_keys(group, p)
        scalars = tuple(
            (k, float(v))
            for k, v in sorted(state.items())
            if k not in keys and type(v) in storage.PLAIN_TYPES and v.dim() == 0
        )
        shape = tuple(p.shape) if batched else None
        key = (p.device, p.dtype, scalars, shape, shard_buckets.bucket_key(p))
        buckets.setdefault(key, []).append(i)
    return list(buckets.values())


def formula_kinds(opt, group: dict) -> frozenset[str]:
    """The kinds of operation the optimizer's formula uses with ``group``'s settings
    (:data:`optimlab.core.vocabulary.KINDS`), found by recording it once on placeholders: what
    an engine may do with the formula follows from them (:func:`fused_mode`)."""
    keys = opt._state_keys(group)
    rec = RecordingOps(2 + len(keys))
    state = {key: [Sym(2 + j)] for j, key in enumerate(keys)}
    probe = torch.zeros(2, 2)
    scalars = {"step": torch.ones(())}
    for spec in opt.state_spec:
        if spec.shape == "scalar" and spec.when(group, probe):
            scalars[spec.name] = spec.init(probe, group)
    steps = [1.0] if opt._counts_steps(group) else None
    inputs = StepInputs(
        rec, group, [Sym(0)], [Sym(1)], state, steps, [scalars], {}, [(2, 2)], [torch.float32]
    )
    opt._update(inputs)
    return frozenset(rec.kinds)


def fused_mode(opt, group: dict) -> str | None:
    """How the fused engine runs ``group``: ``"flat"`` (an elementwise formula: one pass over
    flat buffers of all the group's parameters), ``"batched"`` (reductions over a parameter
    or matrix operations: one kernel per batch of same-shape parameters), or ``None`` (a
    reduction over the whole group: the group runs on the foreach path)."""
    kinds = formula_kinds(opt, group)
    if kinds <= {"elementwise"}:
        return "flat"
    if kinds <= {"elementwise", "reduction", "matrix"}:
        return "batched"
    return None


def expected_state_shapes(opt, group: dict, p: Tensor) -> dict[str, tuple[int, ...]]:
    """The shape each state tensor of ``p`` has when its factory makes it (computed on the
    ``meta`` device: nothing is allocated)."""
    meta = torch.empty(p.shape, dtype=p.dtype, device="meta")
    return {
        spec.name: tuple(spec.init(meta, group).shape)
        for spec in opt.state_spec
        if spec.shape != "scalar" and spec.when(group, p)
    }
