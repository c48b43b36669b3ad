"""AdaBound and AMSBound: Adam whose per-coordinate step is clipped into bounds that close in
on a final SGD learning rate."""

from __future__ import annotations

import math

from torch import Tensor

from optimlab.core.state import State, StepInputs
from optimlab.core.transforms import (
    bias_correction,
    ema_,
    ema_sq_,
    schedule_multiplier,
)
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import ADAM_SPACE, TorchTwin


class AdaBound(Optimizer):
    r"""AdaBound (Luo, Xiong, Liu & Sun, arXiv:1902.09843, Algorithm 2), in the form of the
    authors' released code; AMSBound (Algorithm 3) with ``amsbound=True``.

    With ``m``, ``v`` as in Adam, ``D = √v + ε`` (``√v_max + ε`` for AMSBound, ``v_max ←
    max(v_max, v)``), and ``f`` the final learning rate::

        f = final_lr · lr / initial_lr   (bounds_follow_lr=True, the authors' code: the bounds
                                          follow an lr schedule)
        f = final_lr                     (bounds_follow_lr=False: fixed, as in the paper)
        lower = f·(1 − 1/(γ·t + 1)),  upper = f·(1 + 1/(γ·t))
        η = clip(lr·√(1−β₂ᵗ)/(1−β₁ᵗ) / D,  lower,  upper)     (elementwise)
        θ ← θ − η ⊙ m

    The paper's Algorithm 2 differs from the code in three more ways: it uses γ = 1−β₂ in the
    bounds, has no bias correction, and divides η by √t. We follow the code, as practitioners
    do; see docs/optimizers.md. ``step_info`` reports the current bounds. State: ``step``,
    ``exp_avg``, ``exp_avg_sq`` (+ ``max_exp_avg_sq``): 8 (12) bytes/param in fp32.
    """

    name = "adabound"
    year = 2019
    stand_in = TorchTwin("Adam")  # no torch twin; torch's Adam moves the same bytes
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "amsbound": True},
        {"lr": 0.01, "bounds_follow_lr": False},
        {"lr": 0.01, "final_lr": 0.05, "gamma": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True},
        {"lr": 0.01, "weight_decay_mode": "decoupled", "weight_decay": 0.1},
    )
    invalid_configs = (
        ({"final_lr": -0.1}, "Invalid final learning rate: -0.1"),
        ({"gamma": 1.5}, "Invalid gamma parameter: 1.5"),
        ({"gamma": math.nan}, "Invalid gamma parameter: nan"),
    )
    search_space = ADAM_SPACE

    state_spec = (
        State("exp_avg", doc="m"),
        State("exp_avg_sq", doc="v"),
        State("max_exp_avg_sq", when=lambda group, p: group["amsbound"], doc="v_max"),
    )

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "l2",
        bounds_follow_lr: bool = True,
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            final_lr=final_lr,
            gamma=gamma,
            eps=eps,
            weight_decay=weight_decay,
            amsbound=amsbound,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
            weight_decay_mode=weight_decay_mode,
            bounds_follow_lr=bounds_follow_lr,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_eps(group["eps"])
        check.check_betas(group["betas"])
        if not (group["final_lr"] >= 0.0):
            raise ValueError(f"Invalid final learning rate: {group['final_lr']}")
        if not (0.0 < group["gamma"] < 1.0):
            raise ValueError(f"Invalid gamma parameter: {group['gamma']}")
        check.check_bool("amsbound", group["amsbound"])
        check.check_bool("bounds_follow_lr", group["bounds_follow_lr"])

    def _update(self, s: StepInputs) -> None:
        ops, group, state, steps = s.ops, s.group, s.state, s.steps
        lr, (beta1, beta2), gamma = group["lr"], group["betas"], group["gamma"]
        g = self._gradient(s)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        ema_(ops, m, g, beta1)
        ema_sq_(ops, v, g, beta2)
        if group["amsbound"]:
            ops.maximum_(state["max_exp_avg_sq"], v)
            v = state["max_exp_avg_sq"]
        bc1 = bias_correction(beta1, steps)
        bc2 = bias_correction(beta2, steps)
        final = group["final_lr"]
        if group["bounds_follow_lr"]:
            final = final * schedule_multiplier(lr, group["base_lr"])
        lower = [final * (1.0 - 1.0 / (gamma * t + 1.0)) for t in steps]
        upper = [final * (1.0 + 1.0 / (gamma * t)) for t in steps]
        eta = ops.sqrt(v)
        ops.add_scalar_(eta, group["eps"])
        eta = ops.reciprocal(eta)
        ops.mul_(eta, [lr * math.sqrt(b2) / b1 for b1, b2 in zip(bc1, bc2)])
        ops.clamp_(eta, lower, upper)
        ops.mul_tensors_(eta, m)
        ops.add_(s.params, eta, alpha=-1.0)
        latest = max(range(len(steps)), key=steps.__getitem__)
        s.info["lower_bound"] = lower[latest]
        s.info["upper_bound"] = upper[latest]


class AMSBound(AdaBound):
    r"""AMSBound (Luo et al., arXiv:1902.09843, Algorithm 3): :class:`AdaBound` with the AMSGrad
    maximum ``v_max ← max(v_max, v)`` in the denominator. Same as ``AdaBound(amsbound=True)``.
    """

    name = "amsbound"
    year = 2019
    stand_in = TorchTwin("Adam", {"amsgrad": True})
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "gamma": 0.01, "bounds_follow_lr": False},
    )

    variant_fixed = {"amsbound": True}
