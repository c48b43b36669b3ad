"""Adadelta: step sizes from the ratio of RMS updates to RMS gradients, no global lr needed."""

from __future__ import annotations

import math

from torch import Tensor

from optimlab.core.state import State, StepInputs
from optimlab.core.transforms import ema_sq_, rms_denominator
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import EPS, WEIGHT_DECAY, Hyper, TorchTwin


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, arXiv:1212.5701, Algorithm 1).

    With ``ρ`` the decay rate, ``v`` = ``square_avg`` (E[g²]) and ``u`` = ``acc_delta`` (E[Δθ²])::

        v ← ρ·v + (1−ρ)·g⊙g                       (line 4)
        Δ = √(u + ε) / √(v + ε) ⊙ g                (line 5)
        u ← ρ·u + (1−ρ)·Δ⊙Δ                        (line 6)
        θ ← θ − lr·Δ                               (line 7; the paper has lr = 1)

    State: ``step``, ``square_avg``, ``acc_delta`` (8 bytes/param in fp32). Matches
    torch.optim.Adadelta.
    """

    name = "adadelta"
    year = 2012
    torch_twin = TorchTwin("Adadelta")
    configs = (
        {},
        {"rho": 0.5, "eps": 1e-4, "weight_decay": 0.1},
        {"lr": 0.5, "maximize": True},
        {"weight_decay_mode": "decoupled", "lr": 0.5, "weight_decay": 0.1},
    )
    invalid_configs = (
        ({"rho": 1.5}, "Invalid rho value: 1.5"),
        ({"rho": math.nan}, "Invalid rho value: nan"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
    )
    search_space = (Hyper("rho", 0.8, 0.999, description="ρ"), EPS, WEIGHT_DECAY)

    state_spec = (State("square_avg", doc="v = E[g²]"), State("acc_delta", doc="u = E[Δθ²]"))

    def __init__(
        self,
        params,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "l2",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            capturable=capturable,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
            weight_decay_mode=weight_decay_mode,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_unit_interval("rho", group["rho"])
        check.check_eps(group["eps"])

    def _update(self, s: StepInputs) -> None:
        ops, group = s.ops, s.group
        lr, rho, eps = group["lr"], group["rho"], group["eps"]
        g = self._gradient(s)
        v, u = s.state["square_avg"], s.state["acc_delta"]
        ema_sq_(ops, v, g, rho)
        rms_g = rms_denominator(ops, v, eps=eps, eps_inside_sqrt=True)
        delta = rms_denominator(ops, u, eps=eps, eps_inside_sqrt=True)
        ops.div_tensors_(delta, rms_g)
        ops.mul_tensors_(delta, g)
        ema_sq_(ops, u, delta, rho)
        ops.add_(s.params, delta, alpha=-lr)
