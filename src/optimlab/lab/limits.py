"""The values the lab accepts for its numeric settings, checked in one place for the CLI, the
config file and the Python API.

The bounds keep a typo from turning into a traceback (``--seeds 100000000000`` would allocate
a list of a hundred billion seeds) or a crashed machine (``--threads 100000``): anything larger
than these is a mistake, not an experiment the lab is built for. Each check raises a one-line
:class:`~optimlab.lab.errors.LabError` that says what is allowed.
"""

from __future__ import annotations

import math
from typing import Any

from optimlab.lab.errors import LabError

#: Tuning trials per problem × optimizer.
MAX_BUDGET = 10_000
#: Seeds for the reruns of the best setting.
MAX_SEEDS = 1_000
#: Optimizer steps per run (or per range test).
MAX_STEPS = 10_000_000
#: Seeds are stored as SQLite integers and fed to ``torch.manual_seed``: 0 to 2**63 − 1.
MAX_SEED = 2**63 - 1
#: Seconds a worker of a shared search may stay silent before its trials are given to others
#: (a day: longer only leaves a dead worker's trials waiting).
MAX_GRACE_PERIOD = 86_400
#: Worker processes and threads per worker, per core of the machine: more only slows runs
#: down (they fight over the cores) and can exhaust memory or threads.
PER_CORE = 4


def max_processes() -> int:
    """The most worker processes (or threads per worker) the lab starts on this machine."""
    from optimlab.lab.parallel import default_workers

    return PER_CORE * default_workers()


def check_int(what: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; booleans and fractions are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise LabError(f"{what} must be an integer from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise LabError(f"{what} must be an integer from {low} to {high}, got {value}")
    return int(value)


def check_seed(value: Any, what: str = "seed") -> int:
    return check_int(what, value, 0, MAX_SEED)


def check_lr(value: Any, what: str = "learning rate") -> float:
    """A positive, finite float."""
    try:
        lr = float(value)
    except (TypeError, ValueError):
        raise LabError(f"{what} must be a positive number, got {value!r}") from None
    if not (math.isfinite(lr) and lr > 0):
        raise LabError(f"{what} must be a positive, finite number, got {value!r}")
    return lr


def check_lr_range(low: Any, high: Any) -> tuple[float, float]:
    """``(low, high)`` with ``0 < low < high < inf``."""
    lo, hi = check_lr(low, "the low end of the lr range"), check_lr(high, "the high end")
    if not lo < hi:
        raise LabError(f"bad lr range ({lo:g}, {hi:g}): need 0 < low < high")
    return lo, hi
