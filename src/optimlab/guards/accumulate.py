r"""Gradient accumulation: one optimizer update per k micro-batches.

When a batch does not fit in memory, split it into k micro-batches, back-propagate each
(autograd *adds* into ``.grad``), and update once. For a mean-reduced loss over k
micro-batches :math:`B_1..B_k` of **equal size** b, the loss on the full batch
:math:`B = \bigcup_j B_j` of size kb is

.. math::
    L_B = \frac{1}{kb}\sum_{x\in B}\ell(x) = \frac{1}{k}\sum_{j=1}^{k} L_{B_j}
    \quad\Longrightarrow\quad
    \nabla L_B = \frac{1}{k}\sum_{j=1}^{k} \nabla L_{B_j},

so dividing the accumulated gradient by k before the inner step makes k micro-batch
``step()`` calls equal one step on the full batch, for any optimizer (to rounding: the sum is
taken in a different order).

**Unequal micro-batches** (sizes :math:`n_j`, :math:`N=\sum_j n_j`, e.g. the last batch of an
epoch): the full-batch gradient is :math:`\sum_j \frac{n_j}{N}\nabla L_{B_j}`, not the plain
average, which over-weights the samples of a small micro-batch. Either use a sum-reduced loss
divided by N, or scale each micro-batch loss by :math:`n_j/N`, and build the wrapper with
``average=False`` so that the gradients are used as summed. :meth:`GradientAccumulation.flush`
steps on an incomplete window (averaging over the micro-batches present).

The wrapper is meant to drop into an unchanged training loop that calls ``step()`` and
``zero_grad()`` once per micro-batch: ``step()`` only calls the inner step on every k-th
call, and ``zero_grad()`` does nothing while a window is open (otherwise it would throw away
the micro-batches accumulated so far). Use ``last_step_applied`` to advance a learning-rate
scheduler once per update rather than once per micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optimlab.guards.base import OptimizerWrapper, evaluate_closure, step_applied


class GradientAccumulation(OptimizerWrapper):
    """Calls the inner ``step()`` once every ``steps`` calls, on the averaged gradient.

    Args:
        optimizer: the optimizer to wrap.
        steps: k, the number of micro-batches per update.
        average: divide the accumulated gradients by k before the inner step (right for
            mean-reduced losses over equal micro-batches); False uses the sum as is.

    Attributes:
        micro_step: micro-batches accumulated in the open window, 0..k-1 (checkpointed; save
            checkpoints at window boundaries, since ``.grad`` is not part of a checkpoint).
        last_step_applied: whether the last ``step()`` updated the parameters.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, steps: int, *, average: bool = True
    ) -> None:
        super().__init__(optimizer)
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"Invalid accumulation steps value: {steps}")
        self.steps = steps
        self.average = bool(average)
        self.micro_step = 0

    @property
    def will_update(self) -> bool:
        """Whether the next ``step()`` call ends a window and calls the inner step."""
        return self.micro_step + 1 >= self.steps

    def _apply(self, count: int) -> None:
        if self.average and count > 1:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.div_(count)
        self.micro_step = 0
        self.optimizer.step()
        self.last_step_applied = step_applied(self.optimizer)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        self.micro_step += 1
        if self.micro_step >= self.steps:
            self._apply(self.micro_step)
        else:
            self.last_step_applied = False
        return loss

    def flush(self) -> bool:
        """Update on an incomplete window (averaging over the micro-batches in it).

        Returns whether an update was attempted (False when the window was empty).
        """
        if self.micro_step == 0:
            return False
        self._apply(self.micro_step)
        return True

    def reset(self, set_to_none: bool = True) -> None:
        """Discard the open window: clear the gradients and start counting again."""
        self.micro_step = 0
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients, except in the middle of a window (see the module docstring)."""
        if self.micro_step == 0:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def _guard_state_dict(self) -> dict[str, Any]:
        return {"micro_step": self.micro_step, "steps": self.steps, "average": self.average}

    def _load_guard_state_dict(self, state: dict[str, Any]) -> None:
        self.micro_step = int(state["micro_step"])
        self.steps = int(state["steps"])
        self.average = bool(state["average"])

    def _repr_options(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": self.average}


def accumulate_gradients(
    optimizer: torch.optim.Optimizer, steps: int, *, average: bool = True
) -> GradientAccumulation:
    """``optimizer`` updating once per ``steps`` calls; see :class:`GradientAccumulation`."""
    return GradientAccumulation(optimizer, steps, average=average)
