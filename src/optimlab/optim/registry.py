"""Create optimizers by name: ``create_optimizer("radam", model.parameters(), lr=1e-3)``.

The registry is derived: every module of this package is imported, and every optimizer class
that declares a ``name`` registers itself (:meth:`optimlab.optim.base.Optimizer.__init_subclass__`).
Adding an optimizer is adding its module; nothing here changes.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

import optimlab.optim as _package
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import REGISTERED

#: this package's modules that hold no optimizer
_INFRASTRUCTURE = {"base", "registry", "spec", "validation"}

for _module in pkgutil.iter_modules(_package.__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{_package.__name__}.{_module.name}")

#: name -> class, by year of publication (then name)
OPTIMIZERS: dict[str, type[Optimizer]] = dict(
    sorted(REGISTERED.items(), key=lambda item: (item[1].year, item[0]))
)


def available_optimizers() -> list[str]:
    """The registered optimizer names, by year of publication (then name)."""
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
