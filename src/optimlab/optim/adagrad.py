"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlab.core import torch_fused
from optimlab.core.transforms import accumulate_sq_, negate
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer, scalar_step_tensor


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer, JMLR 12:2121-2159, 2011; diagonal form, eq. 1 and §5).

    Per parameter tensor, with ``t`` its step count and ``G`` the ``sum`` state::

        G ← G + g⊙g                       (elementwise, over time; G₀ = initial_accumulator_value)
        lrₜ = lr / (1 + (t−1)·lr_decay)
        θ ← θ − lrₜ · g / (√G + ε)

    ``G`` is a per-coordinate sum over time, not a sum over parameters. State: ``step``,
    ``sum`` (4 bytes/param in fp32). Matches torch.optim.Adagrad.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "l2",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
            weight_decay_mode=weight_decay_mode,
        )
        super().__init__(params, defaults, engine=engine)
        # torch.optim.Adagrad creates its state eagerly; doing the same keeps state_dicts equal.
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(group, p, self.state[p])

    def _validate_group(self, group: dict) -> None:
        check.check_nonnegative("lr_decay", group["lr_decay"])
        check.check_nonnegative("initial_accumulator_value", group["initial_accumulator_value"])
        check.check_eps(group["eps"])

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("sum",)

    def _init_state(self, group, p, state) -> None:
        v = group["initial_accumulator_value"]
        # A complex parameter is a pair of reals; both halves start at the same value.
        fill = complex(v, v) if torch.is_complex(p) else v
        state["step"] = scalar_step_tensor()
        state["sum"] = torch.full_like(p, fill, memory_format=torch.preserve_format)

    def _update(self, ops, group, params, grads, state, steps, raw, info) -> None:
        lr = group["lr"]
        g = self._gradient(ops, group, params, grads)
        total = state["sum"]
        accumulate_sq_(ops, total, g)
        std = ops.sqrt(total)
        ops.add_scalar_(std, group["eps"])
        clr = [lr / (1.0 + (t - 1.0) * group["lr_decay"]) for t in steps]
        ops.addcdiv_(params, g, std, negate(clr))

    def _torch_fused(self, group, param, grad, state, step) -> bool:
        if group["weight_decay_mode"] != "l2":
            return False
        torch_fused.adagrad_(
            param,
            grad,
            state["sum"],
            step,
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )
        return True
