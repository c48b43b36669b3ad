"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

from __future__ import annotations

import math

from torch import Tensor

from optimlab.core.state import State, StepInputs
from optimlab.core.transforms import ema_, ema_sq_, rms_denominator
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import EPS, WEIGHT_DECAY, Hyper, TorchTwin


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton, Coursera lecture 6.5, 2012); centered form from Graves,
    arXiv:1308.0850, Section 4.

    With ``α`` the smoothing constant, ``v`` = ``square_avg``, ``ḡ`` = ``grad_avg`` and ``b`` =
    ``momentum_buffer``::

        v ← α·v + (1−α)·g⊙g
        ḡ ← α·ḡ + (1−α)·g                 (centered only)
        s = v − ḡ⊙ḡ if centered else v
        D = √s + ε      (default, torch)   or   √(s + ε)   (eps_inside_sqrt=True, e.g. Keras/TF)
        b ← μ·b + g/D,  θ ← θ − lr·b       (momentum μ > 0)
        θ ← θ − lr·g/D                     (otherwise)

    ``v`` is a per-coordinate average over time. There is no bias correction: ``v`` starts at
    0, so early steps are larger than ``lr`` (compare Adam). State: ``step``, ``square_avg``
    (+ ``momentum_buffer``, + ``grad_avg``): 4-12 bytes/param in fp32.
    """

    name = "rmsprop"
    year = 2012
    torch_twin = TorchTwin("RMSprop")
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "centered": True},
        {"lr": 0.01, "momentum": 0.9},
        {"lr": 0.01, "centered": True, "momentum": 0.9, "alpha": 0.9, "weight_decay": 0.1},
        {"lr": 0.01, "eps_inside_sqrt": True},
        {"lr": 0.01, "eps_inside_sqrt": True, "centered": True},
        {"lr": 0.01, "maximize": True},
        {"lr": 0.01, "weight_decay_mode": "scheduled", "weight_decay": 0.1},
    )
    invalid_configs = (
        ({"alpha": -0.1}, "Invalid alpha value: -0.1"),
        ({"momentum": math.nan}, "Invalid momentum value: nan"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
    )
    search_space = (
        Hyper("one_minus_alpha", 1e-3, 1e-1, log=True, description="1 − α (square average)"),
        EPS,
        Hyper("momentum", 0.0, 0.99, description="momentum"),
        WEIGHT_DECAY,
    )

    state_spec = (
        State("square_avg", doc="v"),
        State("momentum_buffer", when=lambda group, p: group["momentum"] > 0, doc="b"),
        State("grad_avg", when=lambda group, p: group["centered"], doc="ḡ"),
    )

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        eps_inside_sqrt: bool = False,
        weight_decay_mode: str = "l2",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
            eps_inside_sqrt=eps_inside_sqrt,
            weight_decay_mode=weight_decay_mode,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_eps(group["eps"])
        check.check_nonnegative("momentum", group["momentum"])
        check.check_nonnegative("alpha", group["alpha"])
        check.check_bool("centered", group["centered"])
        check.check_bool("eps_inside_sqrt", group["eps_inside_sqrt"])

    def _update(self, s: StepInputs) -> None:
        ops, group, params, state = s.ops, s.group, s.params, s.state
        lr, alpha = group["lr"], group["alpha"]
        g = self._gradient(s)
        v = state["square_avg"]
        ema_sq_(ops, v, g, alpha)
        if group["centered"]:
            ema_(ops, state["grad_avg"], g, alpha)
            v = ops.addcmul(v, state["grad_avg"], state["grad_avg"], -1.0)
        denom = rms_denominator(ops, v, eps=group["eps"], eps_inside_sqrt=group["eps_inside_sqrt"])
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            ops.mul_(buf, group["momentum"])
            ops.addcdiv_(buf, g, denom, 1.0)
            ops.add_(params, buf, alpha=-lr)
        else:
            ops.addcdiv_(params, g, denom, -lr)
