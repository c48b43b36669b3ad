"""Adam, AdamW and AMSGrad: one formula, three sets of defaults."""

from __future__ import annotations

from torch import Tensor

from optimlab.core import torch_fused
from optimlab.core.state import State, StepInputs
from optimlab.core.transforms import (
    bias_correction,
    descend_,
    ema_,
    ema_sq_,
    rms_denominator,
)
from optimlab.optim import validation as check
from optimlab.optim.base import Optimizer, resolve_decoupled
from optimlab.optim.spec import ADAM_SPACE, TorchTwin

AMSGRAD_FORMS = ("raw", "corrected")


def adam_step(
    s: StepInputs,
    g: list,
    *,
    amsgrad: bool = False,
    amsgrad_form: str = "raw",
    eps_inside_sqrt: bool = False,
) -> None:
    """Adam's moments and step from the gradient ``g`` (after maximize and weight decay), with
    ``s.group``'s lr, betas and eps and ``s.state``'s ``exp_avg``, ``exp_avg_sq`` (and
    ``max_exp_avg_sq``): the formula of :class:`Adam`, also used by :class:`~optimlab.Muon`
    for the parameters it trains with AdamW."""
    ops, group, state, steps = s.ops, s.group, s.state, s.steps
    lr, (beta1, beta2) = group["lr"], group["betas"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    ema_(ops, m, g, beta1)
    ema_sq_(ops, v, g, beta2)
    bc1 = bias_correction(beta1, steps)
    bc2 = bias_correction(beta2, steps)
    if amsgrad:
        v_max = state["max_exp_avg_sq"]
        if amsgrad_form == "raw":
            ops.maximum_(v_max, v)
        else:
            ops.maximum_(v_max, ops.mul(v, [1.0 / b for b in bc2]))
            bc2 = 1.0
        v = v_max
    denom = rms_denominator(ops, v, eps=group["eps"], eps_inside_sqrt=eps_inside_sqrt, bc2=bc2)
    descend_(ops, s.params, m, denom, [lr / b for b in bc1])


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, arXiv:1412.6980, Algorithm 1), with AMSGrad (Reddi, Kale & Kumar,
    arXiv:1904.09237, Algorithm 2) as an option.

    With ``m`` = ``exp_avg``, ``v`` = ``exp_avg_sq``, ``t`` the step and ``g`` the gradient::

        m ← β₁·m + (1−β₁)·g                       (Alg. 1 line 7)
        v ← β₂·v + (1−β₂)·g⊙g                     (line 8)
        m̂ = m / (1−β₁ᵗ),  v̂ = v / (1−β₂ᵗ)          (lines 9-10)
        θ ← θ − lr · m̂ / (√v̂ + ε)                  (line 11)

    ``eps_inside_sqrt=True`` uses ``√(v̂ + ε)`` instead. With ``amsgrad`` the denominator uses
    a running maximum ``v_max`` = ``max_exp_avg_sq``: ``amsgrad_form="raw"`` (torch) keeps
    ``v_max ← max(v_max, v)`` and bias-corrects it, ``v̂ = v_max/(1−β₂ᵗ)``; ``"corrected"``
    keeps ``v_max ← max(v_max, v/(1−β₂ᵗ))`` and uses it as ``v̂``. (Reddi et al.'s Algorithm 2
    itself has no bias correction at all.)

    Weight decay: ``weight_decay_mode="l2"`` adds ``λθ`` to ``g`` (torch.optim.Adam);
    ``"decoupled"`` is AdamW. State: ``step``, ``exp_avg``, ``exp_avg_sq`` (+
    ``max_exp_avg_sq``): 8 bytes/param in fp32, 12 with amsgrad.
    """

    name = "adam"
    year = 2014
    torch_twin = TorchTwin("Adam")
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "amsgrad": True},
        {"lr": 0.01, "amsgrad": True, "amsgrad_form": "corrected"},
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        {"lr": 0.01, "eps_inside_sqrt": True},
        {"lr": 0.01, "maximize": True, "amsgrad": True},
        {"lr": 0.01, "weight_decay_mode": "decoupled", "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay_mode": "scheduled", "weight_decay": 0.1},
    )
    invalid_configs = (({"amsgrad_form": "paper"}, "Invalid amsgrad_form: 'paper'"),)
    search_space = ADAM_SPACE

    state_spec = (
        State("exp_avg", doc="m, the first moment"),
        State("exp_avg_sq", doc="v, the second moment"),
        State("max_exp_avg_sq", when=lambda group, p: group["amsgrad"], doc="v_max"),
    )
    sparse_message = (
        "Adam does not support sparse gradients, please consider SparseAdam instead"  # torch's
    )

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        weight_decay_mode: str = "l2",
        eps_inside_sqrt: bool = False,
        amsgrad_form: str = "raw",
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            weight_decay_mode=resolve_decoupled(weight_decay_mode, decoupled_weight_decay),
            eps_inside_sqrt=eps_inside_sqrt,
            amsgrad_form=amsgrad_form,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_eps(group["eps"])
        group["betas"] = check.check_tensor_lr_and_betas(group)
        check.check_betas(group["betas"])
        check.check_bool("amsgrad", group["amsgrad"])
        check.check_bool("eps_inside_sqrt", group["eps_inside_sqrt"])
        check.check_choice("amsgrad_form", group["amsgrad_form"], AMSGRAD_FORMS)

    def _update(self, s: StepInputs) -> None:
        group = s.group
        adam_step(
            s,
            self._gradient(s),
            amsgrad=group["amsgrad"],
            amsgrad_form=group["amsgrad_form"],
            eps_inside_sqrt=group["eps_inside_sqrt"],
        )

    def _torch_kernel_applies(self, group) -> bool:
        return not (
            group["weight_decay_mode"] == "scheduled"
            or group["eps_inside_sqrt"]
            or (group["amsgrad"] and group["amsgrad_form"] != "raw")
        )

    def _torch_fused(self, group, params, grads, state, step) -> None:
        torch_fused.adam_(
            params,
            grads,
            state["exp_avg"],
            state["exp_avg_sq"],
            state.get("max_exp_avg_sq"),
            step,
            lr=group["lr"],
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=group["weight_decay_mode"] == "decoupled",
            maximize=group["maximize"],
        )


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, arXiv:1711.05101, Alg. 2).

    The decay acts on the parameters directly, outside the adaptive ratio::

        θ ← θ − lr·λ·θ            (weight_decay_mode="decoupled", torch.optim.AdamW)
        θ ← θ − η·λ·θ             (weight_decay_mode="scheduled": the paper, η = lr/initial_lr)
        θ ← θ − lr · m̂ / (√v̂ + ε)   (the Adam step, see :class:`Adam`)

    Adding ``λθ`` into the gradient or into ``m`` instead is L2-regularised Adam, not AdamW.
    Same constructor as :class:`Adam`, with ``weight_decay=1e-2`` and
    ``weight_decay_mode="decoupled"`` as defaults.
    """

    name = "adamw"
    year = 2017
    torch_twin = TorchTwin("AdamW")
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay_mode": "scheduled", "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True, "betas": (0.5, 0.9)},
    )

    variant_defaults = {"weight_decay": 1e-2, "weight_decay_mode": "decoupled"}


class AMSGrad(Adam):
    r"""AMSGrad (Reddi, Kale & Kumar, arXiv:1904.09237, Algorithm 2): :class:`Adam` whose
    denominator never decreases, ``v_max ← max(v_max, v)``. Identical to
    ``Adam(..., amsgrad=True)``; see :class:`Adam` for ``amsgrad_form``.
    """

    name = "amsgrad"
    year = 2018
    torch_twin = TorchTwin("Adam", {"amsgrad": True})
    configs = (
        {"lr": 0.01},
        {"lr": 0.01, "amsgrad_form": "corrected"},
        {"lr": 0.01, "weight_decay": 0.1},
    )

    variant_fixed = {"amsgrad": True}
