"""optimlab: deep-learning optimizers correct to the paper and to torch.optim, and a lab to
compare them.

>>> import optimlab
>>> opt = optimlab.create_optimizer("adamw", model.parameters(), lr=1e-3)  # doctest: +SKIP
"""

from optimlab import guards, init, optim, schedules
from optimlab.guards import (
    EMA,
    GradientAccumulation,
    GradientClipping,
    Lookahead,
    NonFiniteGradientError,
    NonFiniteGuard,
    StepDiagnostics,
    accumulate_gradients,
    clip_gradients,
    skip_nonfinite,
)
from optimlab.init import check_init, initialize
from optimlab.optim import *  # noqa: F403 - every registered optimizer, by class name
from optimlab.schedules import HyperparamScheduler, ReduceOnPlateau

__version__ = "0.1.0"

__all__ = [
    "EMA",
    "GradientAccumulation",
    "GradientClipping",
    "HyperparamScheduler",
    "Lookahead",
    "NonFiniteGradientError",
    "NonFiniteGuard",
    "ReduceOnPlateau",
    "StepDiagnostics",
    "accumulate_gradients",
    "check_init",
    "clip_gradients",
    "guards",
    "init",
    "initialize",
    "schedules",
    "skip_nonfinite",
    "__version__",
    *(name for name in optim.__all__ if name != "OPTIMIZERS"),
]
