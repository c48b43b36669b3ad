"""Muon: momentum whose matrix is orthogonalised by a Newton–Schulz iteration before the step; and
the usual way to train a whole model with it (AdamW for what is not a hidden matrix)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from optimlab.core.state import State, StepInputs
from optimlab.optim import validation as check
from optimlab.optim.adam import adam_step
from optimlab.optim.base import Optimizer
from optimlab.optim.spec import WEIGHT_DECAY, Hyper, TorchTwin

MOMENTUM_FORMS = ("ema", "sum")
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _muon(group, p) -> bool:
    return group["use_muon"]


def _adamw(group, p) -> bool:
    return not group["use_muon"]


class Muon(Optimizer):
    r"""Muon (Jordan et al. 2024, kellerjordan.github.io/posts/muon, the KellerJordan/Muon code),
    as torch.optim.Muon computes it; the ``"match_rms_adamw"`` scale and the ``"sum"`` momentum
    are those of Liu et al., "Muon is Scalable for LLM Training", arXiv:2502.16982.

    With μ = ``momentum``, ``b`` = ``momentum_buffer`` (starts at 0) and the gradient ``g``::

        momentum_form="ema" (torch):  b ← μ·b + (1−μ)·g,  u = (1−μ)·g + μ·b (nesterov) or b
        momentum_form="sum" (Moonshot's code):  b ← μ·b + g,  u = g + μ·b (nesterov) or b
        O = NewtonSchulz(u as an A×B matrix)      (ns_steps quintic steps on X/‖X‖_F, in ns_dtype)
        θ ← θ − lr_adj·O,   lr_adj = lr·√max(1, A/B)       (adjust_lr_fn None or "original")
                            lr_adj = lr·0.2·√max(A, B)     ("match_rms_adamw": AdamW's RMS)

    Decoupled weight decay ``θ ← θ·(1 − lr·λ)`` uses the unadjusted lr (torch). Newton–Schulz
    runs in bfloat16 by default, as torch and the reference code do (``ns_dtype``: float32 or
    float64 for exactness); each iteration maps every singular value σ of the normalised
    matrix through a·σ + b·σ³ + c·σ⁵, so the result keeps u's singular vectors with singular
    values in about [0.7, 1.2]. Parameters must be matrices, as in torch; ``flatten=True``
    orthogonalises a convolution's weight as the [out, in·kh·kw] matrix, as the KellerJordan/Muon
    code does (A and B are then that matrix's).

    A param group with ``use_muon=False`` runs AdamW instead (its ``lr``, ``betas``, ``eps`` and
    ``weight_decay``): embeddings, the output head and 1-D parameters belong there, and
    :func:`muon_param_groups` splits a model so. One optimizer object then steps, saves and
    loads the whole model. Muon's state: ``momentum_buffer`` (4 bytes/param in fp32, no step
    count, as torch); AdamW's: ``step``, ``exp_avg``, ``exp_avg_sq``. The fused engine runs
    Newton–Schulz on batches of same-shape matrices (one batched product per iteration).
    """

    name = "muon"
    year = 2024
    torch_twin = TorchTwin("Muon")
    supports_complex = False
    #: every parameter of a Muon group is a matrix (with ``flatten``: a conv weight)
    matrix_only = True
    precision_options = ("ns_dtype", "flatten")
    float64_options = {"ns_dtype": torch.float64}
    lr_message = "Learning rate should be >= 0 but is: {}"
    weight_decay_message = "weight decay should be >= 0 but is: {value}"
    configs = (
        {"lr": 0.02},
        {"lr": 0.02, "nesterov": False, "weight_decay": 0.0},
        {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"},
        {"lr": 0.02, "momentum": 0.8, "momentum_form": "sum"},
        {"lr": 0.02, "ns_steps": 6, "ns_coefficients": (3.4, -4.7, 2.0)},
        {"lr": 0.02, "weight_decay_mode": "scheduled"},
        {"lr": 0.02, "flatten": True},
    )
    invalid_configs = (
        ({"momentum": -0.5}, "momentum should be >= 0 but is: -0.5"),
        ({"adjust_lr_fn": "arbitrary"}, "Adjust learning rate function arbitrary is not"),
        ({"momentum_form": "polyak"}, "Invalid momentum_form: 'polyak'"),
        ({"ns_steps": 100}, "Number of steps must be less than 100"),
    )
    search_space = (
        Hyper("momentum", 0.85, 0.99, description="momentum μ"),
        WEIGHT_DECAY,
    )
    state_spec = (
        State("momentum_buffer", when=_muon, doc="b"),
        State("exp_avg", when=_adamw, doc="m (AdamW groups)"),
        State("exp_avg_sq", when=_adamw, doc="v (AdamW groups)"),
    )

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        momentum_form: str = "ema",
        weight_decay_mode: str = "decoupled",
        flatten: bool = False,
        ns_dtype: torch.dtype = torch.bfloat16,
        foreach: bool | None = None,
        fused: bool | None = None,
        engine: str = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            momentum_form=momentum_form,
            weight_decay_mode=weight_decay_mode,
            flatten=flatten,
            ns_dtype=ns_dtype,
            foreach=foreach,
            fused=fused,
            use_muon=True,
        )
        super().__init__(params, defaults, engine=engine)

    def _validate_group(self, group: dict) -> None:
        check.check_bool("use_muon", group["use_muon"])
        if not group["use_muon"]:
            group.setdefault("betas", (0.9, 0.999))
            check.check_betas(group["betas"])
            check.check_eps(group["eps"])
            return
        if not (group["momentum"] >= 0.0):
            raise ValueError(f"momentum should be >= 0 but is: {group['momentum']}")
        if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
            raise ValueError(
                f"Adjust learning rate function {group['adjust_lr_fn']} is not supported"
            )
        check.check_eps(group["eps"])
        check.check_choice("momentum_form", group["momentum_form"], MOMENTUM_FORMS)
        check.check_bool("nesterov", group["nesterov"])
        check.check_bool("flatten", group["flatten"])
        if not (isinstance(group["ns_steps"], int) and 0 <= group["ns_steps"] < 100):
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        if len(group["ns_coefficients"]) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        for p in group["params"]:
            if p.ndim != 2 and not (group["flatten"] and p.ndim > 2):
                raise ValueError(
                    "Muon only supports 2D parameters whereas we found a parameter with size: "
                    f"{p.size()} (flatten=True takes conv weights as [out, -1] matrices; "
                    "put other parameters in a use_muon=False group: see muon_param_groups)"
                )

    def _counts_steps(self, group: dict) -> bool:
        return not group["use_muon"]  # AdamW's bias corrections need it; Muon keeps none

    @classmethod
    def param_groups_for(
        cls, model: nn.Module, *, muon: dict | None = None, adamw: dict | None = None, head=None
    ) -> list[dict]:
        """A whole model's param groups (:func:`muon_param_groups`): its hidden matrices on
        Muon, the rest on AdamW. Without ``muon`` settings the Muon group uses
        ``adjust_lr_fn="match_rms_adamw"``, so one ``lr`` and ``weight_decay`` (the
        constructor's) suit both groups, as in Liu et al. (arXiv:2502.16982)."""
        muon = {"adjust_lr_fn": "match_rms_adamw"} if muon is None else muon
        return muon_param_groups(model, muon=muon, adamw=adamw, head=head)

    fallback = "AdamW"

    @classmethod
    def own_share(cls, model: nn.Module) -> float:
        """The hidden matrices' share of ``model``'s trainable elements (0 for a model without
        any: a linear model, a vector of coordinates)."""
        groups = cls.param_groups_for(model)
        total = sum(p.numel() for g in groups for p in g["params"])
        own = sum(p.numel() for g in groups if g.get("use_muon", True) for p in g["params"])
        return own / total if total else 0.0

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        *,
        muon: dict | None = None,
        adamw: dict | None = None,
        head=None,
        **kwargs,
    ) -> Muon:
        """``Muon(Muon.param_groups_for(model, ...), **kwargs)``: one optimizer for a whole
        model, e.g. ``Muon.for_model(model, lr=1e-3, weight_decay=0.1)`` (one lr for both
        groups), or with Keller Jordan's settings ``Muon.for_model(model, muon={"lr": 0.02,
        "adjust_lr_fn": None}, adamw={"lr": 3e-4, "betas": (0.9, 0.95)})``."""
        return cls(cls.param_groups_for(model, muon=muon, adamw=adamw, head=head), **kwargs)

    @classmethod
    def min_bytes_per_element(cls, group: dict) -> int:
        """Read θ, g and b, write θ and b (20 B); Newton–Schulz works on a matrix of the
        parameter's size in ns_dtype several times, but it is bound by its products' FLOPs,
        which the benchmark measures against ``torch.mm`` instead."""
        return 20

    def _update(self, s: StepInputs) -> None:
        group = s.group
        g = self._gradient(s)
        if not group["use_muon"]:
            adam_step(s, g)  # AdamW: the decay was decoupled by _gradient
            return
        ops, mu = s.ops, group["momentum"]
        b = s.state["momentum_buffer"]
        if group["momentum_form"] == "ema":
            ops.lerp_(b, g, 1.0 - mu)
            u = ops.lerp(g, b, mu) if group["nesterov"] else b
        else:
            ops.mul_(b, mu)
            ops.add_(b, g)
            u = ops.add(g, b, alpha=mu) if group["nesterov"] else b
        a, bb, c = group["ns_coefficients"]
        o = ops.newton_schulz(
            ops.as_matrix(u),
            a=a,
            b=bb,
            c=c,
            steps=group["ns_steps"],
            eps=group["eps"],
            dtype=group["ns_dtype"],
        )
        lr, fn = group["lr"], group["adjust_lr_fn"]
        ops.add_(s.params, ops.reshape_as(o, u), [-adjusted_lr(lr, fn, sh) for sh in s.shapes])


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """Muon's per-matrix lr for a parameter of ``shape`` (A rows, B = the rest flattened)."""
    rows, cols = shape[0], math.prod(shape[1:])
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1.0, rows / cols)) if cols else lr


