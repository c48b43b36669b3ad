"""Stochastic gradient descent with momentum, dampening and Nesterov's look-ahead."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optimlab.core import torch_fused
from optimlab.core.state import State, StepInputs
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import WEIGHT_DECAY, Hyper, TorchTwin

MOMENTUM_FORMS = ("torch", "sutskever")


class SGD(Optimizer):
    r"""SGD, optionally with momentum (Polyak 1964) and Nesterov momentum (Sutskever et al. 2013).

    With ``g`` the gradient (negated if ``maximize``; plus ``λθ`` for L2 decay), ``μ`` the
    momentum, ``τ`` the dampening and ``b`` the ``momentum_buffer``:

    ``momentum_form="torch"`` (default, torch.optim.SGD)::

        b ← g                      at the first step
        b ← μ·b + (1−τ)·g          afterwards
        d = g + μ·b if nesterov else b
        θ ← θ − lr·d

    ``momentum_form="sutskever"`` (Sutskever, Martens, Dahl & Hinton, ICML 2013, eq. 1-4,
    with the look-ahead rewritten as in Bengio et al. arXiv:1212.0901)::

        b ← μ·b + lr·g             (b starts at 0)
        θ ← θ − (μ·b + lr·g) if nesterov else θ − b

    The two forms agree while lr is constant; when a schedule changes lr, the torch form
    applies the new lr to the whole accumulated velocity at once, while the Sutskever form
    changes only the new contribution. With ``momentum=0`` both are plain SGD.
    State: ``momentum_buffer`` (only when ``momentum != 0``), 4 bytes/param in fp32.
    """

    name = "sgd"
    year = 1964
    torch_twin = TorchTwin("SGD")
    configs = (
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "maximize": True, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.9, "momentum_form": "sutskever"},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "momentum_form": "sutskever"},
        {"lr": 0.05, "momentum": 0.9, "weight_decay_mode": "decoupled", "weight_decay": 0.1},
        {"lr": 0.05, "weight_decay_mode": "scheduled", "weight_decay": 0.1},
    )
    invalid_configs = (
        ({"momentum": -0.5}, "Invalid momentum value: -0.5"),
        ({"momentum": math.nan}, "Invalid momentum value: nan"),
        ({"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
        (
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            "Nesterov momentum requires a momentum and zero dampening",
        ),
        ({"momentum_form": "polyak"}, "Invalid momentum_form: 'polyak'"),
        (
            {"momentum": 0.9, "dampening": 0.5, "momentum_form": "sutskever"},
            "Invalid dampening value",
        ),
    )
    search_space = (Hyper("momentum", 0.5, 0.99, description="momentum μ"), WEIGHT_DECAY)

    counts_steps = False
    # Like torch, the momentum buffer is created from the first gradient, in _update.
    state_spec = (
        State("momentum_buffer", when=lambda group, p: group["momentum"] != 0, lazy=True),
    )
    supports_sparse = True  # the update is linear in g: sparse tensors take it as they are

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float | Tensor = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        momentum_form: str = "torch",
        weight_decay_mode: str = "l2",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
            momentum_form=momentum_form,
            weight_decay_mode=weight_decay_mode,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_nonnegative("momentum", group["momentum"])
        check.check_nonnegative("dampening", group["dampening"])
        check.check_bool("nesterov", group["nesterov"])
        check.check_choice("momentum_form", group["momentum_form"], MOMENTUM_FORMS)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if group["momentum_form"] == "sutskever" and group["dampening"] != 0:
            raise ValueError("Invalid dampening value: momentum_form='sutskever' has no dampening")

    def _update(self, s: StepInputs) -> None:
        ops, group, params = s.ops, s.group, s.params
        lr, mu = group["lr"], group["momentum"]
        g = self._gradient(s)
        if mu == 0:
            ops.add_(params, g, alpha=-lr)
            return
        bufs = s.state["momentum_buffer"]
        fresh = [i for i, b in enumerate(bufs) if b is None]
        if group["momentum_form"] == "torch":
            old = [i for i, b in enumerate(bufs) if b is not None]
            if old:
                old_bufs = [bufs[i] for i in old]
                ops.mul_(old_bufs, mu)
                ops.add_(old_bufs, [g[i] for i in old], alpha=1.0 - group["dampening"])
            # torch starts the buffer from a detached copy of g (differentiable=True then
            # does not differentiate through the first buffer); only eager steps get here.
            for i, b in zip(fresh, ops.clone([g[i].detach() for i in fresh])):
                bufs[i] = b
            d = ops.add(g, bufs, alpha=mu) if group["nesterov"] else bufs
            ops.add_(params, d, alpha=-lr)
        else:
            for i in fresh:
                bufs[i] = torch.zeros_like(g[i])
            ops.mul_(bufs, mu)
            ops.add_(bufs, g, alpha=lr)
            if group["nesterov"]:
                ops.add_(params, bufs, alpha=-mu)
                ops.add_(params, g, alpha=-lr)
            else:
                ops.add_(params, bufs, alpha=-1.0)

    def _torch_kernel_applies(self, group) -> bool:
        return group["momentum_form"] == "torch" and group["weight_decay_mode"] == "l2"

    def _torch_fused(self, group, params, grads, state, step) -> None:
        torch_fused.sgd_(
            params,
            grads,
            state.get("momentum_buffer"),
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )
