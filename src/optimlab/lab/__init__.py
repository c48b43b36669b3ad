"""The optimlab lab: compare optimizers fairly, find learning rates, and report.

Python API (the CLI ``optimlab`` is a thin layer over it)::

    from optimlab.lab import compare
    results = compare(problems=["digits_mlp"], optimizers=["sgd", "momentum", "adam"],
                      budget=6, seeds=3, out_dir="optimlab-out")
    results.to_records()          # one dict per problem × optimizer
    results.plot_loss_curves("digits_mlp")
    results.write_report()        # optimlab-out/reports/compare-<sweep>/report.html

Names are imported lazily so ``import optimlab.lab`` stays cheap (no matplotlib, optuna,
rich or tensorboard until they are needed).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compare": "optimlab.lab.commands",
    "tune": "optimlab.lab.commands",
    "trajectories": "optimlab.lab.commands",
    "find_lr": "optimlab.lab.commands",
    "rebuild_report": "optimlab.lab.commands",
    "list_sweeps": "optimlab.lab.commands",
    "DEFAULT_PROBLEMS": "optimlab.lab.commands",
    "DEFAULT_OPTIMIZERS": "optimlab.lab.commands",
    "DEFAULT_OUT": "optimlab.lab.commands",
    "RunFailed": "optimlab.lab.errors",
    "LabError": "optimlab.lab.errors",
    "Results": "optimlab.lab.results",
    "lr_find": "optimlab.lab.lr_finder",
    "LRFinderResult": "optimlab.lab.lr_finder",
    "Store": "optimlab.lab.store",
    "build_optimizer": "optimlab.lab.optimizers",
    "parse_optimizer": "optimlab.lab.specs",
    "write_report": "optimlab.lab.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optimlab.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
