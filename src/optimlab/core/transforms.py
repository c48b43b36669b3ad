"""Named transforms over tensor lists: the building blocks every optimizer is written in.

Each function is one line of some paper's algorithm, applied to a whole list of tensors
through an engine's ``ops`` (see :mod:`optimlab.core.tensorlist`). Notation:

* ``θ`` parameters, ``g`` gradients, ``t`` the per-parameter step count (after increment);
* ``m`` a first-moment trace, ``v`` a second-moment trace, ``β`` their decay rates;
* ``λ`` weight decay, ``η`` the schedule multiplier ``lr / initial_lr``.

Scalars may be per-tensor sequences (one value per tensor in the list).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from optimlab.core.tensorlist import Scalar, TensorList

WEIGHT_DECAY_MODES = ("l2", "decoupled", "scheduled")


def direction(ops, grads: TensorList, maximize: bool) -> TensorList:
    """``g ← −g`` when maximizing; returns a new list so the ``.grad`` tensors stay intact."""
    return ops.neg(grads) if maximize else grads


def weight_decay(
    ops,
    params: TensorList,
    grads: TensorList,
    *,
    mode: str,
    lr: float,
    decay: float,
    initial_lr: float,
) -> TensorList:
    """Apply weight decay ``λ`` in one of three published forms and return the gradients.

    * ``"l2"`` (coupled, torch's Adam/SGD): ``g ← g + λθ``; the adaptive denominator then
      rescales the decay too.
    * ``"decoupled"`` (torch's AdamW): ``θ ← θ − lr·λ·θ`` before the update.
    * ``"scheduled"`` (Loshchilov & Hutter, arXiv:1711.05101, Alg. 2 line 12):
      ``θ ← θ − η·λ·θ`` with ``η = lr / initial_lr``, so the decay follows the schedule but not
      the base learning rate.
    """
    if decay == 0:
        return grads
    if mode == "l2":
        return ops.add(grads, params, alpha=decay)
    if mode == "decoupled":
        ops.mul_(params, 1.0 - lr * decay)
    elif mode == "scheduled":
        ops.mul_(params, 1.0 - schedule_multiplier(lr, initial_lr) * decay)
    else:  # pragma: no cover - validated at construction
        raise ValueError(f"Invalid weight_decay_mode: {mode!r}")
    return grads


def schedule_multiplier(lr: float, initial_lr: float) -> float:
    """``η = lr / initial_lr``; a group built with lr = 0 has η = 0 while lr stays 0, else 1."""
    if initial_lr > 0:
        return lr / initial_lr
    return 0.0 if lr == 0 else 1.0


def ema_(ops, trace: TensorList, x: TensorList, beta: float) -> None:
    """Exponential moving average ``m ← β·m + (1−β)·x`` (as a lerp, like torch)."""
    ops.lerp_(trace, x, 1.0 - beta)


def ema_sq_(ops, trace: TensorList, x: TensorList, beta: float) -> None:
    """Second-moment average ``v ← β·v + (1−β)·x⊙x``, elementwise per parameter."""
    ops.mul_(trace, beta)
    ops.addcmul_(trace, x, x, 1.0 - beta)


def accumulate_sq_(ops, acc: TensorList, x: TensorList) -> None:
    """Running sum over time ``G ← G + x⊙x`` (Adagrad), elementwise per parameter."""
    ops.addcmul_(acc, x, x, 1.0)


def on_device(steps) -> bool:
    """Whether a step's counts are tensors on the device (``capturable=True``): the formula
    must then compute its scalars as tensors too, and decide nothing in Python."""
    return bool(steps) and isinstance(steps[0], Tensor)


def bias_correction(beta: float, steps: Sequence[float]) -> list[float]:
    """``1 − β^t`` for each tensor's step ``t`` (Kingma & Ba, arXiv:1412.6980, Alg. 1)."""
    return [1.0 - beta**t for t in steps]


def rms_denominator(
    ops, v: TensorList, *, eps: float, eps_inside_sqrt: bool, bc2: Scalar = 1.0
) -> TensorList:
    """``√(v/bc2) + ε`` (torch) or ``√(v/bc2 + ε)`` (``eps_inside_sqrt``), as a new list.

    ``bc2`` left at the plain number 1.0 means "no bias correction" (RMSprop, Adadelta) and costs
    nothing; a per-tensor list is applied as a multiplication by ``1/√bc2``, which is cheaper
    than a division in a bandwidth-bound kernel and differs from it by at most one rounding.
    """
    corrected = isinstance(bc2, (list, tuple)) or bc2 != 1.0
    if eps_inside_sqrt:
        d = ops.mul(v, _reciprocals(bc2)) if corrected else ops.clone(v)
        ops.add_scalar_(d, eps)
        ops.sqrt_(d)
        return d
    d = ops.sqrt(v)
    if corrected:
        ops.mul_(d, _reciprocals(_sqrts(bc2)))
    ops.add_scalar_(d, eps)
    return d


def descend_(ops, params: TensorList, num: TensorList, den: TensorList, step: Scalar) -> None:
    """``θ ← θ − step · num / den``."""
    ops.addcdiv_(params, num, den, negate(step))


def negate(s: Scalar) -> Scalar:
    """``−s`` for a scalar or a per-tensor list of scalars."""
    if isinstance(s, (list, tuple)):
        return [-x for x in s]
    return -s


def _reciprocals(s: Scalar) -> Scalar:
    if isinstance(s, (list, tuple)):
        return [1.0 / x for x in s]
    return 1.0 / s


def _sqrts(s: Scalar) -> Scalar:
    if isinstance(s, (list, tuple)):
        return [_sqrt(x) for x in s]
    return _sqrt(s)


def _sqrt(x):
    # a tensor scalar (capturable=True: a bias correction on the device) stays on the device
    return torch.sqrt(x) if isinstance(x, Tensor) else math.sqrt(x)
