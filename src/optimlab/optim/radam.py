"""RAdam: Adam whose adaptive step is rectified while the variance estimate is unreliable."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optimlab.core.state import State, StepInputs
from optimlab.core.transforms import bias_correction, ema_, ema_sq_, on_device
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer, resolve_decoupled
from optimlab.optim.spec import ADAM_SPACE, TorchTwin

BELOW_THRESHOLD = ("sgd", "skip")


class RAdam(Optimizer):
    r"""RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    arXiv:1908.03265, Algorithm 2).

    With ``m``, ``v`` and bias corrections as in Adam, ``m̂ = m/(1−β₁ᵗ)``::

        ρ∞ = 2/(1−β₂) − 1,   ρₜ = ρ∞ − 2t·β₂ᵗ/(1−β₂ᵗ)                        (lines 2, 6)
        if ρₜ > rectify_threshold:
            r = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ))                          (line 9)
            θ ← θ − lr · r · m̂ · √(1−β₂ᵗ) / (√v + ε)                          (lines 8, 10)
        else:
            θ ← θ − lr · m̂          (below_threshold="sgd": paper line 12 and torch)
            θ unchanged             (below_threshold="skip": the authors' code with
                                     degenerated_to_sgd=False)

    The paper's threshold is ρₜ > 4; torch uses 5 (the default here), where ``r`` is better
    conditioned. For β₂ = 0.999 the rectified step starts at t = 6 with 5 and t = 5 with 4.
    ``step_info`` reports whether the last step was rectified. State: ``step``, ``exp_avg``,
    ``exp_avg_sq`` (8 bytes/param in fp32).
    """

    name = "radam"
    year = 2019
    torch_twin = TorchTwin("RAdam")
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "rectify_threshold": 4.0},
        {"lr": 0.01, "below_threshold": "skip"},
        {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay_mode": "decoupled", "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True},
    )
    invalid_configs = (
        ({"rectify_threshold": 3.0}, "Invalid rectify_threshold value: 3.0"),
        ({"rectify_threshold": math.nan}, "Invalid rectify_threshold value: nan"),
        ({"below_threshold": "adam"}, "Invalid below_threshold: 'adam'"),
    )
    search_space = ADAM_SPACE

    state_spec = (State("exp_avg", doc="m"), State("exp_avg_sq", doc="v"))

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "l2",
        rectify_threshold: float = 5.0,
        below_threshold: str = "sgd",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            weight_decay_mode=resolve_decoupled(weight_decay_mode, decoupled_weight_decay),
            rectify_threshold=rectify_threshold,
            below_threshold=below_threshold,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_eps(group["eps"])
        check.check_betas(group["betas"])
        if not (group["rectify_threshold"] >= 4.0):
            raise ValueError(
                f"Invalid rectify_threshold value: {group['rectify_threshold']} (must be >= 4)"
            )
        check.check_choice("below_threshold", group["below_threshold"], BELOW_THRESHOLD)

    def _update(self, s: StepInputs) -> None:
        ops, group, params, state, steps = s.ops, s.group, s.params, s.state, s.steps
        lr, (beta1, beta2) = group["lr"], group["betas"]
        g = self._gradient(s)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        ema_(ops, m, g, beta1)
        ema_sq_(ops, v, g, beta2)
        bc1 = bias_correction(beta1, steps)
        bc2 = bias_correction(beta2, steps)
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho = [rho_inf - 2.0 * t * beta2**t / b for t, b in zip(steps, bc2)]
        rectified = [r > group["rectify_threshold"] for r in rho]
        # θ ← θ + a·m/(√v + ε) + b·m, with a = 0 where the step is not rectified and b = 0 where
        # it is (or where below_threshold="skip").
        if on_device(steps):
            adaptive, plain = _coefficients_on_device(group, lr, rho, rho_inf, rectified, bc1, bc2)
        else:
            adaptive, plain = [], []
            for i, ok in enumerate(rectified):
                r = _rectification(rho[i], rho_inf) if ok else 0.0
                adaptive.append(-lr * r * math.sqrt(bc2[i]) / bc1[i] if ok else 0.0)
                sgd = not ok and group["below_threshold"] == "sgd"
                plain.append(-lr / bc1[i] if sgd else 0.0)
        # Eager engines skip a term that is zero for a tensor; the fused engine records both so
        # that its program is the same before and after rectification starts.
        everything = list(range(len(steps)))
        on = everything if ops.static_program else [i for i in everything if rectified[i]]
        if group["below_threshold"] != "sgd":
            off = []  # b is 0 for every step: nothing to record either
        else:
            off = everything if ops.static_program else [i for i in everything if plain[i] != 0.0]
        if on:
            denom = ops.sqrt([v[i] for i in on])
            ops.add_scalar_(denom, group["eps"])
            ops.addcdiv_(
                [params[i] for i in on], [m[i] for i in on], denom, [adaptive[i] for i in on]
            )
        if off:
            ops.add_([params[i] for i in off], [m[i] for i in off], [plain[i] for i in off])
        if not on_device(steps):  # (reading a device tensor would synchronise)
            latest = max(range(len(steps)), key=steps.__getitem__)
            s.info["rectified"] = rectified[latest]


def _coefficients_on_device(group, lr, rho, rho_inf, rectified, bc1, bc2):
    """``a`` and ``b`` of the step above when the step counts are tensors on the device
    (``capturable=True``): the rectification is chosen by ``torch.where``, not by Python, and
    ``r``'s radicand is clamped at 0 where it is not used (ρₜ between 2 and 4)."""
    sgd = group["below_threshold"] == "sgd"
    adaptive, plain = [], []
    for rho_t, ok, b1, b2 in zip(rho, rectified, bc1, bc2):
        radicand = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0))
        r = torch.sqrt(torch.clamp(radicand / rho_t, min=0.0))
        adaptive.append(torch.where(ok, -lr * r * torch.sqrt(b2) / b1, 0.0))
        plain.append(torch.where(ok, 0.0, -lr / b1) if sgd else 0.0)
    return adaptive, plain


def _rectification(rho_t: float, rho_inf: float) -> float:
    """r = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ)), Liu et al. Alg. 2 line 9."""
    return math.sqrt(
        (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
    )
