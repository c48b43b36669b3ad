"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optimlab.core import torch_fused
from optimlab.core.state import State, StepInputs, filled
from optimlab.core.tensorlist import LOOP
from optimlab.core.transforms import accumulate_sq_, negate, weight_decay
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import EPS, WEIGHT_DECAY, TorchTwin


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer, JMLR 12:2121-2159, 2011; diagonal form, eq. 1 and §5).

    Per parameter tensor, with ``t`` its step count and ``G`` the ``sum`` state::

        G ← G + g⊙g                       (elementwise, over time; G₀ = initial_accumulator_value)
        lrₜ = lr / (1 + (t−1)·lr_decay)
        θ ← θ − lrₜ · g / (√G + ε)

    ``G`` is a per-coordinate sum over time, not a sum over parameters. Sparse gradients
    (``nn.Embedding(sparse=True)``) update only the rows they hold, as in torch. State:
    ``step``, ``sum`` (4 bytes/param in fp32). Matches torch.optim.Adagrad.
    """

    name = "adagrad"
    year = 2011
    torch_twin = TorchTwin("Adagrad")
    configs = (
        {"lr": 0.05},
        {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 0.1},
        {"lr": 0.05, "maximize": True, "eps": 1e-6},
        {"lr": 0.05, "weight_decay_mode": "decoupled", "weight_decay": 0.1},
    )
    invalid_configs = (
        ({"lr_decay": -1.0}, "Invalid lr_decay value: -1.0"),
        ({"initial_accumulator_value": -1.0}, "Invalid initial_accumulator_value value: -1.0"),
        ({"eps": math.nan}, "Invalid epsilon value: nan"),
    )
    search_space = (EPS, WEIGHT_DECAY)

    supports_sparse = True
    state_spec = (State("sum", init=filled("initial_accumulator_value"), doc="G"),)

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

    def _update(self, s: StepInputs) -> None:
        ops, group, params, grads = s.ops, s.group, s.params, s.grads
        lr = group["lr"]
        clr = [lr / (1.0 + (t - 1.0) * group["lr_decay"]) for t in s.steps]
        total = s.state["sum"]
        if not ops.static_program and any(g.is_sparse for g in grads):
            dense = [i for i, g in enumerate(grads) if not g.is_sparse]
            for i, g in enumerate(grads):
                if g.is_sparse:
                    self._sparse_update(group, params[i], g, total[i], clr[i])
            params, grads = [params[i] for i in dense], [grads[i] for i in dense]
            total, clr = [total[i] for i in dense], [clr[i] for i in dense]
            if not params:
                return
        g = self._gradient(s, params, grads)
        accumulate_sq_(ops, total, g)
        std = ops.sqrt(total)
        ops.add_scalar_(std, group["eps"])
        ops.addcdiv_(params, g, std, negate(clr))

    def _sparse_update(self, group, p: Tensor, grad: Tensor, total: Tensor, clr: float) -> None:
        """The same step for a sparse gradient (``nn.Embedding(sparse=True)``), touching only
        the rows it holds, as torch.optim.Adagrad does: with ``g`` coalesced (the update is not
        linear in ``g``, so repeated indices are summed first), ``G ← G + g⊙g`` and
        ``θ ← θ − lrₜ · g / (√G + ε)`` on those rows."""
        if group["weight_decay"] != 0 and group["weight_decay_mode"] == "l2":
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        if group["maximize"]:
            grad = -grad
        weight_decay(
            LOOP,
            [p],
            [grad],
            mode=group["weight_decay_mode"],
            lr=group["lr"],
            decay=group["weight_decay"],
            initial_lr=group["base_lr"],
        )
        grad = grad.coalesce()
        indices, values = grad._indices(), grad._values()

        def rows(v: Tensor) -> Tensor:
            # the indices come from a coalesced tensor: valid by construction
            return torch.sparse_coo_tensor(indices, v, grad.size(), check_invariants=False)

        total.add_(rows(values.pow(2)))
        std = total.sparse_mask(grad)._values().sqrt_().add_(group["eps"])
        p.add_(rows(values / std), alpha=-clr)

    def _torch_kernel_applies(self, group) -> bool:
        return group["weight_decay_mode"] == "l2"

    def _torch_fused(self, group, params, grads, state, step) -> None:
        torch_fused.adagrad_(
            params,
            grads,
            state["sum"],
            step,
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )
