"""NAdam: Adam with Nesterov momentum and Dozat's momentum schedule."""

from __future__ import annotations

from torch import Tensor

from optimlab.core.state import State, StepInputs, scalar
from optimlab.core.transforms import (
    bias_correction,
    ema_,
    ema_sq_,
    on_device,
    rms_denominator,
)
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer, resolve_decoupled
from optimlab.optim.spec import ADAM_SPACE, TorchTwin


class NAdam(Optimizer):
    r"""NAdam (Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop, Alg. 2).

    With ``ψ`` = ``momentum_decay``, ``Π`` = ``mu_product`` and ``D = √(v/(1−β₂ᵗ)) + ε``::

        μₜ = β₁·(1 − ½·0.96^(t·ψ)),   μₜ₊₁ = β₁·(1 − ½·0.96^((t+1)·ψ))
        Π ← Π·μₜ
        m ← β₁·m + (1−β₁)·g,          v ← β₂·v + (1−β₂)·g⊙g
        θ ← θ − lr·(1−μₜ)/(1−Π) · g/D − lr·μₜ₊₁/(1−Π·μₜ₊₁) · m/D

    State: ``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq`` (8 bytes/param in fp32).
    Matches torch.optim.NAdam (``weight_decay_mode="decoupled"`` is torch's
    ``decoupled_weight_decay=True``, i.e. NAdamW).
    """

    name = "nadam"
    year = 2016
    torch_twin = TorchTwin("NAdam")
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "momentum_decay": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True},
        {"lr": 0.01, "weight_decay_mode": "decoupled", "weight_decay": 0.1},
    )
    invalid_configs = (({"momentum_decay": -1.0}, "Invalid momentum_decay value: -1.0"),)
    search_space = ADAM_SPACE

    state_spec = (
        State("mu_product", init=scalar(1.0), shape="scalar", doc="Π, the product of μₜ"),
        State("exp_avg", doc="m"),
        State("exp_avg_sq", doc="v"),
    )

    def __init__(
        self,
        params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "l2",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            weight_decay_mode=resolve_decoupled(weight_decay_mode, decoupled_weight_decay),
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_eps(group["eps"])
        check.check_betas(group["betas"])
        check.check_nonnegative("momentum_decay", group["momentum_decay"])

    def _update(self, s: StepInputs) -> None:
        ops, group, steps = s.ops, s.group, s.steps
        lr, (beta1, beta2), psi = group["lr"], group["betas"], group["momentum_decay"]
        g = self._gradient(s)
        mu = [beta1 * (1.0 - 0.5 * 0.96 ** (t * psi)) for t in steps]
        mu_next = [beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * psi)) for t in steps]
        products = [scalars["mu_product"] for scalars in s.scalars]
        ops.mul_(products, mu)
        # capturable=True: Π stays on the device, as the step counts do
        prod = products if on_device(steps) else [p.item() for p in products]
        m, v = s.state["exp_avg"], s.state["exp_avg_sq"]
        ema_(ops, m, g, beta1)
        ema_sq_(ops, v, g, beta2)
        denom = rms_denominator(
            ops, v, eps=group["eps"], eps_inside_sqrt=False, bc2=bias_correction(beta2, steps)
        )
        # θ ← θ − (c₁·g + c₂·m)/D: one division per element instead of two, which is what
        # bounds the fused kernel once memory traffic is minimal.
        step = ops.mul(g, [(1.0 - a) / (1.0 - p) for a, p in zip(mu, prod)])
        ops.add_(step, m, [b / (1.0 - p * b) for b, p in zip(mu_next, prod)])
        ops.addcdiv_(s.params, step, denom, -lr)
