r"""Lookahead (Zhang, Lucas, Hinton & Ba, 2019, "Lookahead Optimizer: k steps forward, 1 step
back", arXiv:1907.08610).

Any inner optimizer moves the *fast* weights θ; Lookahead keeps a second copy, the *slow*
weights φ, starting at the parameters' values at the first step (φ₀ = θ₀). After every k
inner steps, the slow weights move a fraction α of the way to where the fast weights got, and
the fast weights restart from there (Algorithm 1 of the paper):

.. math::
    \phi \leftarrow \phi + \alpha\,(\theta - \phi), \qquad \theta \leftarrow \phi.

The inner optimizer's state (momenta, second moments) is kept across the reset, which is the
paper's default choice. Only steps the inner chain actually applied are counted, so a step
skipped by the non-finite guard or a micro-batch of an accumulation window does not advance
the k-step clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.guards.base import (
    OptimizerWrapper,
    load_param_tensors,
    save_param_tensors,
    step_applied,
)


class Lookahead(OptimizerWrapper):
    """Lookahead around any optimizer.

    Args:
        optimizer: the inner ("fast") optimizer.
        k: number of inner steps between synchronisations (paper: 5 or 10).
        alpha: slow-weight step size α in (0, 1] (paper: 0.5 or 0.8).

    Attributes:
        fast_steps: inner steps applied so far (checkpointed, with the slow weights).
        last_synced: whether the last ``step()`` ended with a synchronisation.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        super().__init__(optimizer)
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"Invalid lookahead k value: {k}")
        if not (0.0 < float(alpha) <= 1.0):  # also rejects NaN
            raise ValueError(f"Invalid lookahead alpha value: {alpha}")
        self.k = k
        self.alpha = float(alpha)
        self.fast_steps = 0
        self.last_synced = False
        self._slow: dict[Tensor, Tensor] = {}

    def slow_weights(self) -> list[Tensor | None]:
        """The slow weights φ, one per parameter in ``param_groups`` order (None before step 1)."""
        return [self._slow.get(p) for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _init_slow(self) -> None:
        # Made at the first step rather than at construction, so that weights loaded into the
        # model after the optimizer was built are the ones the slow copy starts from.
        for group in self.param_groups:
            for p in group["params"]:
                if p not in self._slow:
                    self._slow[p] = p.detach().clone()

    @torch.no_grad()
    def _sync(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                slow = self._slow[p]
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        self._init_slow()
        # Lookahead does not look at gradients, so the closure goes straight to the inner
        # optimizer, which may evaluate it as often as it needs to.
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self.last_step_applied = step_applied(self.optimizer)
        self.last_synced = False
        if self.last_step_applied:
            self.fast_steps += 1
            if self.fast_steps % self.k == 0:
                self._sync()
                self.last_synced = True
        return loss

    def _guard_state_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "alpha": self.alpha,
            "fast_steps": self.fast_steps,
            "slow": save_param_tensors(self, self._slow),
        }

    def _load_guard_state_dict(self, state: dict[str, Any]) -> None:
        self.k = int(state["k"])
        self.alpha = float(state["alpha"])
        self.fast_steps = int(state["fast_steps"])
        self._slow = load_param_tensors(self, state["slow"], "Lookahead slow weights")

    def _repr_options(self) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha}
