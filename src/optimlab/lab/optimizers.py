"""The single place where the lab turns an optimizer spec into a ``torch.optim.Optimizer``.

Everything in the lab builds optimizers through :func:`build_optimizer`, so the protocol, the
lr finder and the trajectories all see exactly the same objects as a user of
:func:`optimlab.create_optimizer` would. Specs are read by :mod:`optimlab.lab.specs`; this
module checks them by building each once (:func:`parse_optimizers`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

import torch

from optimlab.lab.errors import LabError
from optimlab.lab.specs import OptimizerSpec, parse_optimizer, registry_names


def describe_optimizer(name: str) -> str:
    """One line about a registry optimizer: the first sentence of its class docstring (which
    names the method and its paper), with the reStructuredText markup removed."""
    from optimlab import get_optimizer_class

    doc = inspect.getdoc(get_optimizer_class(name)) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    depth, end = 0, len(paragraph)
    for i, char in enumerate(paragraph):
        depth += char in "([{"
        depth -= char in ")]}"
        # A sentence ends at ". " outside parentheses ("Alg. 2" inside them does not count).
        if char == "." and depth == 0 and paragraph[i + 1 : i + 2] in (" ", ""):
            end = i + 1
            break
    sentence = paragraph[:end]
    sentence = re.sub(r":\w+:`~?([^`]+)`", r"\1", sentence)  # :class:`Adam` -> Adam
    return sentence.replace("``", "")


def build_optimizer(
    spec: OptimizerSpec | str,
    params: Iterable[torch.Tensor] | Iterable[dict] | torch.nn.Module,
    *,
    engine: str = "auto",
    **hparams: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer described by ``spec`` over ``params``: tensors, param groups, or
    a whole model, which the optimizer's class splits as it is meant to be used
    (:meth:`optimlab.optim.Optimizer.param_groups_for`: Muon takes the hidden matrices and
    gives the rest to AdamW).

    ``hparams`` (for example the ``lr`` chosen by tuning) override the spec's own values.
    Bad names and bad hyperparameter values raise :class:`LabError` with the optimizer's own
    message (torch's style, e.g. ``Invalid learning rate: -1.0``).
    """
    if isinstance(spec, str):
        spec = parse_optimizer(spec)
    from optimlab import create_optimizer, get_optimizer_class

    if isinstance(params, torch.nn.Module):
        params = get_optimizer_class(spec.name).param_groups_for(params)
    kwargs = {**spec.hparams, **hparams}
    try:
        return create_optimizer(spec.name, params, engine=engine, **kwargs)
    except TypeError as exc:
        # An unexpected keyword argument: name the key and the spec rather than __init__.
        raise LabError(f"bad hyperparameter for optimizer '{spec.label}': {exc}") from None
    except ValueError as exc:
        raise LabError(f"bad hyperparameter for optimizer '{spec.label}': {exc}") from None


def validate_spec(spec: OptimizerSpec) -> None:
    """Build the optimizer on a throwaway parameter and take one step, so mistakes (a bad
    value, or one of the wrong type that only the update would trip over) show before any run.
    """
    # A matrix, so that optimizers made for weight matrices (orthogonalising, factored
    # second moments) take their step too; a closure, for those that re-evaluate the loss.
    dummy = torch.ones(2, 2, requires_grad=True)
    lr = spec.fixed_lr if spec.fixed_lr is not None else 1e-3
    optimizer = build_optimizer(spec, [dummy], lr=lr)

    def closure():
        optimizer.zero_grad()
        loss = (dummy**2).sum()
        loss.backward()
        return loss

    try:
        optimizer.step(closure)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise LabError(f"bad hyperparameter for optimizer '{spec.label}': {exc}") from None


def parse_optimizers(texts: Iterable[str]) -> list[OptimizerSpec]:
    """Parse and validate several specs; duplicates (same label) are dropped, order kept."""
    known = registry_names()
    specs: list[OptimizerSpec] = []
    for text in texts:
        spec = parse_optimizer(text, known)
        validate_spec(spec)
        if spec.label not in {s.label for s in specs}:
            specs.append(spec)
    if not specs:
        raise LabError("no optimizers given")
    return specs


def state_bytes_per_param(optimizer: torch.optim.Optimizer) -> float:
    """Bytes of optimizer state per model parameter (AlgoPerf-style memory cost).

    Sums the storage of every tensor in ``optimizer.state`` (moments, buffers, step counters)
    and divides by the number of scalar parameters in the param groups. Call it after at least
    one step: most optimizers create their state lazily.
    """
    n_params = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    state_bytes = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                state_bytes += value.numel() * value.element_size()
    return state_bytes / max(n_params, 1)
