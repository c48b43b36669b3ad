r"""Per-step diagnostics: what did the last optimizer step actually do?

:class:`StepDiagnostics` attaches to any optimizer (plain or wrapped in guards) through
torch's step hooks: a pre-hook copies the parameters θ, a post-hook compares them with the new
ones θ' and hands a :class:`StepRecord` to a callback. Per param group, and optionally per
parameter, with :math:`\Delta\theta = \theta' - \theta` and g the gradient *as the optimizer
used it* (``.grad`` after the step: clipped by a clipping guard, averaged by an accumulator):

* ``grad_norm`` :math:`\lVert g\rVert_2` and ``update_norm`` :math:`\lVert\Delta\theta\rVert_2`
  over all elements of the group (parameters without ``.grad`` count as g = 0);
* ``param_norm`` :math:`\lVert\theta\rVert_2` (before the step) and ``update_ratio``
  :math:`\lVert\Delta\theta\rVert_2 / \lVert\theta\rVert_2`, the relative change per step
  (around 1e-3 is the usual healthy order of magnitude);
* the **effective per-element learning rate** :math:`|\Delta\theta_i| / |g_i|`, over the
  elements whose gradient is non-zero and finite, reported as its min, median (the mean of the
  two middle values for an even count) and max. For SGD without momentum or weight decay it
  is exactly lr for every element; for adaptive methods it shows the spread that the
  preconditioner creates. Elements with :math:`g_i = 0` are left out because the ratio is
  undefined there (their movement comes from momentum or weight decay); when no element
  qualifies the three values are NaN;
* ``nonfinite``: the number of non-finite gradient values the non-finite guard saw (and so
  skipped) in that group at this step, when the chain has a :class:`NonFiniteGuard`;
* the optimizer's own per-group facts from ``optimizer.step_info`` (optimlab optimizers: e.g.
  RAdam ``rectified``, AdaBound ``lower_bound`` / ``upper_bound``), in ``info``, for applied
  steps.

The record also carries the global gradient norm before clipping when the chain has a
:class:`GradientClipping`, and the skip counters of the non-finite guard.

Cost: nothing when no :class:`StepDiagnostics` is attached (no hooks, no copies). Attached,
steps that are not recorded (``every``) cost one Python call; recorded steps copy every
parameter once and do a few reductions in float64 on the parameters' devices, with a single
host sync. Sharded parameters (FSDP2's DTensors) are gathered whole on every process for a
recorded step, so every process records the same numbers, those of the whole model. Calls that
fall inside a gradient-accumulation window are not optimizer updates: they are neither counted
nor recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from optimlab.core import sharding
from optimlab.guards.accumulate import GradientAccumulation
from optimlab.guards.base import find_guard, iter_chain, step_applied
from optimlab.guards.clipping import GradientClipping
from optimlab.guards.naming import NamedParameters, ParameterNames
from optimlab.guards.nonfinite import NonFiniteGuard

_STAT_FIELDS = (
    "grad_norm",
    "update_norm",
    "param_norm",
    "update_ratio",
    "effective_lr_min",
    "effective_lr_median",
    "effective_lr_max",
)


@dataclass
class ParameterRecord:
    """One parameter's numbers at one step (see the module docstring for definitions)."""

    group: int
    index: int
    name: str
    shape: tuple[int, ...]
    grad_norm: float
    update_norm: float
    param_norm: float
    update_ratio: float
    effective_lr_min: float
    effective_lr_median: float
    effective_lr_max: float


