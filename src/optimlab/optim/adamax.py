"""Adamax: Adam with the infinity norm in place of the second moment."""

from __future__ import annotations

from torch import Tensor

from optimlab.core.state import State, StepInputs
from optimlab.core.transforms import ema_, negate
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import ADAM_SPACE, TorchTwin


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, arXiv:1412.6980, Algorithm 2).

    With ``m`` = ``exp_avg`` and ``u`` = ``exp_inf``::

        m ← β₁·m + (1−β₁)·g                 (Alg. 2 line 7)
        u ← max(β₂·u, |g| + ε)              (line 8; the paper has no ε, torch adds it so
                                             that u > 0 when g = 0)
        θ ← θ − lr/(1−β₁ᵗ) · m / u          (line 9)

    No bias correction is needed for ``u``. State: ``step``, ``exp_avg``, ``exp_inf`` (8
    bytes/param in fp32). Matches torch.optim.Adamax.
    """

    name = "adamax"
    year = 2014
    torch_twin = TorchTwin("Adamax")
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True},
        {"lr": 0.01, "weight_decay_mode": "decoupled", "weight_decay": 0.1},
    )
    search_space = ADAM_SPACE

    state_spec = (State("exp_avg", doc="m"), State("exp_inf", doc="u"))

    def __init__(
        self,
        params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "l2",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
            fused=fused,
            weight_decay_mode=weight_decay_mode,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_eps(group["eps"])
        check.check_betas(group["betas"])

    def _update(self, s: StepInputs) -> None:
        ops, group = s.ops, s.group
        lr, (beta1, beta2) = group["lr"], group["betas"]
        g = self._gradient(s)
        m, u = s.state["exp_avg"], s.state["exp_inf"]
        ema_(ops, m, g, beta1)
        ops.mul_(u, beta2)
        abs_g = ops.abs(g)
        ops.add_scalar_(abs_g, group["eps"])
        ops.maximum_(u, abs_g)
        ops.addcdiv_(s.params, m, u, negate([lr / (1.0 - beta1**t) for t in s.steps]))
