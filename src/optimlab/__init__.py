"""optimlab: deep-learning optimizers correct to the paper and to torch.optim, and a lab to
compare them.

>>> import optimlab
>>> opt = optimlab.create_optimizer("adamw", model.parameters(), lr=1e-3)  # doctest: +SKIP
"""

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

__version__ = "0.1.0"

__all__ = [
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
