"""Schedules: pure ``step -> value`` functions, and the adapters that apply them to optimizers.

Every schedule returns absolute values (an lr, a beta1...) and is a small frozen dataclass, so
it is picklable and printable. `join` chains schedules. `HyperparamScheduler` applies a
schedule to any param-group hyperparameter of any ``torch.optim`` optimizer;
`ReduceOnPlateau` is the stateful, metric-driven one. Formulas: ``docs/schedules.md``.
"""

from optimlab.schedules.base import Constant, Schedule
from optimlab.schedules.cyclic import CosineRestarts, OneCycle
from optimlab.schedules.decay import (
    CosineDecay,
    ExponentialDecay,
    MultiStepDecay,
    PolynomialDecay,
    StepDecay,
)
from optimlab.schedules.hyperparam import HyperparamScheduler
from optimlab.schedules.join import Join, join
from optimlab.schedules.plateau import ReduceOnPlateau
from optimlab.schedules.warmup import InverseSqrt, LinearWarmup, WarmupCosine, WarmupStableDecay

__all__ = [
    "Constant",
    "CosineDecay",
    "CosineRestarts",
    "ExponentialDecay",
    "HyperparamScheduler",
    "InverseSqrt",
    "Join",
    "LinearWarmup",
    "MultiStepDecay",
    "OneCycle",
    "PolynomialDecay",
    "ReduceOnPlateau",
    "Schedule",
    "StepDecay",
    "WarmupCosine",
    "WarmupStableDecay",
    "join",
]
