"""`ReduceOnPlateau`: cut a hyperparameter by ``factor`` when a metric stops improving."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from optimlab.schedules._param_group import GroupSlot
from optimlab.schedules.base import check_choice, check_range, check_steps


class ReduceOnPlateau(LRScheduler):
    """Multiply ``group[key]`` by ``factor`` after ``patience`` epochs without improvement.

    Call ``step(metric)`` once per epoch (or evaluation). With ``best`` the best metric so
    far, a metric ``x`` improves on it when (``mode``, ``threshold_mode``)::

        min, rel:  x < best · (1 − threshold)      max, rel:  x > best · (1 + threshold)
        min, abs:  x < best − threshold            max, abs:  x > best + threshold

    Each epoch that does not improve counts as bad. At the ``(patience + 1)``-th consecutive
    bad epoch each group's value becomes ``max(value · factor, min_value)`` (a change smaller
    than ``eps`` is skipped), the bad count resets, and the next ``cooldown`` epochs are not
    counted. NaN never improves. The rule and defaults are those of
    ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (including its relative threshold for
    negative metrics), for any key: ``"lr"``, ``"weight_decay"``, ``"momentum"``,
    ``"beta1"``... It is stateful: ``state_dict()`` (numbers only) holds ``best``, the bad and
    cooldown counters and the epoch; the values themselves live in the optimizer's
    param groups, so checkpoint the optimizer too.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        key: str = "lr",
        *,
        index: int | None = None,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_value: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        check_choice("mode", mode, ("min", "max"))
        check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        check_range("factor", factor, 0.0, 1.0, open_hi=True)
        check_steps("patience", patience)
        check_steps("cooldown", cooldown)
        check_range("threshold", threshold, 0.0, math.inf, open_hi=True)
        check_range("eps", eps, 0.0, math.inf, open_hi=True)
        self.optimizer = optimizer
        self.slot = GroupSlot.resolve(key, index)
        groups = optimizer.param_groups
        self.slot.check(groups, list(range(len(groups))))
        if isinstance(min_value, numbers.Real):
            min_values = [float(min_value)] * len(groups)
        else:
            min_values = [float(m) for m in min_value]
            if len(min_values) != len(groups):
                raise ValueError(f"expected {len(groups)} min_values, got {len(min_values)}")
        self.min_values = min_values
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor, self.patience, self.cooldown = factor, patience, cooldown
        self.threshold, self.eps = threshold, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._record()

    @property
    def key(self) -> str:
        return str(self.slot)

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def is_better(self, metric: float, best: float) -> bool:
        if self.mode == "min":
            bar = (
                best * (1.0 - self.threshold)
                if self.threshold_mode == "rel"
                else best - self.threshold
            )
            return metric < bar
        bar = (
            best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold
        )
        return metric > bar

    def step(self, metric: float | Tensor) -> None:  # type: ignore[override]
        """Record one epoch's ``metric`` and reduce the values if it has plateaued."""
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            # Bad epochs right after a reduction are the reduction settling, not a plateau.
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._record()

    def _reduce(self) -> None:
        for group, floor in zip(self.optimizer.param_groups, self.min_values, strict=True):
            old = self.slot.get(group)
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                self.slot.set(group, new)

    def _record(self) -> None:
        groups = self.optimizer.param_groups
        self._last_values = [self.slot.get(g) for g in groups]
        self._last_lr = [g["lr"].item() if isinstance(g["lr"], Tensor) else g["lr"] for g in groups]

    def get_last_value(self) -> list[float]:
        """The hyperparameter of each group after the last step."""
        return list(self._last_values)

    def get_last_lr(self) -> list[float]:
        """Each group's learning rate after the last step, whatever ``key`` is."""
        return list(self._last_lr)

    def get_lr(self) -> list[float]:
        return self.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.slot.key,
            "index": self.slot.index,
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = GroupSlot(state_dict["key"], state_dict["index"])
        if saved != self.slot:
            raise ValueError(f"state_dict is for key={str(saved)!r}, this one is {self.key!r}")
        self.best = float(state_dict["best"])
        self.num_bad_epochs = int(state_dict["num_bad_epochs"])
        self.cooldown_counter = int(state_dict["cooldown_counter"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._record()
