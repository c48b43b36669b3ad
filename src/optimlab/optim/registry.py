"""Create optimizers by name: ``create_optimizer("radam", model.parameters(), lr=1e-3)``."""

from __future__ import annotations

import difflib

from optimlab.optim.adabound import AdaBound, AMSBound
from optimlab.optim.adadelta import Adadelta
from optimlab.optim.adagrad import Adagrad
from optimlab.optim.adam import Adam, AdamW, AMSGrad
from optimlab.optim.adamax import Adamax
from optimlab.optim.base import Optimizer
from optimlab.optim.nadam import NAdam
from optimlab.optim.radam import RAdam
from optimlab.optim.rmsprop import RMSprop
from optimlab.optim.sgd import SGD

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adadelta": Adadelta,
    "adam": Adam,
    "adamw": AdamW,
    "amsgrad": AMSGrad,
    "radam": RAdam,
    "adamax": Adamax,
    "nadam": NAdam,
    "adabound": AdaBound,
    "amsbound": AMSBound,
}


def available_optimizers() -> list[str]:
    """The registered optimizer names: the classic ones in the order textbooks introduce them
    (SGD to RAdam), then the rest."""
    return list(OPTIMIZERS)


def get_optimizer_class(name: str) -> type[Optimizer]:
    """The class registered under ``name`` (case-insensitive); ``ValueError`` if unknown."""
    if not isinstance(name, str):
        raise ValueError(f"Optimizer name must be a string, got {name!r}")
    key = name.strip().lower()
    if key not in OPTIMIZERS:
        close = difflib.get_close_matches(key, OPTIMIZERS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown optimizer {name!r}{hint} (available: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[key]


def create_optimizer(name: str, params, **kwargs) -> Optimizer:
    """Construct the optimizer registered under ``name`` with ``params`` and ``kwargs``."""
    return get_optimizer_class(name)(params, **kwargs)
