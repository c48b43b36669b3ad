r"""Gradient clipping, as an option on any optimizer.

Two forms, over every parameter of every param group:

* by global norm (Pascanu et al., 2013, "On the difficulty of training recurrent neural
  networks", arXiv:1211.5063): with :math:`N = \lVert (\lVert g_1\rVert_p, \dots,
  \lVert g_n\rVert_p) \rVert_p` the p-norm of all gradients taken together,

  .. math:: g_i \leftarrow g_i \cdot \min\!\left(1, \frac{c}{N + 10^{-6}}\right)

  which keeps the direction of the full gradient and bounds its length by ``max_norm`` = c;
* by value: :math:`g_i \leftarrow \operatorname{clamp}(g_i, -v, v)` elementwise, which does
  change the direction.

The arithmetic is torch's own (:func:`torch.nn.utils.clip_grad_norm_` and
:func:`torch.nn.utils.clip_grad_value_`), so results are those of the usual two-liner. What
the wrapper adds is that it cannot be forgotten, composes with the other guards, and records
the norm that was seen *before* clipping, ``last_norm`` (in value mode too, for logging).

Sharded gradients (FSDP2's DTensors) are clipped by the norm of the whole gradient, not of
each process's shard: the local norms are added up over the processes holding the shards
(:func:`optimlab.core.sharding.total_norm`), so every process scales by the same factor and
``last_norm`` is the same number everywhere. With DDP every process holds the same averaged
gradients, so the plain computation already agrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.core import sharding
from optimlab.guards.base import OptimizerWrapper, evaluate_closure, step_applied


def _check_positive(name: str, value: float) -> None:
    # Written so that NaN, which fails every comparison, is rejected too.
    if not (0.0 < float(value) < math.inf):
        raise ValueError(f"Invalid {name} value: {value}")


class GradientClipping(OptimizerWrapper):
    """Clips gradients by global norm or by value before each inner step.

    Args:
        optimizer: the optimizer to wrap.
        max_norm: clip the global ``norm_type``-norm of all gradients to this value.
        norm_type: the p of the p-norm (``float('inf')`` for the max-norm).
        value: clip each gradient element to ``[-value, value]`` instead.

    Exactly one of ``max_norm`` and ``value`` is given.

    Attributes:
        last_norm: 0-d tensor, the global ``norm_type``-norm of the gradients before clipping
            at the last step (None before the first). A tensor, so that reading it does not
            force a device sync every step; ``float(opt.last_norm)`` when you need a number.
        calls: how many times :meth:`step` ran (tells readers whether ``last_norm`` is fresh).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        *,
        value: float | None = None,
    ) -> None:
        super().__init__(optimizer)
        if (max_norm is None) == (value is None):
            raise ValueError("GradientClipping needs exactly one of max_norm and value")
        if max_norm is not None:
            _check_positive("max_norm", max_norm)
        if value is not None:
            _check_positive("clip value", value)
        if not (float(norm_type) > 0.0):
            raise ValueError(f"Invalid norm_type value: {norm_type}")
        self.max_norm = None if max_norm is None else float(max_norm)
        self.norm_type = float(norm_type)
        self.value = None if value is None else float(value)
        self.last_norm: Tensor | None = None
        self.calls = 0

    def _grad_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        params = self._grad_params()
        grads = [p.grad for p in params]
        if sharding.any_dtensor(grads):
            self._clip_shards(grads)
        elif self.max_norm is not None:
            self.last_norm = torch.nn.utils.clip_grad_norm_(
                params, self.max_norm, norm_type=self.norm_type
            )
        else:
            # clip_grad_value_ does not report a norm; take it first.
            self.last_norm = sharding.total_norm(grads, self.norm_type)
            torch.nn.utils.clip_grad_value_(params, self.value)
        self.calls += 1
        self.optimizer.step()
        self.last_step_applied = step_applied(self.optimizer)
        return loss

    @torch.no_grad()
    def _clip_shards(self, grads: list[Tensor]) -> None:
        """Clip gradients some of which are sharded: torch's formula, on the whole gradient's
        norm, applied to each process's shards."""
        norm = sharding.total_norm(grads, self.norm_type)
        self.last_norm = norm
        shards = [sharding.local(g) for g in grads]
        if self.max_norm is None:
            for g in shards:
                g.clamp_(min=-self.value, max=self.value)
            return
        factor = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        for g in shards:
            g.mul_(factor.to(g.device, g.dtype))

    def _guard_state_dict(self) -> dict[str, Any]:
        # Stateless apart from its settings, which are restored like torch restores a group's
        # hyperparameters.
        return {"max_norm": self.max_norm, "norm_type": self.norm_type, "value": self.value}

    def _load_guard_state_dict(self, state: dict[str, Any]) -> None:
        self.max_norm = state["max_norm"]
        self.norm_type = state["norm_type"]
        self.value = state["value"]

    def _repr_options(self) -> dict[str, Any]:
        if self.max_norm is not None:
            return {"max_norm": self.max_norm, "norm_type": self.norm_type}
        return {"value": self.value}


def clip_gradients(
    optimizer: torch.optim.Optimizer,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    *,
    value: float | None = None,
) -> GradientClipping:
    """``optimizer`` with gradient clipping; see :class:`GradientClipping`."""
    return GradientClipping(optimizer, max_norm, norm_type, value=value)
