"""The `Schedule` base class, the constant schedule and argument checks shared by all schedules.

A schedule is a pure function ``t -> value`` of the step count ``t = 0, 1, 2, ...``. Values are
absolute (an lr of ``3e-4``, a beta1 of ``0.9``), never multipliers, unless a schedule is
applied with ``HyperparamScheduler(..., relative=True)``. Every schedule is a small frozen
dataclass, so it is hashable, comparable, printable and picklable, and it holds no state: the
value at step ``t`` depends on ``t`` alone.
"""

from __future__ import annotations

import abc
import math
import numbers
import operator
from dataclasses import dataclass


class Schedule(abc.ABC):
    """A pure ``step -> value`` function. Subclasses implement ``__call__``."""

    @abc.abstractmethod
    def __call__(self, step: int) -> float:
        """The value at step ``step`` (``step >= 0``)."""

    def values(self, num_steps: int) -> list[float]:
        """``[self(0), self(1), ..., self(num_steps - 1)]``, e.g. to plot the schedule."""
        return [self(t) for t in range(num_steps)]


@dataclass(frozen=True)
class Constant(Schedule):
    """``v(t) = value``."""

    value: float

    def __post_init__(self) -> None:
        check_finite("value", self.value)

    def __call__(self, step: int) -> float:
        return float(self.value)


# Checks. Each is written as ``not (...)`` so NaN, which fails every comparison, is rejected too.


def check_finite(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value)):
        raise ValueError(f"Invalid {name}: {value!r} (expected a finite number)")


def check_steps(name: str, value: int, minimum: int = 0) -> None:
    """``value`` must be an integer (Python or NumPy) ``>= minimum``."""
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer)") from None
    if isinstance(value, bool) or not (as_int >= minimum):
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= {minimum})")


def check_range(name: str, value: float, lo: float, hi: float, *, open_hi: bool = False) -> None:
    """``lo <= value <= hi`` (``< hi`` when ``open_hi``)."""
    ok = lo <= value < hi if open_hi else lo <= value <= hi
    if not (isinstance(value, numbers.Real) and ok):
        bracket = ")" if open_hi else "]"
        raise ValueError(f"Invalid {name}: {value!r} (expected a number in [{lo}, {hi}{bracket})")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {options})")
