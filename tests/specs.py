"""One spec per optimizer; every generic test in test_optimizers.py loops over these.

Adding an optimizer means adding a spec here; ``test_registry_completeness`` fails otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

import optimlab

NAN = math.nan


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # registry name, also the key into optimlab.reference.REFERENCES
    cls: type
    configs: tuple[dict, ...]  # every convention switch appears in at least one
    error_configs: tuple[tuple[dict, str], ...] = ()
    torch_cls: type | None = None  # torch.optim class computing the same algorithm
    torch_fixed: dict = field(default_factory=dict)  # torch kwargs implied by the class
    supports_complex: bool = True


# Options that only optimlab has; a config that sets any of them away from the torch value
# has no torch twin.
_OURS_TORCH_VALUE = {
    "momentum_form": "torch",
    "eps_inside_sqrt": False,
    "amsgrad_form": "raw",
    "rectify_threshold": 5.0,
    "below_threshold": "sgd",
    "engine": None,
}


def torch_kwargs(spec: OptimizerSpec, kwargs: dict) -> dict | None:
    """The torch.optim constructor arguments computing the same thing, or None if none do."""
    if spec.torch_cls is None:
        return None
    out = dict(spec.torch_fixed)
    for key, value in kwargs.items():
        if key in _OURS_TORCH_VALUE:
            if key != "engine" and value != _OURS_TORCH_VALUE[key]:
                return None
            continue
        if key == "weight_decay_mode":
            if value == "scheduled":
                return None
            if spec.torch_cls in (torch.optim.Adam, torch.optim.RAdam, torch.optim.NAdam):
                out["decoupled_weight_decay"] = value == "decoupled"
            elif spec.torch_cls is torch.optim.AdamW:
                if value != "decoupled":
                    return None
            elif value != "l2":
                return None
            continue
        out[key] = value
    if spec.cls is optimlab.AdamW and "weight_decay" not in out:
        out["weight_decay"] = 1e-2
    return out


def _common_errors() -> tuple[tuple[dict, str], ...]:
    return (
        ({"lr": -1.0}, r"Invalid learning rate: -1.0"),
        ({"lr": NAN}, r"Invalid learning rate: nan"),
        ({"weight_decay": -0.1}, r"Invalid weight_decay value: -0.1"),
        ({"weight_decay": NAN}, r"Invalid weight_decay value: nan"),
        ({"weight_decay_mode": "adamw"}, r"Invalid weight_decay_mode: 'adamw'"),
        ({"engine": "cuda"}, r"Invalid engine: 'cuda'"),
    )


def _beta_errors() -> tuple[tuple[dict, str], ...]:
    return (
        ({"betas": (1.0, 0.999)}, r"Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, 1.0)}, r"Invalid beta parameter at index 1: 1.0"),
        ({"betas": (-0.1, 0.9)}, r"Invalid beta parameter at index 0: -0.1"),
        ({"betas": (NAN, 0.9)}, r"Invalid beta parameter at index 0: nan"),
        ({"betas": (0.9, NAN)}, r"Invalid beta parameter at index 1: nan"),
        ({"eps": -1e-8}, r"Invalid epsilon value: -1e-08"),
        ({"eps": NAN}, r"Invalid epsilon value: nan"),
    )


WD = {"weight_decay": 0.1}

SPECS: tuple[OptimizerSpec, ...] = (
    OptimizerSpec(
        "sgd",
        optimlab.SGD,
        configs=(
            {"lr": 0.05},
            {"lr": 0.05, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True},
            {"lr": 0.05, "momentum": 0.8, "nesterov": True, "maximize": True, **WD},
            {"lr": 0.05, "momentum": 0.9, "momentum_form": "sutskever"},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "momentum_form": "sutskever"},
            {"lr": 0.05, "momentum": 0.9, "weight_decay_mode": "decoupled", **WD},
            {"lr": 0.05, "weight_decay_mode": "scheduled", **WD},
        ),
        error_configs=(
            ({"momentum": -0.5}, r"Invalid momentum value: -0.5"),
            ({"momentum": NAN}, r"Invalid momentum value: nan"),
            ({"nesterov": True}, r"Nesterov momentum requires a momentum and zero dampening"),
            (
                {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
                r"Nesterov momentum requires a momentum and zero dampening",
            ),
            ({"momentum_form": "polyak"}, r"Invalid momentum_form: 'polyak'"),
            (
                {"momentum": 0.9, "dampening": 0.5, "momentum_form": "sutskever"},
                r"Invalid dampening value",
            ),
        ),
        torch_cls=torch.optim.SGD,
    ),
    OptimizerSpec(
        "adagrad",
        optimlab.Adagrad,
        configs=(
            {"lr": 0.05},
            {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1, **WD},
            {"lr": 0.05, "maximize": True, "eps": 1e-6},
            {"lr": 0.05, "weight_decay_mode": "decoupled", **WD},
        ),
        error_configs=(
            ({"lr_decay": -1.0}, r"Invalid lr_decay value: -1.0"),
            (
                {"initial_accumulator_value": -1.0},
                r"Invalid initial_accumulator_value value: -1.0",
            ),
            ({"eps": NAN}, r"Invalid epsilon value: nan"),
        ),
        torch_cls=torch.optim.Adagrad,
    ),
    OptimizerSpec(
        "rmsprop",
        optimlab.RMSprop,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "centered": True},
            {"lr": 0.01, "momentum": 0.9},
            {"lr": 0.01, "centered": True, "momentum": 0.9, "alpha": 0.9, **WD},
            {"lr": 0.01, "eps_inside_sqrt": True},
            {"lr": 0.01, "eps_inside_sqrt": True, "centered": True},
            {"lr": 0.01, "maximize": True},
            {"lr": 0.01, "weight_decay_mode": "scheduled", **WD},
        ),
        error_configs=(
            ({"alpha": -0.1}, r"Invalid alpha value: -0.1"),
            ({"momentum": NAN}, r"Invalid momentum value: nan"),
            ({"eps": -1.0}, r"Invalid epsilon value: -1.0"),
        ),
        torch_cls=torch.optim.RMSprop,
    ),
    OptimizerSpec(
        "adadelta",
        optimlab.Adadelta,
        configs=(
            {},
            {"rho": 0.5, "eps": 1e-4, **WD},
            {"lr": 0.5, "maximize": True},
            {"weight_decay_mode": "decoupled", "lr": 0.5, **WD},
        ),
        error_configs=(
            ({"rho": 1.5}, r"Invalid rho value: 1.5"),
            ({"rho": NAN}, r"Invalid rho value: nan"),
            ({"eps": -1.0}, r"Invalid epsilon value: -1.0"),
        ),
        torch_cls=torch.optim.Adadelta,
    ),
    OptimizerSpec(
        "adam",
        optimlab.Adam,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "amsgrad": True},
            {"lr": 0.01, "amsgrad": True, "amsgrad_form": "corrected"},
            {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, **WD},
            {"lr": 0.01, "eps_inside_sqrt": True},
            {"lr": 0.01, "maximize": True, "amsgrad": True},
            {"lr": 0.01, "weight_decay_mode": "decoupled", **WD},
            {"lr": 0.01, "weight_decay_mode": "scheduled", **WD},
        ),
        error_configs=_beta_errors()
        + (({"amsgrad_form": "paper"}, r"Invalid amsgrad_form: 'paper'"),),
        torch_cls=torch.optim.Adam,
    ),
    OptimizerSpec(
        "adamw",
        optimlab.AdamW,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "amsgrad": True, **WD},
            {"lr": 0.01, "weight_decay_mode": "scheduled", **WD},
            {"lr": 0.01, "maximize": True, "betas": (0.5, 0.9)},
        ),
        error_configs=_beta_errors(),
        torch_cls=torch.optim.AdamW,
    ),
    OptimizerSpec(
        "amsgrad",
        optimlab.AMSGrad,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "amsgrad_form": "corrected"},
            {"lr": 0.01, **WD},
        ),
        error_configs=_beta_errors(),
        torch_cls=torch.optim.Adam,
        torch_fixed={"amsgrad": True},
    ),
    OptimizerSpec(
        "radam",
        optimlab.RAdam,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "rectify_threshold": 4.0},
            {"lr": 0.01, "below_threshold": "skip"},
            {"lr": 0.01, "betas": (0.9, 0.99), **WD},
            {"lr": 0.01, "weight_decay_mode": "decoupled", **WD},
            {"lr": 0.01, "maximize": True},
        ),
        error_configs=_beta_errors()
        + (
            ({"rectify_threshold": 3.0}, r"Invalid rectify_threshold value: 3.0"),
            ({"rectify_threshold": NAN}, r"Invalid rectify_threshold value: nan"),
            ({"below_threshold": "adam"}, r"Invalid below_threshold: 'adam'"),
        ),
        torch_cls=torch.optim.RAdam,
    ),
    OptimizerSpec(
        "adamax",
        optimlab.Adamax,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, **WD},
            {"lr": 0.01, "maximize": True},
            {"lr": 0.01, "weight_decay_mode": "decoupled", **WD},
        ),
        error_configs=_beta_errors(),
        torch_cls=torch.optim.Adamax,
    ),
    OptimizerSpec(
        "nadam",
        optimlab.NAdam,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "momentum_decay": 0.01, **WD},
            {"lr": 0.01, "maximize": True},
            {"lr": 0.01, "weight_decay_mode": "decoupled", **WD},
        ),
        error_configs=_beta_errors()
        + (({"momentum_decay": -1.0}, r"Invalid momentum_decay value: -1.0"),),
        torch_cls=torch.optim.NAdam,
    ),
    OptimizerSpec(
        "adabound",
        optimlab.AdaBound,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "amsbound": True},
            {"lr": 0.01, "bounds_follow_lr": False},
            {"lr": 0.01, "final_lr": 0.05, "gamma": 0.01, **WD},
            {"lr": 0.01, "maximize": True},
            {"lr": 0.01, "weight_decay_mode": "decoupled", **WD},
        ),
        error_configs=_beta_errors()
        + (
            ({"final_lr": -0.1}, r"Invalid final learning rate: -0.1"),
            ({"gamma": 1.5}, r"Invalid gamma parameter: 1.5"),
            ({"gamma": NAN}, r"Invalid gamma parameter: nan"),
        ),
    ),
    OptimizerSpec(
        "amsbound",
        optimlab.AMSBound,
        configs=(
            {"lr": 0.01},
            {"lr": 0.01, "gamma": 0.01, "bounds_follow_lr": False},
        ),
        error_configs=_beta_errors(),
    ),
)

SPEC_BY_NAME = {s.name: s for s in SPECS}


def spec_configs():
    """``(spec, config)`` pairs with readable test ids."""
    for spec in SPECS:
        for i, cfg in enumerate(spec.configs):
            yield spec, cfg, f"{spec.name}-{i}"