@dataclass
class GroupRecord:
    """One param group's numbers at one step (see the module docstring for definitions)."""

    group: int
    lr: float | None
    grad_norm: float
    update_norm: float
    param_norm: float
    update_ratio: float
    effective_lr_min: float
    effective_lr_median: float
    effective_lr_max: float
    nonfinite: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The fields with the ``info`` keys merged in; an ``info`` key that collides with a
        field is kept as ``info.<key>``."""
        out = {name: getattr(self, name) for name in ("group", "lr", *_STAT_FIELDS, "nonfinite")}
        for key, value in self.info.items():
            out[key if key not in out else f"info.{key}"] = value
        return out


@dataclass
class StepRecord:
    """Everything recorded about one optimizer update.

    Attributes:
        step: 1-based count of optimizer updates seen by the diagnostics (``step()`` calls,
            not counting the micro-batches inside an accumulation window).
        applied: whether the parameters were updated (False when the non-finite guard
            skipped the step).
        groups: one :class:`GroupRecord` per param group.
        parameters: one :class:`ParameterRecord` per parameter when ``per_parameter=True``.
        grad_norm_before_clip: global gradient norm seen by a clipping guard, if any.
        skipped / total_skips / consecutive_skips: from a non-finite guard, if any.
    """

    step: int
    applied: bool
    groups: list[GroupRecord]
    parameters: list[ParameterRecord] | None = None
    grad_norm_before_clip: float | None = None
    skipped: bool | None = None
    total_skips: int | None = None
    consecutive_skips: int | None = None

    def scalars(self) -> dict[str, float]:
        """Flat ``{tag: number}`` for loggers such as TensorBoard (None fields left out)."""
        out: dict[str, float] = {"applied": float(self.applied)}
        for name in ("grad_norm_before_clip", "skipped", "total_skips", "consecutive_skips"):
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        for g in self.groups:
            for key, value in g.as_dict().items():
                if key != "group" and isinstance(value, (int, float, bool)):
                    out[f"group{g.group}/{key}"] = float(value)
        for p in self.parameters or ():
            for key in _STAT_FIELDS:
                out[f"param/{p.name}/{key}"] = float(getattr(p, key))
        return out


def _ratio(num: float, den: float) -> float:
    if den > 0.0:
        return num / den
    return 0.0 if num == 0.0 else math.inf


def _lr_stats(ratios: Tensor) -> Tensor:
    """(min, median, max) of a 1-D float64 tensor; NaNs when it is empty."""
    n = ratios.numel()
    if n == 0:
        return torch.full((3,), math.nan, dtype=torch.float64, device=ratios.device)
    lo = torch.kthvalue(ratios, (n + 1) // 2).values
    hi = torch.kthvalue(ratios, n // 2 + 1).values
    return torch.stack([ratios.min(), (lo + hi) / 2, ratios.max()])


class StepDiagnostics:
    """Records what each optimizer step did and passes it to ``callback``.

    Args:
        optimizer: the optimizer whose steps are watched; pass the *outermost* wrapper of a
            guard chain so that skipped steps and clipping are seen.
        callback: called with a :class:`StepRecord` after each recorded step (optional: the
            latest record is also kept in ``last_record``).
        per_parameter: also make one :class:`ParameterRecord` per parameter.
        every: record the 1st update and then every ``every``-th (1, 1+every, ...).
        named_parameters: names for the per-parameter rows (module, pairs or mapping);
            otherwise torch's ``param_names`` or ``group{g}.param{i}``.

    Call :meth:`close` (or use it as a context manager) to remove the hooks.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        callback: Callable[[StepRecord], Any] | None = None,
        *,
        per_parameter: bool = False,
        every: int = 1,
        named_parameters: NamedParameters | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"StepDiagnostics needs a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"Invalid every value: {every}")
        self.optimizer = optimizer
        self.callback = callback
        self.per_parameter = per_parameter
        self.every = every
        self.names = ParameterNames(named_parameters)
        self.updates = 0
        self.last_record: StepRecord | None = None
        self._before: list[list[Tensor]] | None = None
        self._calls_before: tuple[int | None, int | None] = (None, None)
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    def close(self) -> None:
        """Remove the hooks; the optimizer is as if diagnostics had never been attached."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._before = None

    def __enter__(self) -> StepDiagnostics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- hooks ---------------------------------------------------------------------------
    def _will_update(self) -> bool:
        return all(
            opt.will_update
            for opt in iter_chain(self.optimizer)
            if isinstance(opt, GradientAccumulation)
        )

    def _pre_step(self, optimizer, args, kwargs) -> None:
        self._before = None
        if not self._will_update():
            return
        self.updates += 1
        if (self.updates - 1) % self.every:
            return
        with torch.no_grad():
            self._before = [
                [p.detach().clone() for p in group["params"]]
                for group in self.optimizer.param_groups
            ]
        clip = find_guard(self.optimizer, GradientClipping)
        guard = find_guard(self.optimizer, NonFiniteGuard)
        self._calls_before = (
            None if clip is None else clip.calls,
            None if guard is None else guard.calls,
        )

    def _post_step(self, optimizer, args, kwargs) -> None:
        if self._before is None:
            return
        before, self._before = self._before, None
        record = self._record(before)
        self.last_record = record
        if self.callback is not None:
            self.callback(record)

    # -- the numbers ---------------------------------------------------------------------
    @torch.no_grad()
    def _param_stats(self, p: Tensor, old: Tensor) -> tuple[Tensor, Tensor]:
        """[‖g‖, ‖Δθ‖, ‖θ‖, lr_min, lr_median, lr_max] for one tensor, and its lr ratios. A
        sharded parameter (DTensor) is gathered whole first (a median needs every element), so
        every process records the numbers of the whole model."""
        grad = p.grad
        if sharding.is_dtensor(p):
            p, old = p.full_tensor(), old.full_tensor()
            grad = None if grad is None else grad.full_tensor()
        theta = old.to(torch.float64)
        delta = p.detach().to(torch.float64) - theta
        if grad is None:
            grad_norm = torch.zeros((), dtype=torch.float64, device=p.device)
            ratios = torch.empty(0, dtype=torch.float64, device=p.device)
        else:
            g = grad.to(torch.float64)
            if g.is_sparse:
                g = g.to_dense()
            grad_norm = torch.linalg.vector_norm(g)
            keep = (g != 0) & torch.isfinite(g)
            ratios = delta.abs()[keep] / g.abs()[keep]
        norms = torch.stack(
            [grad_norm, torch.linalg.vector_norm(delta), torch.linalg.vector_norm(theta)]
        )
        return torch.cat([norms, _lr_stats(ratios)]), ratios

    def _record(self, before: list[list[Tensor]]) -> StepRecord:
        opt = self.optimizer
        rows: list[Tensor] = []
        where: list[tuple[int, int]] = []
        group_rows: list[Tensor] = []
        device = None
        for gi, group in enumerate(opt.param_groups):
            all_ratios = []
            for i, (p, old) in enumerate(zip(group["params"], before[gi], strict=True)):
                stats, ratios = self._param_stats(p, old)
                device = stats.device if device is None else device
                rows.append(stats.to(device))
                where.append((gi, i))
                all_ratios.append(ratios.to(device))
            cat = torch.cat(all_ratios) if all_ratios else torch.empty(0, dtype=torch.float64)
            group_rows.append(_lr_stats(cat).to(device or cat.device))
        # One host sync for all numbers of this record.
        n = len(rows)
        values = torch.cat([torch.stack(rows).flatten(), *group_rows]).tolist() if n else []
        per_param = [values[6 * k : 6 * k + 6] for k in range(n)]
        per_group_lr = [values[6 * n + 3 * k : 6 * n + 3 * k + 3] for k in range(len(group_rows))]

        applied = step_applied(opt)
        info = getattr(opt, "step_info", None) if applied else None
        if not (isinstance(info, list) and len(info) == len(opt.param_groups)):
            info = None
        guard = find_guard(opt, NonFiniteGuard)
        clip = find_guard(opt, GradientClipping)
        guard_fresh = guard is not None and guard.calls != self._calls_before[1]
        clip_fresh = clip is not None and clip.calls != self._calls_before[0]

        sums = [[0.0, 0.0, 0.0] for _ in opt.param_groups]
        parameters: list[ParameterRecord] | None = [] if self.per_parameter else None
        for (gi, i), (gn, un, pn, lo, med, hi) in zip(where, per_param, strict=True):
            for j, v in enumerate((gn, un, pn)):
                sums[gi][j] += v * v
            if parameters is not None:
                p = opt.param_groups[gi]["params"][i]
                parameters.append(
                    ParameterRecord(
                        gi, i, self.names.label(opt, gi, i), tuple(p.shape),
                        gn, un, pn, _ratio(un, pn), lo, med, hi,
                    )
                )  # fmt: skip
        groups = []
        for gi, group in enumerate(opt.param_groups):
            gn, un, pn = (math.sqrt(s) for s in sums[gi])
            lr = group.get("lr")
            groups.append(
                GroupRecord(
                    group=gi,
                    lr=None if lr is None else float(lr),
                    grad_norm=gn,
                    update_norm=un,
                    param_norm=pn,
                    update_ratio=_ratio(un, pn),
                    effective_lr_min=per_group_lr[gi][0],
                    effective_lr_median=per_group_lr[gi][1],
                    effective_lr_max=per_group_lr[gi][2],
                    nonfinite=guard.last_nonfinite_counts[gi] if guard_fresh else None,
                    info=dict(info[gi]) if info is not None else {},
                )
            )
        return StepRecord(
            step=self.updates,
            applied=applied,
            groups=groups,
            parameters=parameters,
            grad_norm_before_clip=float(clip.last_norm) if clip_fresh else None,
            skipped=guard.last_step_skipped if guard_fresh else None,
            total_skips=guard.total_skips if guard is not None else None,
            consecutive_skips=guard.consecutive_skips if guard is not None else None,
        )
