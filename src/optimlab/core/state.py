"""What an optimizer keeps per parameter, declared, and what one call of its formula sees.

An optimizer declares its state as a tuple of :class:`State` records (``state_spec``), one per
tensor, under torch.optim's name where torch has one::

    state_spec = (
        State("exp_avg"),                                   # m, shaped like θ
        State("exp_avg_sq"),                                # v
        State("max_exp_avg_sq", when=lambda group, p: group["amsgrad"]),
    )

Each record says how the tensor is made from the parameter (``init``; the default is zeros of
the parameter's shape), when it exists (``when``), and its ``shape``: ``"param"`` tensors are
shaped like the parameter and may live in the fused engine's flat buffers; ``"factored"`` ones
have another shape made from the parameter's (a factored second moment's row and column
statistics); ``"scalar"`` ones are 0-d per parameter (NAdam's μ product). Every factory builds
from the parameter with ``*_like`` functions or slices of it, so tensor subclasses (FSDP2's
``DTensor``), other devices and dtypes pass through unchanged.

:class:`StepInputs` is what the optimizer's formula (``Optimizer._update``) receives: the
engine's vocabulary, this step's hyperparameters, the lists of parameters, gradients and state
tensors, the step counts, and a dict for facts reported in ``step_info``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

SHAPES = ("param", "factored", "scalar")


def scalar_step_tensor(value: float = 0.0) -> Tensor:
    """A per-parameter scalar (a step counter) with torch.optim's dtype, so checkpoints load
    both ways: float32, or float64 when that is torch's default dtype."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(value, dtype=dtype)


def zeros(p: Tensor, group: Mapping) -> Tensor:
    """Zeros shaped like the parameter (its memory format kept)."""
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def filled(key: str) -> Callable[[Tensor, Mapping], Tensor]:
    """The parameter's shape filled with ``group[key]`` (a complex parameter, a pair of reals,
    gets it in both halves)."""

    def make(p: Tensor, group: Mapping) -> Tensor:
        value = group[key]
        fill = complex(value, value) if torch.is_complex(p) else value
        return torch.full_like(p, fill, memory_format=torch.preserve_format)

    make.__name__ = f"filled_{key}"
    return make


def scalar(value: float) -> Callable[[Tensor, Mapping], Tensor]:
    """A 0-d per-parameter scalar starting at ``value`` (torch.optim's dtype)."""

    def make(p: Tensor, group: Mapping) -> Tensor:
        return scalar_step_tensor(value)

    make.__name__ = f"scalar_{value}"
    return make


def rows(p: Tensor, group: Mapping) -> Tensor:
    """Zeros of the parameter's shape with the last dimension 1: one value per row."""
    return torch.zeros_like(p[..., :1])


def cols(p: Tensor, group: Mapping) -> Tensor:
    """Zeros of the parameter's shape with the second-to-last dimension 1: one per column."""
    return torch.zeros_like(p[..., :1, :])


def always(group: Mapping, p: Tensor | None) -> bool:
    return True


@dataclass(frozen=True)
class State:
    """One tensor an optimizer keeps per parameter (see the module docstring)."""

    name: str
    init: Callable[[Tensor, Mapping], Tensor] = zeros
    when: Callable[[Mapping, Tensor | None], bool] = always
    shape: str = "param"
    #: created by the formula from the first gradient (SGD's momentum buffer is g at step 1)
    lazy: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"State {self.name!r}: shape must be one of {SHAPES}")


@dataclass
class StepInputs:
    """What one call of an optimizer's formula sees (``Optimizer._update(s)``).

    ``params``, ``grads`` and the lists in ``state`` are parallel: one entry per parameter (or
    per flat buffer, or per batch of same-shape parameters, on the fused engine); complex
    tensors are viewed as pairs of reals. ``grads`` are the raw gradients: the formula starts
    from ``Optimizer._gradient(s)``, which applies ``maximize`` and the group's weight decay.
    ``steps`` are the step counts after this step's increment (``None`` for an optimizer that
    keeps none), ``scalars`` each parameter's state dict, where 0-d scalar state lives.
    ``shapes`` are the parameters' own shapes (one per list entry; for a batch of same-shape
    parameters, their shape; empty for the fused engine's flat buffers, which only elementwise
    formulas see): a formula whose scalars depend on a parameter's shape reads them here;
    ``dtypes`` likewise (one per list entry, the fused engine's too).
    """

    ops: Any
    group: Mapping[str, Any]
    params: list
    grads: list
    state: dict[str, list] = field(default_factory=dict)
    steps: list[float] | None = None
    scalars: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    dtypes: list[torch.dtype] = field(default_factory=list)
