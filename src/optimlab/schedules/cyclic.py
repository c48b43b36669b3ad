"""Schedules that go up and down: one-cycle and cosine with warm restarts (SGDR)."""

from __future__ import annotations

from dataclasses import dataclass

from optimlab.schedules.base import (
    Schedule,
    check_choice,
    check_finite,
    check_range,
    check_steps,
)
from optimlab.schedules.decay import cosine_between

ANNEAL_SHAPES = ("cos", "linear")


@dataclass(frozen=True)
class OneCycle(Schedule):
    """One-cycle policy (Smith & Topin, arXiv:1708.07120), with torch's step convention.

    From ``v0`` to ``v_peak`` in phase 1, then from ``v_peak`` to ``v_end`` in phase 2. The
    phases end at ``e1 = pct_start · T − 1`` and ``e2 = T − 1`` (``T = total_steps``)::

        v(t) = a(v0, v_peak, t / e1)                     0 ≤ t ≤ e1
        v(t) = a(v_peak, v_end, (t − e1) / (e2 − e1))    e1 < t ≤ e2
        v(t) = v_end                                      t > e2

    with ``a(x, y, p) = y + (x − y) · ½ (1 + cos πp)`` for ``anneal="cos"`` or
    ``x + (y − x) · p`` for ``"linear"``. The defaults ``v0 = v_peak / 25`` and
    ``v_end = v0 / 10⁴`` are torch's ``div_factor`` and ``final_div_factor``, so the values
    equal ``torch.optim.lr_scheduler.OneCycleLR(max_lr=peak, total_steps=T)``'s lr.

    ``peak`` may lie below ``init_value``: ``OneCycle(peak=0.85, total_steps=T,
    init_value=0.95, end_value=0.95)`` is torch's momentum cycle, to apply to ``momentum``
    or ``beta1``. Unlike the other decays, ``v_end`` is reached at ``T − 1``, not ``T``.
    """

    peak: float
    total_steps: int
    pct_start: float = 0.3
    init_value: float | None = None
    end_value: float | None = None
    anneal: str = "cos"

    def __post_init__(self) -> None:
        check_finite("peak", self.peak)
        check_steps("total_steps", self.total_steps, minimum=2)
        check_range("pct_start", self.pct_start, 0.0, 1.0, open_hi=True)
        if not (self.pct_start * self.total_steps > 1.0):
            raise ValueError(
                f"Invalid pct_start: {self.pct_start!r} (pct_start * total_steps must exceed 1 "
                f"so that the first phase lasts at least a step; total_steps={self.total_steps})"
            )
        check_choice("anneal", self.anneal, ANNEAL_SHAPES)
        # Resolve torch's default factors here so the repr shows the values in use.
        if self.init_value is None:
            object.__setattr__(self, "init_value", self.peak / 25.0)
        if self.end_value is None:
            object.__setattr__(self, "end_value", self.init_value / 1e4)
        check_finite("init_value", self.init_value)
        check_finite("end_value", self.end_value)

    def _anneal(self, start: float, end: float, progress: float) -> float:
        if self.anneal == "cos":
            return cosine_between(start, end, progress)
        return start + (end - start) * progress

    def __call__(self, step: int) -> float:
        e1 = self.pct_start * self.total_steps - 1.0
        e2 = float(self.total_steps - 1)
        if step <= e1:
            return self._anneal(self.init_value, self.peak, step / e1)
        if step <= e2:
            return self._anneal(self.peak, self.end_value, (step - e1) / (e2 - e1))
        return float(self.end_value)


@dataclass(frozen=True)
class CosineRestarts(Schedule):
    """Cosine annealing with warm restarts, SGDR (Loshchilov & Hutter, arXiv:1608.03983, eq. 5).

    Cycle ``i`` lasts ``T_i = T_0 · m^i`` steps (``T_0 = period``, ``m = period_mult``) and
    starts at ``v_peak · d^i`` (``d = peak_decay``, 1 in the paper)::

        v(t) = v_end + (v_peak · d^i − v_end) · ½ (1 + cos(π · T_cur / T_i))

    where ``T_cur`` counts the steps since the last restart. With ``d = 1`` the values equal
    ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0, T_mult, eta_min=v_end)``.
    """

    peak: float
    period: int
    period_mult: int = 1
    end_value: float = 0.0
    peak_decay: float = 1.0

    def __post_init__(self) -> None:
        check_finite("peak", self.peak)
        check_steps("period", self.period, minimum=1)
        check_steps("period_mult", self.period_mult, minimum=1)
        check_finite("end_value", self.end_value)
        check_finite("peak_decay", self.peak_decay)

    def cycle(self, step: int) -> tuple[int, int, int]:
        """``(i, T_cur, T_i)``: the cycle index, steps into it, and its length."""
        if self.period_mult == 1:
            i, t_cur = divmod(step, self.period)
            return i, t_cur, self.period
        # Geometric cycle lengths: walk them (O(log t) iterations), which stays exact where
        # the closed form through log() can land on the wrong side of a restart.
        i, start, length = 0, 0, self.period
        while step >= start + length:
            start += length
            length *= self.period_mult
            i += 1
        return i, step - start, length

    def __call__(self, step: int) -> float:
        i, t_cur, t_i = self.cycle(step)
        return cosine_between(self.peak * self.peak_decay**i, self.end_value, t_cur / t_i)
