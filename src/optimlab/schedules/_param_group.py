"""Read and write one hyperparameter of a torch param group: ``group[key]`` or an element
``group[key][index]`` such as beta1 in ``group["betas"]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

# Shorthands for the element of ``betas`` that Adam-style optimizers keep as a pair.
ALIASES = {"beta1": ("betas", 0), "beta2": ("betas", 1)}


@dataclass(frozen=True)
class GroupSlot:
    """Names ``group[key]`` (``index is None``) or ``group[key][index]``."""

    key: str
    index: int | None = None

    @classmethod
    def resolve(cls, key: str, index: int | None = None) -> GroupSlot:
        if key in ALIASES:
            if index is not None:
                raise ValueError(f"{key!r} already names an element of 'betas'; drop index")
            return cls(*ALIASES[key])
        return cls(key, index)

    def __str__(self) -> str:
        return self.key if self.index is None else f"{self.key}[{self.index}]"

    def check(self, groups: list[dict[str, Any]], which: list[int]) -> None:
        """Raise a clear error if any group in ``which`` lacks this hyperparameter."""
        for i in which:
            group = groups[i]
            if self.key not in group:
                known = sorted(k for k in group if k != "params")
                raise KeyError(f"param_groups[{i}] has no {self.key!r}; it has {known}")
            value = group[self.key]
            if self.index is None and isinstance(value, (tuple, list)):
                raise ValueError(
                    f"param_groups[{i}][{self.key!r}] is a sequence {tuple(value)!r}; pass "
                    f"index= to pick an element (or key='beta1'/'beta2' for betas)"
                )
            if self.index is not None and not (
                isinstance(value, (tuple, list)) and -len(value) <= self.index < len(value)
            ):
                raise ValueError(
                    f"param_groups[{i}][{self.key!r}] = {value!r} has no element {self.index}"
                )

    def get(self, group: dict[str, Any]) -> float:
        value = group[self.key] if self.index is None else group[self.key][self.index]
        return value.item() if isinstance(value, Tensor) else float(value)

    def set(self, group: dict[str, Any], value: float) -> None:
        # Tensor hyperparameters (capturable/compiled optimizers) are filled in place, so
        # code holding a reference to them sees the new value, as torch's schedulers do.
        if self.index is None:
            if isinstance(group[self.key], Tensor):
                group[self.key].fill_(value)
            else:
                group[self.key] = value
            return
        seq = group[self.key]
        if isinstance(seq[self.index], Tensor):
            seq[self.index].fill_(value)
            return
        items = list(seq)
        items[self.index] = value
        group[self.key] = type(seq)(items)
