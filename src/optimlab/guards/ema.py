r"""Exponential moving average (EMA) of the weights, for evaluation.

Averaging the iterates of a stochastic optimizer cancels much of the noise of the last steps
(Polyak & Juditsky, 1992, "Acceleration of stochastic approximation by averaging"; Ruppert,
1988). The exponential form weights recent iterates more, so it follows a model that is
still moving:

.. math::
    \bar\theta_0 = \theta_0, \qquad
    \bar\theta_{t+1} = d_t\,\bar\theta_t + (1 - d_t)\,\theta_{t+1},

where :math:`\theta_0` are the parameters at the first step and :math:`\theta_{t+1}` those
after the (t+1)-th applied optimizer step. With a constant :math:`d_t = d` the average
remembers about :math:`1/(1-d)` steps. Because it starts at :math:`\theta_0`, early on it is
dragged towards the initialisation; the optional warm-up (as in TensorFlow's
``tf.train.ExponentialMovingAverage`` with ``num_updates``) uses

.. math:: d_t = \min\!\left(d, \frac{1 + t}{10 + t}\right),

with t the number of updates done before this one (t = 0 at the first: :math:`d_0 = 0.1`).

The average is used by swapping it into the parameters for evaluation and back afterwards
(``with ema.swapped(): evaluate(model)``). Only the optimizer's parameters are averaged;
buffers such as BatchNorm running statistics are not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from optimlab.guards.base import (
    OptimizerWrapper,
    load_param_tensors,
    save_param_tensors,
    step_applied,
)


class EMA(OptimizerWrapper):
    """Keeps an exponential moving average of the parameters of any optimizer.

    Args:
        optimizer: the optimizer to wrap.
        decay: d in [0, 1).
        warmup: use :math:`\\min(d, (1+t)/(10+t))` instead of d (see the module docstring).

    Attributes:
        num_updates: t, the number of average updates so far (checkpointed with the average).
        is_swapped: whether the parameters currently hold the average.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, decay: float = 0.999, *, warmup: bool = False
    ) -> None:
        super().__init__(optimizer)
        if not (0.0 <= float(decay) < 1.0):  # also rejects NaN
            raise ValueError(f"Invalid EMA decay value: {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.is_swapped = False
        self._average: dict[Tensor, Tensor] = {}

    def current_decay(self) -> float:
        """:math:`d_t` for the next update."""
        if not self.warmup:
            return self.decay
        t = self.num_updates
        return min(self.decay, (1.0 + t) / (10.0 + t))

    def averaged_parameters(self) -> list[Tensor | None]:
        """The averages, one per parameter in ``param_groups`` order (None if not yet made).

        While swapped in, these tensors hold the training weights instead.
        """
        return [self._average.get(p) for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _init_average(self) -> None:
        # At the first step, not at construction: weights loaded into the model after the
        # optimizer was built are the θ₀ the average should start from.
        for group in self.param_groups:
            for p in group["params"]:
                if p not in self._average:
                    self._average[p] = p.detach().clone()

    @torch.no_grad()
    def _update(self) -> None:
        d = self.current_decay()
        for p, avg in self._average.items():
            avg.mul_(d).add_(p, alpha=1.0 - d)
        self.num_updates += 1

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if self.is_swapped:
            raise RuntimeError(
                "EMA.step() while the averaged weights are swapped in; call swap_out() (or "
                "leave the swapped() block) before training"
            )
        self._init_average()
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self.last_step_applied = step_applied(self.optimizer)
        if self.last_step_applied:
            self._update()
        return loss

    @torch.no_grad()
    def _swap(self) -> None:
        # In-place copies rather than rebinding p.data: parameters may be views into a flat
        # buffer (fused engines), and other code may hold references to them.
        for p, avg in self._average.items():
            training = p.detach().clone()
            p.copy_(avg)
            avg.copy_(training)
        self.is_swapped = not self.is_swapped

    def swap_in(self) -> None:
        """Put the averaged weights into the parameters (the training weights are kept)."""
        if self.is_swapped:
            raise RuntimeError("EMA.swap_in(): the averaged weights are already swapped in")
        self._init_average()  # before any step, the average is the parameters themselves
        self._swap()

    def swap_out(self) -> None:
        """Put the training weights back."""
        if not self.is_swapped:
            raise RuntimeError("EMA.swap_out(): the averaged weights are not swapped in")
        self._swap()

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """``with ema.swapped(): ...`` evaluates with the averaged weights, then swaps back."""
        self.swap_in()
        try:
            yield
        finally:
            self.swap_out()

    def _guard_state_dict(self) -> dict[str, Any]:
        # Saved as they are, with the swap flag: a checkpoint taken inside swapped(), together
        # with the model's (averaged) weights, loads back into the same swapped situation.
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "swapped": self.is_swapped,
            "average": save_param_tensors(self, self._average),
        }

    def _load_guard_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.is_swapped = bool(state["swapped"])
        self._average = load_param_tensors(self, state["average"], "EMA averages")

    def _repr_options(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup}
