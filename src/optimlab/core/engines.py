"""Engines: how one optimizer formula is executed over a param group.

``loop`` and ``foreach`` run the optimizer's ``_update`` eagerly with
:data:`~optimlab.core.tensorlist.LOOP` or :data:`~optimlab.core.tensorlist.FOREACH` ops.
``fused`` runs the same ``_update`` once per step over flat contiguous buffers, compiled
(see :mod:`optimlab.core.fused`). ``auto`` picks the best engine that applies.

The optimizer is duck-typed here (the core never imports :mod:`optimlab.optim`): it provides
``engine``, ``counts_steps``, ``_state_keys(group)`` and
``_update(ops, group, params, grads, state, steps, raw_states, info)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from optimlab.core.tensorlist import FOREACH, LOOP, group_by_device_and_dtype

ENGINES = ("auto", "loop", "foreach", "fused")


def resolve_engine(name: str) -> str:
    """The concrete engine ``name`` stands for."""
    if name == "auto":
        return "foreach"
    if name == "fused":
        raise NotImplementedError("engine='fused' is not available in this build")
    return name


def as_real(t: Tensor | None) -> Tensor | None:
    """Complex tensors are optimized as pairs of reals, exactly as torch.optim does."""
    if t is not None and torch.is_complex(t):
        return torch.view_as_real(t)
    return t


def run_step(
    opt, group: dict, params: list[Tensor], grads: list[Tensor], states: list[dict], info: dict
) -> None:
    """Advance step counters and apply ``opt._update`` to one param group."""
    engine = resolve_engine(opt.engine)
    ops = LOOP if engine == "loop" else FOREACH
    if engine == "loop":
        buckets = [list(range(len(params)))]
    else:
        buckets = list(group_by_device_and_dtype(params).values())
    keys = opt._state_keys(group)
    for idx in buckets:
        raw = [states[i] for i in idx]
        p = [as_real(params[i]) for i in idx]
        g = [as_real(grads[i]) for i in idx]
        state = {k: [as_real(s.get(k)) for s in raw] for k in keys}
        fresh = {k: [i for i, t in enumerate(ts) if t is None] for k, ts in state.items()}
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
