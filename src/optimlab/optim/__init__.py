"""Optimizers: ``torch.optim.Optimizer`` subclasses written once over the core's transforms.

Every registered optimizer class is exported here under its class name (``optimlab.optim.Adam``);
the list comes from the registry, so a new optimizer module needs no edit here.
"""

from optimlab.optim.base import Optimizer
from optimlab.optim.registry import (
    OPTIMIZERS,
    available_optimizers,
    create_optimizer,
    get_optimizer_class,
)

globals().update({cls.__name__: cls for cls in OPTIMIZERS.values()})

__all__ = [
    "OPTIMIZERS",
    "Optimizer",
    "available_optimizers",
    "create_optimizer",
    "get_optimizer_class",
    *sorted(cls.__name__ for cls in OPTIMIZERS.values()),
]
