"""One spec per optimizer, derived from what each class declares about itself.

Every generic test in test_optimizers.py (and test_fused.py, test_dropin.py) loops over these.
An optimizer class declares its ``configs``, ``invalid_configs``, ``torch_twin`` and
``supports_complex`` (see :mod:`optimlab.optim.spec`); nothing here is written per optimizer.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field

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
    shapes: tuple = ()  # parameter shapes the generic tests use

    @property
    def torch_exact(self) -> bool:
        """Whether the generic tests hold the optimizer to its torch twin to rounding: it has
        one, and no option that changes the arithmetic's precision (Muon's bfloat16
        Newton–Schulz turns rounding differences into bfloat16 steps; its own tests compare
        it with torch.optim.Muon)."""
        return self.torch_cls is not None and not self.cls.precision_options

    @property
    def torch_shapes(self) -> tuple:
        """``shapes`` without the empty tensor where the torch twin cannot step one
        (torch.optim.Adafactor divides by the element count)."""
        if self.torch_cls is None or _steps_empty(self.torch_cls, self.torch_fixed):
            return self.shapes
        return tuple(s for s in self.shapes if 0 not in s)

    def shape(self, n: int) -> tuple[int, ...]:
        """A shape of ``n`` elements the optimizer takes: a vector, or for one of matrices
        only a 2 × n/2 matrix."""
        return (2, n // 2) if self.shapes is MATRIX_SHAPES else (n,)


#: a matrix, a scalar, an empty tensor, a vector
SHAPES = ((3, 4), (), (0,), (5,))
#: for optimizers of matrices only: wide, tall, empty, square
MATRIX_SHAPES = ((3, 4), (4, 2), (0, 3), (5, 5))


def _steps_empty(torch_cls, fixed: dict) -> bool:
    import torch

    p = torch.zeros(0, 3, requires_grad=True)
    p.grad = torch.zeros(0, 3)
    try:
        torch_cls([p], **fixed).step()
    except (ZeroDivisionError, RuntimeError, ValueError):
        return False
    return True


def torch_kwargs(spec: OptimizerSpec, kwargs: dict) -> dict | None:
    """The torch.optim constructor arguments computing the same thing, or None if none do.

    An argument torch's twin also takes passes through; an optimlab-only option must be at its
    default (the defaults are torch's behaviour); ``weight_decay_mode`` maps onto torch's
    ``decoupled_weight_decay`` where the twin has it, else must be the class's default."""
    if spec.torch_cls is None:
        return None
    theirs = inspect.signature(spec.torch_cls).parameters
    ours = inspect.signature(spec.cls).parameters
    out = dict(spec.torch_fixed)
    for key, value in kwargs.items():
        if key == "engine":
            continue
        if key == "weight_decay_mode":
            if value == "scheduled":
                return None
            if "decoupled_weight_decay" in theirs:
                out["decoupled_weight_decay"] = value == "decoupled"
            elif value != ours[key].default:
                return None
        elif key in theirs:
            out[key] = value
        elif value != ours[key].default:
            return None
    return out


def _common_errors(cls) -> tuple[tuple[dict, str], ...]:
    """The errors every optimizer raises, in its twin's words (``lr_message``...)."""
    lr, wd = cls.lr_message, cls.weight_decay_message

    def decay(value) -> str:
        return re.escape(wd.format(name="weight_decay", value=value))

    return (
        ({"lr": -1.0}, re.escape(lr.format(-1.0))),
        ({"lr": NAN}, re.escape(lr.format(NAN))),
        ({"weight_decay": -0.1}, decay(-0.1)),
        ({"weight_decay": NAN}, decay(NAN)),
        ({"weight_decay_mode": "adamw"}, r"Invalid weight_decay_mode: 'adamw'"),
        ({"engine": "cuda"}, r"Invalid engine: 'cuda'"),
    )


def _signature_errors(cls) -> tuple[tuple[dict, str], ...]:
    """The errors every optimizer with ``betas`` (a pair) or a float ``eps`` must raise."""
    parameters = inspect.signature(cls).parameters
    errors: tuple[tuple[dict, str], ...] = ()
    if "betas" in parameters:
        errors += (
            ({"betas": (1.0, 0.999)}, r"Invalid beta parameter at index 0: 1.0"),
            ({"betas": (0.9, 1.0)}, r"Invalid beta parameter at index 1: 1.0"),
            ({"betas": (-0.1, 0.9)}, r"Invalid beta parameter at index 0: -0.1"),
            ({"betas": (NAN, 0.9)}, r"Invalid beta parameter at index 0: nan"),
            ({"betas": (0.9, NAN)}, r"Invalid beta parameter at index 1: nan"),
        )
    if isinstance(parameters.get("eps") and parameters["eps"].default, float):
        errors += (
            ({"eps": -1e-8}, r"Invalid epsilon value: -1e-08"),
            ({"eps": NAN}, r"Invalid epsilon value: nan"),
        )
    return errors


def _spec(name: str, cls) -> OptimizerSpec:
    twin = cls.torch_twin
    invalid = tuple((config, re.escape(message)) for config, message in cls.invalid_configs)
    return OptimizerSpec(
        name,
        cls,
        configs=cls.configs,
        error_configs=_signature_errors(cls) + invalid,
        torch_cls=twin.cls if twin is not None else None,
        torch_fixed=dict(twin.fixed) if twin is not None else {},
        supports_complex=cls.supports_complex,
        shapes=MATRIX_SHAPES if cls.matrix_only else SHAPES,
    )


SPECS: tuple[OptimizerSpec, ...] = tuple(
    _spec(name, cls) for name, cls in optimlab.optim.OPTIMIZERS.items()
)

SPEC_BY_NAME = {s.name: s for s in SPECS}


def spec_configs():
    """``(spec, config)`` pairs with readable test ids."""
    for spec in SPECS:
        for i, cfg in enumerate(spec.configs):
            yield spec, cfg, f"{spec.name}-{i}"