def muon_param_groups(
    model: nn.Module,
    *,
    muon: dict | None = None,
    adamw: dict | None = None,
    head: nn.Module | None = None,
) -> list[dict]:
    """Param groups for :class:`Muon` over a whole model, the way Muon's authors train one:
    the hidden weight matrices of ``nn.Linear`` and convolution layers on Muon (convolutions
    flattened), everything else on AdamW (``use_muon=False``): embeddings, 1-D parameters
    (biases, norms), the output head (``head``, by default the last ``nn.Linear`` in module
    order) and any weight tied to an embedding. Parameters that do not require gradients are
    left out. ``muon`` and ``adamw`` add settings to each group (``{"lr": 3e-4}``); what they
    leave out comes from the optimizer's constructor, except AdamW's ``eps``, 1e-8 (the
    constructor's ``eps`` is Newton–Schulz's).

    >>> opt = optimlab.Muon(muon_param_groups(model, adamw={"lr": 3e-4}), lr=0.02)  # doctest: +SKIP
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    head = head if head is not None else (linears[-1] if linears else None)
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    skip = embedded | ({id(p) for p in head.parameters()} if head is not None else set())
    hidden, seen = [], set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = module.weight
            if w.requires_grad and id(w) not in skip and id(w) not in seen:
                hidden.append(w)
                seen.add(id(w))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups = [
        {"params": hidden, "flatten": True, **(muon or {})},
        {"params": rest, "use_muon": False, "eps": 1e-8, **(adamw or {})},
    ]
    return [g for g in groups if g["params"]]
