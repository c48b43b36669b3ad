"""Human-readable names for the parameters of an optimizer.

An error that says "parameter 37 has a NaN gradient" sends the user counting; one that says
``fc2.weight`` does not. Names come, in order of preference, from what the user passed (a
module, or ``named_parameters()`` pairs, or a ``{name: tensor}`` mapping), from the
``param_names`` that torch stores in a param group when the optimizer was built from
``model.named_parameters()``, and otherwise from the parameter's position,
``param_groups[0]['params'][3]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

NamedParameters = torch.nn.Module | Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]


def _name_table(named_parameters: NamedParameters | None) -> dict[int, tuple[str, Tensor]]:
    if named_parameters is None:
        return {}
    if isinstance(named_parameters, torch.nn.Module):
        pairs = named_parameters.named_parameters()
    elif isinstance(named_parameters, Mapping):
        pairs = named_parameters.items()
    else:
        pairs = named_parameters
    table: dict[int, tuple[str, Tensor]] = {}
    for name, p in pairs:
        if not isinstance(name, str) or not isinstance(p, Tensor):
            raise TypeError(
                "named_parameters must be a module, a {name: tensor} mapping or "
                f"(name, tensor) pairs; got an item ({type(name).__name__}, {type(p).__name__})"
            )
        # Keyed by identity (a tensor's == is elementwise); the tensor is kept alongside so
        # that its id cannot be reused by another tensor while the table exists.
        table.setdefault(id(p), (name, p))
    return table


class ParameterNames:
    """Maps (group index, index in group) to a name; see the module docstring."""

    def __init__(self, named_parameters: NamedParameters | None = None) -> None:
        self._table = _name_table(named_parameters)

    @staticmethod
    def position(group_index: int, index: int) -> str:
        return f"param_groups[{group_index}]['params'][{index}]"

    def name(self, optimizer: torch.optim.Optimizer, group_index: int, index: int) -> str | None:
        """The parameter's name if one is known, else None."""
        group = optimizer.param_groups[group_index]
        p = group["params"][index]
        if id(p) in self._table:
            return self._table[id(p)][0]
        names = group.get("param_names")
        if names is not None and index < len(names):
            return names[index]
        return None

    def describe(self, optimizer: torch.optim.Optimizer, group_index: int, index: int) -> str:
        """``'fc2.weight' (param_groups[0]['params'][3], shape (4, 8))`` or without the name."""
        p = optimizer.param_groups[group_index]["params"][index]
        where = self.position(group_index, index)
        shape = tuple(p.shape)
        name = self.name(optimizer, group_index, index)
        if name is None:
            return f"{where} (shape {shape})"
        return f"{name!r} ({where}, shape {shape})"

    def label(self, optimizer: torch.optim.Optimizer, group_index: int, index: int) -> str:
        """A short key for logs: the name, or ``group{g}.param{i}``."""
        name = self.name(optimizer, group_index, index)
        return name if name is not None else f"group{group_index}.param{index}"
