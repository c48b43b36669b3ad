"""Engines: how one optimizer formula is executed over a param group.

``loop`` and ``foreach`` run the optimizer's ``_update`` eagerly with
:data:`~optimlab.core.tensorlist.LOOP` or :data:`~optimlab.core.tensorlist.FOREACH` ops.
``fused`` runs the same ``_update`` once per step over flat contiguous buffers, compiled
(see :mod:`optimlab.core.fused`). ``auto`` picks the best engine that applies.

The optimizer is duck-typed here (the core never imports :mod:`optimlab.optim`): it provides
``engine``, ``counts_steps``, ``lazy_state_keys``, ``_state_keys(group)`` and
``_update(ops, group, params, grads, state, steps, raw_states, info)``.
"""

from __future__ import annotations

import operator
from itertools import repeat

import torch
from torch import Tensor

from optimlab.core import fused
from optimlab.core.tensorlist import FOREACH, LOOP, group_by_device_and_dtype

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
    opt, group: dict, params: list[Tensor], grads: list[Tensor], states: list[dict], info: dict
) -> None:
    """Advance step counters and apply ``opt._update`` to one param group."""
    ops = LOOP if opt.engine == "loop" else FOREACH
    if opt.engine == "loop":
        buckets = [list(range(len(params)))]
    else:
        buckets = list(group_by_device_and_dtype(params).values())
    keys = opt._state_keys(group)
    for idx in buckets:
        raw = [states[i] for i in idx]
        p = [as_real(params[i]) for i in idx]
        g = [as_real(grads[i]) for i in idx]
        state = {k: [as_real(s.get(k)) for s in raw] for k in keys}
        fresh = {
            k: [i for i, t in enumerate(state[k]) if t is None]
            for k in opt.lazy_state_keys
            if k in state
        }
        steps = None
        if opt.counts_steps:
            counters = [s["step"] for s in raw]
            ops.add_scalar_(counters, 1.0)
            steps = [c.item() for c in counters]
        opt._update(ops, group, p, g, state, steps, raw, info)
        # Buffers an optimizer creates lazily (SGD's momentum) are stored back with the
        # parameter's own dtype, complex included.
        for k, positions in fresh.items():
            for i in positions:
                t = state[k][i]
                if t is not None:
                    raw[i][k] = torch.view_as_complex(t) if params[idx[i]].is_complex() else t


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
    """The flat buckets of one param group, and the parameters left outside them: those that
    had no gradient when the buckets were built (frozen layers passed to the optimizer)."""

    def __init__(self, buckets, outside) -> None:
        super().__init__(buckets)
        self.outside: list[Tensor] = list(outside)


def try_fused_step(opt, index: int, group: dict, info: dict) -> bool:
    """Run group ``index`` fused if its flat buckets exist and fit this step; else ``False``."""
    buckets = opt._flat.get(index)
    if buckets is None:
        return False
    stats = opt.fused_stats
    copies = stats["grad_copies"]
    outside = buckets.outside
    if sum(len(b.params) for b in buckets) + len(outside) != len(group["params"]) or any(
        map(operator.is_not, map(_grad_of, outside), repeat(None))
    ):
        # a parameter was added, or one left outside has a gradient now: rebuild next step
        del opt._flat[index]
        return False
    for bucket in buckets:
        status = fused.sync_grads(bucket, stats)
        if status == fused.SYNC_MOVED:
            del opt._flat[index]  # someone replaced a parameter's storage: rebuild
            return False
        if status == fused.SYNC_NONE:
            # This step runs eagerly on the flat views; the group is rebuilt at the next step,
            # with parameters that still have no gradient then (frozen since) left outside.
            stats["eager_steps"] += 1
            info["fused"] = False
            del opt._flat[index]
            return False
    keys = opt._state_keys(group)
    for bucket in buckets:
        fused.run_fused(opt, group, bucket, keys, info, stats)
    # Reported per step so StepDiagnostics (and the lab's TensorBoard logs) can show them.
    info["fused"] = True
    info["grad_copies"] = stats["grad_copies"] - copies
    return True


def maybe_build_buckets(opt, index: int, group: dict, *, before_step: bool = False) -> None:
    """Move a group that wants the fused engine into flat buffers.

    Before a group's first step (``before_step``), its state is created right away so the first
    step already runs fused and no state is allocated twice; this needs every parameter to have
    a gradient and the optimizer to have no state it creates lazily from the first gradient
    (SGD's momentum buffer is ``g`` at the first step): those groups are built after one eager
    step instead.
    """
    params = group["params"]
    if not params or index in opt._flat:
        return
    if before_step and opt.lazy_state_keys:
        return
    if opt.engine == "auto":
        # ``auto`` asks this at every step of a small model: remember the group's size.
        cached = opt._numel_cache.get(index)
        if cached is None or cached[0] != len(params):
            cached = opt._numel_cache[index] = (len(params), sum(p.numel() for p in params))
        if resolve_engine("auto", cached[1], params[0].device) != "fused":
            return
    # Parameters without a gradient now (frozen ones, typically) stay outside the buckets and
    # are skipped, as every engine skips them; if one gets a gradient later, the group is
    # rebuilt around it.
    outside = [p for p in params if p.grad is None]
    if len(outside) == len(params):
        return
    if outside:
        params = [p for p in params if p.grad is not None]
        for p in outside:
            _release_flat_views(p, opt.state.get(p, {}))
    if before_step:
        for p in params:
            state = opt.state[p]
            if len(state) == 0:
                opt._init_state(group, p, state)
    states = [opt.state.get(p, {}) for p in params]
    keys = opt._state_keys(group)
    if not fused.fusable(params, states, keys):
        return
    buckets = []
    for idx in _uniform_buckets(params, states, keys):
        buckets.append(fused.build_bucket([params[i] for i in idx], [states[i] for i in idx], keys))
    opt._flat[index] = FlatGroup(buckets, outside)
    opt.fused_stats["rebuilds"] += 1


def _owns_storage(t: Tensor) -> bool:
    return t.untyped_storage().nbytes() <= t.numel() * t.element_size()


def _release_flat_views(p: Tensor, state: dict) -> None:
    """Give a parameter that leaves the flat buffers (it lost its gradient) storage of its own,
    for its data and state: a view would keep a whole old flat buffer alive."""
    with torch.no_grad():
        if not _owns_storage(p):
            p.data = p.data.clone()
        for key, value in state.items():
            if torch.is_tensor(value) and not _owns_storage(value):
                state[key] = value.clone()


def _uniform_buckets(
    params: list[Tensor], states: list[dict], keys: tuple[str, ...]
) -> list[list[int]]:
    """Indices of ``params`` by device, dtype and per-parameter scalar state (the step count,
    NAdam's ``mu_product``): one compiled call steps a bucket with one set of scalars, so
    parameters unfrozen later, or skipped once, get their own bucket. (The elementwise state
    ``keys`` of a 0-d parameter is 0-d too, and is not scalar state.)"""
    buckets: dict[tuple, list[int]] = {}
    for i, (p, state) in enumerate(zip(params, states)):
        scalars = tuple(
            (k, float(v))
            for k, v in sorted(state.items())
            if k not in keys and torch.is_tensor(v) and v.dim() == 0
        )
        buckets.setdefault((p.device, p.dtype, scalars), []).append(i)
    return list(buckets.values())
