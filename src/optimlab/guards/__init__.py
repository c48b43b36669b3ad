"""Training guards: wrappers that add a safety or averaging feature to any optimizer.

Every guard is itself a :class:`torch.optim.Optimizer` that shares the wrapped optimizer's
``param_groups`` and ``state``, so schedulers, ``zero_grad``, ``step(closure)`` and
checkpoints work unchanged, and guards compose::

    opt = EMA(Lookahead(NonFiniteGuard(clip_gradients(torch.optim.AdamW(params), 1.0))))

See ``docs/guards.md``.
"""

from optimlab.guards.accumulate import GradientAccumulation, accumulate_gradients
from optimlab.guards.base import OptimizerWrapper, find_guard, iter_chain
from optimlab.guards.clipping import GradientClipping, clip_gradients
from optimlab.guards.diagnostics import GroupRecord, ParameterRecord, StepDiagnostics, StepRecord
from optimlab.guards.ema import EMA
from optimlab.guards.lookahead import Lookahead
from optimlab.guards.nonfinite import NonFiniteGradientError, NonFiniteGuard, skip_nonfinite

__all__ = [
    "EMA",
    "GradientAccumulation",
    "GradientClipping",
    "GroupRecord",
    "Lookahead",
    "NonFiniteGradientError",
    "NonFiniteGuard",
    "OptimizerWrapper",
    "ParameterRecord",
    "StepDiagnostics",
    "StepRecord",
    "accumulate_gradients",
    "clip_gradients",
    "find_guard",
    "iter_chain",
    "skip_nonfinite",
]
