"""Lion: the sign of an interpolation between momentum and gradient, found by program search."""

from __future__ import annotations

from torch import Tensor

from optimlab.core.state import State, StepInputs
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import BETA1, Hyper, TorchTwin


class Lion(Optimizer):
    r"""Lion, EvoLved Sign Momentum (Chen et al., "Symbolic Discovery of Optimization
    Algorithms", arXiv:2302.06675, Algorithm 2).

    With ``m`` = ``exp_avg`` (starts at 0) and ``(β₁, β₂)`` = ``betas``::

        c = β₁·m + (1−β₁)·g            (interpolate momentum and gradient)
        θ ← θ − lr·sign(c)             (every coordinate moves by exactly lr, or 0 if c = 0)
        m ← β₂·m + (1−β₂)·g            (the momentum, updated after the step)

    β₁ only mixes the current gradient into the direction; β₂ is the memory of the momentum.
    Weight decay by ``weight_decay_mode``: ``"decoupled"`` (default, the paper's
    ``θ ← θ − lr·λ·θ``), ``"scheduled"`` (``θ ← θ − (lr/initial_lr)·λ·θ``, lion-pytorch's
    ``decoupled_weight_decay=True``) or ``"l2"`` (λθ added to g, so it enters c and m). The
    update is larger in norm than AdamW's: the authors take lr 3–10× smaller and λ 3–10× larger.
    A complex parameter is a pair of reals (the sign per real and imaginary part). State:
    ``exp_avg`` (4 bytes/param in fp32), no step count. torch.optim has no Lion (pytorch#94904).
    """

    name = "lion"
    year = 2023
    stand_in = TorchTwin("SGD", {"momentum": 0.9})  # the torch kernel with Lion's 20 B/param
    configs = (
        {"lr": 1e-3},
        {"lr": 1e-3, "betas": (0.95, 0.98), "weight_decay": 0.1},
        {"lr": 1e-3, "maximize": True},
        {"lr": 1e-3, "weight_decay_mode": "scheduled", "weight_decay": 0.1},
        {"lr": 1e-3, "weight_decay_mode": "l2", "weight_decay": 0.1},
    )
    search_space = (
        BETA1,
        Hyper("one_minus_beta2", 1e-3, 1e-1, log=True, description="1 − β2"),
        Hyper("weight_decay", 1e-4, 1.0, log=True, description="weight decay (3-10× AdamW's)"),
    )
    counts_steps = False
    state_spec = (State("exp_avg", doc="m, the momentum"),)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        differentiable: bool = False,
        weight_decay_mode: str = "decoupled",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            differentiable=differentiable,
            weight_decay_mode=weight_decay_mode,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_betas(group["betas"])

    def _update(self, s: StepInputs) -> None:
        ops, (beta1, beta2) = s.ops, s.group["betas"]
        g = self._gradient(s)
        m = s.state["exp_avg"]
        c = ops.lerp(m, g, 1.0 - beta1)
        ops.add_(s.params, ops.sign(c), alpha=-s.group["lr"])
        ops.lerp_(m, g, 1.0 - beta2)
