"""Adafactor: a second moment kept as row and column statistics, with update clipping and a step
size relative to the parameter's own scale."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optimlab.core.state import State, StepInputs, cols, rows
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import WEIGHT_DECAY, Hyper, TorchTwin

EPS1_MODES = ("clamp", "add")


def _factored(group, p) -> bool:
    """A parameter of ≥ 2 dimensions keeps row and column statistics when ``factored``."""
    return group["factored"] and (p is None or p.dim() >= 2)


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", arXiv:1804.04235, Algorithms 4 and 5). The defaults are torch.optim.Adafactor's form.

    With ``(ε₁, ε₂)`` = ``eps`` (ε₁ ``None``: the parameter dtype's machine epsilon),
    ``RMS(x) = √mean(x²)`` over the whole tensor and ``t`` the step::

        1−β̂₂ = t^beta2_decay                          (t = 1: the first statistics are g²)
        ρ = min(lr, 1/√t)        (relative_step)   or  ρ = lr
        α = max(ε₂, RMS(θ))·ρ    (scale_parameter) or  α = ρ      (θ before weight decay)
        factored (≥ 2-D, over the last two dimensions; torch's row_var, col_var):
            R ← lerp(R, mean₋₁(q), 1−β̂₂),  C ← lerp(C, mean₋₂(q), 1−β̂₂)
            V̂ = R·C / mean₋₂(R)                          (the rank-one reconstruction)
        otherwise (variance):  v ← lerp(v, q, 1−β̂₂),  V̂ = v
        U = g/√V̂,   Û = U / max(1, RMS(U)/d)             (update clipping)

    1/√V̂ is computed as (R/mean₋₂(R))^(-1/2)·C^(-1/2): n + m square roots instead of n·m
    (the same value up to rounding), and V̂ ≥ ε₁² as 1/√V̂ ≤ 1/ε₁.
        θ ← θ − α·Û                       (beta1 None)
        m ← β₁·m + (1−β₁)·α·Û;  θ ← θ − m  (beta1 a float: the authors' code, HF, optax)

    ``eps1_mode="clamp"`` (torch): ``q = g²``, ``mean₋₂(R)`` is clamped below at ε₁ and V̂ at
    ε₁². ``"add"`` (the paper, with ``eps=(1e-30, 1e-3)``): ``q = g² + ε₁``, nothing clamped.
    The paper's form is ``Adafactor(..., eps=(1e-30, 1e-3), eps1_mode="add")``; ``beta1`` adds
    the first moment of the authors' tensor2tensor code; ``factored=False`` keeps a full
    second moment. Weight decay (torch's form): ``θ ← θ·(1 − lr·λ)``, with lr itself.

    Memory: ``step``, and for an n×m parameter ``row_var`` (n) and ``col_var`` (m) values
    instead of n·m; ``variance`` (θ-shaped) for vectors; ``exp_avg`` with ``beta1``. The
    fused engine runs batches of same-shape parameters, one compiled kernel each. Not for
    complex parameters, as torch.
    """

    name = "adafactor"
    year = 2018
    torch_twin = TorchTwin("Adafactor")
    supports_complex = False
    lr_message = "Learning rate should be >= 0 but is: {}"
    weight_decay_message = "weight_decay should be >= 0 but is: {value}"
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "weight_decay": 0.1, "beta2_decay": -0.6, "d": 1.5},
        {"lr": 0.01, "maximize": True, "eps": (1e-6, 1e-3)},
        {"lr": 0.05, "relative_step": False, "scale_parameter": False},
        {"lr": 0.01, "beta1": 0.9},
        {"lr": 0.01, "eps": (1e-30, 1e-3), "eps1_mode": "add"},
        {"lr": 0.01, "factored": False},
        {"lr": 0.01, "weight_decay_mode": "scheduled", "weight_decay": 0.1},
    )
    invalid_configs = (
        ({"beta2_decay": 0.8}, "beta2_decay should be <= 0 but is: 0.8"),
        ({"eps": (-1e-30, 1e-3)}, "epsilon1 should be >= 0 but is: -1e-30"),
        ({"eps": (None, -1.0)}, "epsilon2 should be >= 0 but is: -1.0"),
        ({"d": 0.5}, "Clipping threshold d should be >= 1 but is: 0.5"),
        ({"beta1": 1.0}, "Invalid beta1 value: 1.0"),
        ({"eps1_mode": "paper"}, "Invalid eps1_mode: 'paper'"),
    )
    search_space = (
        Hyper("beta2_decay", -1.0, -0.5, description="decay exponent: 1 − β2 = t^beta2_decay"),
        Hyper("d", 1.0, 4.0, log=True, description="clipping threshold"),
        WEIGHT_DECAY,
    )
    state_spec = (
        State("row_var", init=rows, when=_factored, shape="factored", doc="R, row means"),
        State("col_var", init=cols, when=_factored, shape="factored", doc="C, column means"),
        State(
            "variance",
            when=lambda group, p: p is None or not _factored(group, p),
            doc="v, the full second moment",
        ),
        State("exp_avg", when=lambda group, p: group["beta1"] is not None, doc="m"),
    )

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        relative_step: bool = True,
        scale_parameter: bool = True,
        beta1: float | None = None,
        eps1_mode: str = "clamp",
        factored: bool = True,
        weight_decay_mode: str = "decoupled",
        fused: bool | None = None,
        differentiable: bool = False,
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            beta2_decay=beta2_decay,
            eps=eps,
            d=d,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            relative_step=relative_step,
            scale_parameter=scale_parameter,
            beta1=beta1,
            eps1_mode=eps1_mode,
            factored=factored,
            weight_decay_mode=weight_decay_mode,
            fused=fused,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        if not (group["beta2_decay"] <= 0.0):
            raise ValueError(f"beta2_decay should be <= 0 but is: {group['beta2_decay']}")
        eps1, eps2 = group["eps"]
        if eps1 is not None and not (eps1 >= 0.0):
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps1}")
        if not (eps2 >= 0.0):
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps2}")
        if not (group["d"] >= 1.0):
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {group['d']}")
        beta1 = group["beta1"]
        if beta1 is not None and not (0.0 <= beta1 < 1.0):
            raise ValueError(f"Invalid beta1 value: {beta1}")
        check.check_choice("eps1_mode", group["eps1_mode"], EPS1_MODES)
        for key in ("relative_step", "scale_parameter", "factored"):
            check.check_bool(key, group[key])

    @classmethod
    def min_bytes_per_element(cls, group: dict) -> int:
        """Three passes over a factored parameter at the least: read θ and g for RMS(θ) and
        the row and column statistics (8 B), read g for RMS(U) (4 B), read θ and g and write
        θ (12 B): 24 B per element; ``beta1`` reads and writes ``exp_avg`` (+8). A vector's
        ``variance`` adds 8 B on its (few) elements."""
        return 24 + (8 if group["beta1"] is not None else 0)

    def _update(self, s: StepInputs) -> None:
        ops, group = s.ops, s.group
        lr, d = group["lr"], group["d"]
        eps1, eps2 = group["eps"]
        eps1s = [torch.finfo(dtype).eps if eps1 is None else eps1 for dtype in s.dtypes]
        rho = [min(lr, 1.0 / math.sqrt(t)) if group["relative_step"] else lr for t in s.steps]
        mix = [t ** group["beta2_decay"] for t in s.steps]  # 1 − β̂₂
        add = group["eps1_mode"] == "add"
        # α from RMS(θ) before the weight decay changes θ (as torch does)
        alpha = (
            ops.mul(ops.clamp_min(ops.rms(s.params), eps2), rho)
            if group["scale_parameter"]
            else None
        )
        g = self._gradient(s)
        n = len(s.params)
        rows_ = s.state.get("row_var") or [None] * n
        factored = [i for i in range(n) if rows_[i] is not None]
        full = [i for i in range(n) if rows_[i] is None]
        inv_sqrt: list = [None] * n  # V̂^(-1/2) of each parameter
        if factored:
            gf = [g[i] for i in factored]
            r = [s.state["row_var"][i] for i in factored]
            c = [s.state["col_var"][i] for i in factored]
            f_mix = [mix[i] for i in factored]
            row_q, col_q = ops.row_mean_sq(gf), ops.col_mean_sq(gf)
            if add:
                ops.add_scalar_(row_q, [eps1s[i] for i in factored])
                ops.add_scalar_(col_q, [eps1s[i] for i in factored])
            ops.lerp_(r, row_q, f_mix)
            ops.lerp_(c, col_q, f_mix)
            norm = ops.row_mean(r)
            if not add:
                ops.clamp_min_(norm, [eps1s[i] for i in factored])
            # V̂^(-1/2) = (R/mean(R))^(-1/2)·C^(-1/2): square roots of n + m values, not n·m
            inv_rows = ops.rsqrt(ops.div_tensors(r, norm))
            for i, v in zip(factored, ops.mul_tensors(inv_rows, ops.rsqrt(c))):
                inv_sqrt[i] = v
        if full:
            gv = [g[i] for i in full]
            v = [s.state["variance"][i] for i in full]
            q = ops.mul_tensors(gv, gv)
            if add:
                ops.add_scalar_(q, [eps1s[i] for i in full])
            ops.lerp_(v, q, [mix[i] for i in full])
            for i, vi in zip(full, ops.rsqrt(v)):
                inv_sqrt[i] = vi
        if not add:
            # V̂ clamped below at ε₁² is V̂^(-1/2) clamped above at 1/ε₁
            ops.clamp_max_(inv_sqrt, [1.0 / e for e in eps1s])
        u = ops.mul_tensors(inv_sqrt, g)
        # 1/max(1, RMS(U)/d), times α: what each parameter's Û is scaled by
        scale = ops.reciprocal(ops.clamp_min(ops.mul(ops.rms(u), 1.0 / d), 1.0))
        if alpha is None:
            ops.mul_(scale, rho)
        else:
            ops.mul_tensors_(scale, alpha)
        if group["beta1"] is None:
            ops.addcmul_(s.params, scale, u, -1.0)
        else:
            m = s.state["exp_avg"]
            ops.lerp_(m, ops.mul_tensors(u, scale), 1.0 - group["beta1"])
            ops.add_(s.params, m, alpha=-1.0)
