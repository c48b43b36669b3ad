"""Schedules that start with a linear warm-up: plain warm-up, warm-up + cosine, WSD and
inverse square root.

Formulas use ``t`` for the step, ``v0`` for ``init_value``, ``v_peak`` for ``peak``, ``v_end``
for ``end_value``, ``T_w`` for ``warmup_steps`` and ``T`` for ``total_steps``. The warm-up
reaches ``v_peak`` at ``t = T_w``; ``v(0) = v0``, so the default ``v0 = 0`` makes the first
step a no-op (pass e.g. ``init_value = peak / warmup_steps`` to avoid it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimlab.schedules.base import Schedule, check_choice, check_finite, check_steps
from optimlab.schedules.decay import cosine_between


def _linear_warmup(v0: float, v_peak: float, warmup_steps: int, step: int) -> float:
    if step >= warmup_steps:
        return v_peak
    return v0 + (v_peak - v0) * step / warmup_steps


@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """``v(t) = v0 + (v_peak − v0) · min(t, T_w) / T_w``, then ``v_peak`` for ever.

    With ``warmup_steps = 0`` the value is ``v_peak`` from the start.
    """

    peak: float
    warmup_steps: int
    init_value: float = 0.0

    def __post_init__(self) -> None:
        check_finite("peak", self.peak)
        check_steps("warmup_steps", self.warmup_steps)
        check_finite("init_value", self.init_value)

    def __call__(self, step: int) -> float:
        return _linear_warmup(self.init_value, self.peak, self.warmup_steps, step)


@dataclass(frozen=True)
class WarmupCosine(Schedule):
    """Linear warm-up to ``v_peak`` over ``T_w`` steps, then cosine decay to ``v_end`` at ``T``::

        v(t) = v0 + (v_peak − v0) · t / T_w                              t < T_w
        v(t) = v_end + (v_peak − v_end) · ½ (1 + cos(π · (t − T_w) / (T − T_w)))   T_w ≤ t ≤ T
        v(t) = v_end                                                     t > T

    ``total_steps`` counts the warm-up (as nanoGPT's ``lr_decay_iters`` and optax's
    ``warmup_cosine_decay_schedule``). The cosine part is SGDR's (arXiv:1608.03983);
    warm-up as in Goyal et al., arXiv:1706.02677.
    """

    peak: float
    warmup_steps: int
    total_steps: int
    init_value: float = 0.0
    end_value: float = 0.0

    def __post_init__(self) -> None:
        check_finite("peak", self.peak)
        check_steps("warmup_steps", self.warmup_steps)
        check_steps("total_steps", self.total_steps, minimum=self.warmup_steps + 1)
        check_finite("init_value", self.init_value)
        check_finite("end_value", self.end_value)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _linear_warmup(self.init_value, self.peak, self.warmup_steps, step)
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(step - self.warmup_steps, decay_steps) / decay_steps
        return cosine_between(self.peak, self.end_value, progress)


WSD_SHAPES = ("linear", "cosine", "1-sqrt")


@dataclass(frozen=True)
class WarmupStableDecay(Schedule):
    """Warm-up–stable–decay (WSD, "trapezoidal"): warm up, hold ``v_peak``, then cool down.

    With ``T_d = decay_steps`` and cool-down progress ``p = (t − (T − T_d)) / T_d``::

        v(t) = v0 + (v_peak − v0) · t / T_w        t < T_w           (warm-up)
        v(t) = v_peak                               T_w ≤ t ≤ T − T_d (stable)
        v(t) = v_end + (v_peak − v_end) · s(p)      T − T_d < t ≤ T   (decay)
        v(t) = v_end                                t > T

    with the decay shape ``s(p)``: ``"linear"`` ``1 − p``; ``"cosine"`` ``½ (1 + cos πp)``;
    ``"1-sqrt"`` ``1 − √p``. References: Hu et al., MiniCPM, arXiv:2404.06395 (WSD);
    Hägele et al., arXiv:2405.18392 (the ``1-sqrt`` cool-down).
    """

    peak: float
    warmup_steps: int
    total_steps: int
    decay_steps: int
    init_value: float = 0.0
    end_value: float = 0.0
    shape: str = "linear"

    def __post_init__(self) -> None:
        check_finite("peak", self.peak)
        check_steps("warmup_steps", self.warmup_steps)
        check_steps("decay_steps", self.decay_steps, minimum=1)
        check_steps("total_steps", self.total_steps, minimum=self.warmup_steps + self.decay_steps)
        check_finite("init_value", self.init_value)
        check_finite("end_value", self.end_value)
        check_choice("shape", self.shape, WSD_SHAPES)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _linear_warmup(self.init_value, self.peak, self.warmup_steps, step)
        decay_start = self.total_steps - self.decay_steps
        if step <= decay_start:
            return self.peak
        p = min(step - decay_start, self.decay_steps) / self.decay_steps
        if self.shape == "linear":
            s = 1.0 - p
        elif self.shape == "cosine":
            s = 0.5 * (1.0 + math.cos(math.pi * p))
        else:
            s = 1.0 - math.sqrt(p)
        return self.end_value + (self.peak - self.end_value) * s


@dataclass(frozen=True)
class InverseSqrt(Schedule):
    """Linear warm-up, then decay ∝ 1/√t (Vaswani et al., arXiv:1706.03762, eq. 3)::

        v(t) = v0 + (v_peak − v0) · t / T_w    t < T_w
        v(t) = v_peak · √(T_w / t)              t ≥ T_w

    The paper's ``lrate = d_model^−0.5 · min(t^−0.5, t · T_w^−1.5)`` is this schedule with
    ``peak = (d_model · T_w)^−0.5`` and ``init_value = 0``.
    """

    peak: float
    warmup_steps: int
    init_value: float = 0.0

    def __post_init__(self) -> None:
        check_finite("peak", self.peak)
        check_steps("warmup_steps", self.warmup_steps, minimum=1)
        check_finite("init_value", self.init_value)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _linear_warmup(self.init_value, self.peak, self.warmup_steps, step)
        return self.peak * math.sqrt(self.warmup_steps / step)
