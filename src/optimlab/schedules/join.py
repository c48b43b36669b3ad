"""``join``: chain schedules at step boundaries, each one restarting its own step count."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from optimlab.schedules.base import Schedule, check_steps


@dataclass(frozen=True)
class Join(Schedule):
    """Schedule ``s_i`` runs from boundary ``b_{i−1}`` (``b_{−1} = 0``) up to ``b_i``::

        v(t) = s_i(t − b_{i−1})   with   i = #{b ∈ boundaries : b ≤ t}

    so each later schedule sees its own step count starting at 0 (as optax's
    ``join_schedules``). ``len(schedules) == len(boundaries) + 1``; boundaries increase.
    """

    schedules: tuple[Schedule, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        schedules, boundaries = tuple(self.schedules), tuple(self.boundaries)
        if len(schedules) != len(boundaries) + 1:
            raise ValueError(
                f"join needs one more schedule than boundaries, got {len(schedules)} "
                f"schedules and {len(boundaries)} boundaries"
            )
        for s in schedules:
            if not callable(s):
                raise ValueError(f"Invalid schedule: {s!r} (expected a callable step -> value)")
        for b in boundaries:
            check_steps("boundary", b)
        if any(b0 >= b1 for b0, b1 in zip(boundaries, boundaries[1:], strict=False)):
            raise ValueError(f"Invalid boundaries: {boundaries!r} (expected strictly increasing)")
        object.__setattr__(self, "schedules", schedules)
        object.__setattr__(self, "boundaries", boundaries)

    def __call__(self, step: int) -> float:
        i = bisect.bisect_right(self.boundaries, step)
        offset = self.boundaries[i - 1] if i > 0 else 0
        return float(self.schedules[i](step - offset))


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Join:
    """Chain ``schedules`` at ``boundaries``; see `Join`. For example, warm-up then cosine::

        join([LinearWarmup(1e-3, 100), CosineDecay(1e-3, 900)], [100])

    has the values of ``WarmupCosine(1e-3, warmup_steps=100, total_steps=1000)``.
    """
    return Join(tuple(schedules), tuple(boundaries))
