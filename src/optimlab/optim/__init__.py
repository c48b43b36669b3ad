"""Optimizers: ``torch.optim.Optimizer`` subclasses written once over the core's transforms."""

from optimlab.optim.adabound import AdaBound, AMSBound
from optimlab.optim.adadelta import Adadelta
from optimlab.optim.adagrad import Adagrad
from optimlab.optim.adam import Adam, AdamW, AMSGrad
from optimlab.optim.adamax import Adamax
from optimlab.optim.base import Optimizer
from optimlab.optim.nadam import NAdam
from optimlab.optim.radam import RAdam
from optimlab.optim.registry import (
    OPTIMIZERS,
    available_optimizers,
    create_optimizer,
    get_optimizer_class,
)
from optimlab.optim.rmsprop import RMSprop
from optimlab.optim.sgd import SGD

__all__ = [
    "OPTIMIZERS",
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
    "available_optimizers",
    "create_optimizer",
    "get_optimizer_class",
]
