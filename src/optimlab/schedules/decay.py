"""Decays from ``init_value``: step, multi-step, exponential, polynomial and cosine.

Formulas use ``t`` for the step, ``v0`` for ``init_value`` and ``v_end`` for ``end_value``.
Decays that last ``decay_steps`` reach ``v_end`` at ``t = decay_steps`` and hold it after.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from optimlab.schedules.base import Schedule, check_finite, check_range, check_steps


@dataclass(frozen=True)
class StepDecay(Schedule):
    """``v(t) = v0 · γ^⌊t / step_size⌋``: multiply by ``gamma`` every ``step_size`` steps.

    Same values as ``torch.optim.lr_scheduler.StepLR``.
    """

    init_value: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_finite("init_value", self.init_value)
        check_steps("step_size", self.step_size, minimum=1)
        check_finite("gamma", self.gamma)

    def __call__(self, step: int) -> float:
        return self.init_value * self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class MultiStepDecay(Schedule):
    """``v(t) = v0 · γ^k(t)``, ``k(t) = #{m ∈ milestones : m ≤ t}``.

    The value is multiplied by ``gamma`` at each milestone step (the milestone step itself
    already has the new value), as in ``torch.optim.lr_scheduler.MultiStepLR``.
    """

    init_value: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_finite("init_value", self.init_value)
        check_finite("gamma", self.gamma)
        # A tuple keeps the dataclass hashable; sorting lets __call__ bisect.
        milestones = tuple(sorted(self.milestones))
        for m in milestones:
            check_steps("milestone", m)
        object.__setattr__(self, "milestones", milestones)

    def __call__(self, step: int) -> float:
        return self.init_value * self.gamma ** bisect.bisect_right(self.milestones, step)


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """``v(t) = v0 · γ^t``, as ``torch.optim.lr_scheduler.ExponentialLR``."""

    init_value: float
    gamma: float

    def __post_init__(self) -> None:
        check_finite("init_value", self.init_value)
        check_finite("gamma", self.gamma)

    def __call__(self, step: int) -> float:
        return self.init_value * self.gamma**step


@dataclass(frozen=True)
class PolynomialDecay(Schedule):
    """``v(t) = v_end + (v0 − v_end) · (1 − min(t, T) / T)^p`` with ``T = decay_steps``.

    ``power = 1`` is linear decay. Same values as ``torch.optim.lr_scheduler.PolynomialLR``
    when ``end_value = 0``.
    """

    init_value: float
    end_value: float
    decay_steps: int
    power: float = 1.0

    def __post_init__(self) -> None:
        check_finite("init_value", self.init_value)
        check_finite("end_value", self.end_value)
        check_steps("decay_steps", self.decay_steps, minimum=1)
        check_range("power", self.power, 0.0, math.inf, open_hi=True)

    def __call__(self, step: int) -> float:
        remaining = 1.0 - min(step, self.decay_steps) / self.decay_steps
        return self.end_value + (self.init_value - self.end_value) * remaining**self.power


@dataclass(frozen=True)
class CosineDecay(Schedule):
    """``v(t) = v_end + (v0 − v_end) · ½ (1 + cos(π · min(t, T) / T))`` with ``T = decay_steps``.

    Half a cosine from ``v0`` down to the floor ``v_end`` (SGDR without restarts,
    Loshchilov & Hutter, arXiv:1608.03983, eq. 5). Equals
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=T, eta_min=v_end)`` for ``t ≤ T``;
    after ``T`` it holds ``v_end`` where torch's climbs back up.
    """

    init_value: float
    decay_steps: int
    end_value: float = 0.0

    def __post_init__(self) -> None:
        check_finite("init_value", self.init_value)
        check_steps("decay_steps", self.decay_steps, minimum=1)
        check_finite("end_value", self.end_value)

    def __call__(self, step: int) -> float:
        progress = min(step, self.decay_steps) / self.decay_steps
        return cosine_between(self.init_value, self.end_value, progress)


def cosine_between(start: float, end: float, progress: float) -> float:
    """``end + (start − end) · ½ (1 + cos(π · progress))``: ``start`` at 0, ``end`` at 1."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
