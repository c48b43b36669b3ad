"""optimlab: deep-learning optimizers correct to the paper and to torch.optim, and a lab to
compare them.

>>> import optimlab
>>> opt = optimlab.create_optimizer("adamw", model.parameters(), lr=1e-3)  # doctest: +SKIP
"""

from optimlab import guards, init, schedules
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
from optimlab.optim import (
    SGD,
    AdaBound,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    AMSBound,
    AMSGrad,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
    available_optimizers,
    create_optimizer,
    get_optimizer_class,
)
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
    "SGD",
    "AMSBound",
    "AMSGrad",
    "AdaBound",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "__version__",
    "available_optimizers",
    "create_optimizer",
    "get_optimizer_class",
]
