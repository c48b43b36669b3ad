"""`initialize`: apply a named scheme to every weight of a model, with per-type rules."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from optimlab.init._table import format_table
from optimlab.init.schemes import DEFAULT_NONLINEARITY, SCHEMES

# A rule maps a module type to a scheme name, (name, kwargs), or None to leave it alone.
Rule = str | tuple[str, Mapping[str, Any]] | None


@dataclass(frozen=True)
class InitRecord:
    """One parameter that `initialize` set."""

    name: str  # qualified parameter name, e.g. "encoder.0.weight"
    module: str  # module class, e.g. "Linear"
    scheme: str  # scheme with its arguments, e.g. "kaiming_normal(gain=1.41, mode='fan_in')"
    shape: tuple[int, ...]
    std: float  # standard deviation of the values now in the parameter


@dataclass(frozen=True)
class InitSummary:
    """What `initialize` did: one `InitRecord` per parameter set, and the weights it left."""

    records: tuple[InitRecord, ...]
    skipped: tuple[str, ...] = field(default=())  # weights a rule mapped to None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def table(self) -> str:
        rows = [(r.name, r.module, r.scheme, r.shape, r.std) for r in self.records]
        rows += [(name, "", "left as is (rule None)", None, None) for name in self.skipped]
        return format_table(["parameter", "module", "scheme", "shape", "std"], rows)

    def __str__(self) -> str:
        return self.table()


def is_weight(name: str, param: torch.Tensor) -> bool:
    """A weight matrix or kernel: ``weight`` and names like ``in_proj_weight``,
    ``weight_ih_l0``, of dim ≥ 2. Norm layers' 1-D weights do not count."""
    return "weight" in name and param.dim() >= 2


def is_bias(name: str) -> bool:
    return name == "bias" or name.startswith("bias_") or name.endswith("_bias")


def _unknown_scheme(name: object) -> ValueError:
    known = ", ".join(sorted(SCHEMES))
    return ValueError(f"Unknown init scheme {name!r}; known schemes: {known}")


def _resolve(name: str, kwargs: Mapping[str, Any], nonlinearity: str | None) -> dict[str, Any]:
    """Check ``name`` and ``kwargs`` and fill in the gain, before any weight is touched."""
    if name not in SCHEMES:
        raise _unknown_scheme(name)
    accepted = [p for p in inspect.signature(SCHEMES[name]).parameters if p != "tensor"]
    # generator comes from initialize's own argument, never from a scheme's kwargs.
    unknown = sorted((set(kwargs) - set(accepted)) | (set(kwargs) & {"generator"}))
    if unknown:
        options = ", ".join(p for p in accepted if p != "generator") or "nothing"
        raise TypeError(f"init scheme {name!r} takes {options}; got {', '.join(unknown)}")
    kwargs = dict(kwargs)
    if name in DEFAULT_NONLINEARITY and "gain" not in kwargs:
        kwargs["gain"] = nn.init.calculate_gain(nonlinearity or DEFAULT_NONLINEARITY[name])
    return kwargs


def _describe(name: str, kwargs: Mapping[str, Any]) -> str:
    args = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in kwargs.items()
    )
    return f"{name}({args})"


def initialize(
    model: nn.Module,
    scheme: str | None,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    bias: str | float = "zeros",
    rules: Mapping[type, Rule] | None = None,
    nonlinearity: str | None = None,
    **scheme_kwargs: Any,
) -> InitSummary:
    """Initialise every weight of ``model`` (in place) and return what was done.

    Weights are the parameters of dim ≥ 2 whose name contains ``weight`` (``Linear``,
    ``Conv1d/2d/3d``, ``Embedding``, RNN and attention projections...); norm layers' 1-D
    weights and their biases are left alone. The biases of each initialised module are set
    per ``bias``: ``"zeros"`` (default), ``"keep"``, or a number to fill them with.

    ``scheme`` is one of `SCHEMES` (or ``None`` to touch only modules named in ``rules``);
    ``scheme_kwargs`` are its arguments (``a``, ``std``, ``bound``, ``gain``, ``mode``).
    ``rules`` maps module types to a scheme name, ``(name, kwargs)``, or ``None`` to skip;
    the most specific type in a module's MRO wins. ``nonlinearity`` ("relu", "tanh"...)
    sets the gain ``torch.nn.init.calculate_gain(nonlinearity)`` of every gain-taking scheme
    without an explicit ``gain``; by default kaiming uses ``"relu"`` (``√2``) and xavier,
    lecun and orthogonal ``"linear"`` (1).

    Reproducible: ``seed`` draws from a fresh CPU ``torch.Generator`` (the same weights on
    any device, and the global RNG is not touched); ``generator`` draws from yours; neither
    uses the global RNG. A tied parameter is initialised once.
    """
    if generator is not None and seed is not None:
        raise ValueError("pass generator or seed, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    if not (bias in ("zeros", "keep") or isinstance(bias, numbers.Real)):
        raise ValueError(f"Invalid bias: {bias!r} (expected 'zeros', 'keep' or a number)")

    # Resolve every scheme first, so a typo fails before any weight changes.
    default = None if scheme is None else (scheme, _resolve(scheme, scheme_kwargs, nonlinearity))
    if scheme is None and scheme_kwargs:
        raise TypeError(f"scheme=None takes no scheme arguments; got {', '.join(scheme_kwargs)}")
    resolved_rules: dict[type, tuple[str, dict[str, Any]] | None] = {}
    for module_type, rule in (rules or {}).items():
        if rule is None:
            resolved_rules[module_type] = None
            continue
        name, kwargs = (rule, {}) if isinstance(rule, str) else rule
        if not isinstance(name, str):
            raise _unknown_scheme(name)
        resolved_rules[module_type] = (name, _resolve(name, kwargs, nonlinearity))

    records: list[InitRecord] = []
    skipped: list[str] = []
    seen: set[int] = set()
    with torch.no_grad():
        for module_name, module in model.named_modules():
            own = list(module.named_parameters(recurse=False))
            weights = [(n, p) for n, p in own if is_weight(n, p) and id(p) not in seen]
            if not weights:
                continue
            prefix = f"{module_name}." if module_name else ""
            spec = default
            for cls in type(module).__mro__:
                if cls in resolved_rules:
                    spec = resolved_rules[cls]
                    break
            if spec is None:
                skipped.extend(prefix + n for n, _ in weights)
                continue
            name, kwargs = spec
            for n, p in weights:
                seen.add(id(p))
                SCHEMES[name](p, generator=generator, **kwargs)
                records.append(
                    InitRecord(
                        prefix + n,
                        type(module).__name__,
                        _describe(name, kwargs),
                        tuple(p.shape),
                        p.float().std(correction=0).item(),
                    )
                )
            if bias == "keep":
                continue
            for n, p in own:
                if is_bias(n) and p is not None and id(p) not in seen:
                    seen.add(id(p))
                    fill = 0.0 if bias == "zeros" else float(bias)
                    p.fill_(fill)
                    label = "zeros" if bias == "zeros" else f"constant({fill:g})"
                    records.append(
                        InitRecord(prefix + n, type(module).__name__, label, tuple(p.shape), 0.0)
                    )
    return InitSummary(tuple(records), tuple(skipped))
