"""`HyperparamScheduler`: drive any param-group hyperparameter of any optimizer by a schedule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from optimlab.schedules._param_group import GroupSlot

StepFn = Callable[[int], float]


def _group_lrs(optimizer: Optimizer) -> list[float]:
    return [
        g["lr"].item() if isinstance(g["lr"], Tensor) else g["lr"] for g in optimizer.param_groups
    ]


class HyperparamScheduler(LRScheduler):
    """Set ``group[key]`` (or ``group[key][index]``) to ``schedule(t)`` at every step ``t``.

    Works on any ``torch.optim.Optimizer``: ``key="lr"``, ``"weight_decay"``, ``"momentum"``,
    ``"beta1"``/``"beta2"`` (shorthands for ``key="betas", index=0/1``), or any other number
    kept in the param groups. Several schedulers may drive different keys of one optimizer.

    Like torch's schedulers, constructing applies the value of step 0 and each ``step()``
    (called after ``optimizer.step()``) advances one step. ``schedule`` is one step function
    for all groups, or a sequence with one per group where ``None`` leaves that group alone.

    Values are absolute, unless ``relative=True``: then the applied value is
    ``base · schedule(t)``, with ``base`` each group's value at construction (as
    ``LambdaLR``), so one shape serves groups with different base values.

    Driving ``lr``, it records ``group["initial_lr"]`` if absent, as torch's schedulers do.
    optimlab's optimizers read it for the AdamW paper's decay multiplier
    ``η = lr / initial_lr``: build the optimizer with ``lr`` = the schedule's peak (or use
    ``relative=True``) so that ``η`` is the schedule's multiplier.

    ``state_dict()`` holds only numbers (it loads with ``torch.load(weights_only=True)``);
    the schedules are code, passed again to the constructor. ``load_state_dict`` re-applies
    the values of the restored step, so the order of loading the optimizer and the scheduler
    does not matter. It subclasses ``LRScheduler`` for ``isinstance`` checks (Lightning etc.)
    but, as torch's ``ReduceLROnPlateau``, not its constructor, which only knows ``lr``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: StepFn | Sequence[StepFn | None],
        key: str = "lr",
        *,
        index: int | None = None,
        relative: bool = False,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        self.slot = GroupSlot.resolve(key, index)
        self.relative = bool(relative)
        groups = optimizer.param_groups
        if callable(schedule):
            schedules = [schedule] * len(groups)
        else:
            schedules = list(schedule)
            if len(schedules) != len(groups):
                raise ValueError(
                    f"expected one schedule per param group ({len(groups)}), got {len(schedules)}"
                )
        for s in schedules:
            if s is not None and not callable(s):
                raise TypeError(f"a schedule must be callable step -> value or None, got {s!r}")
        self.schedules: list[StepFn | None] = schedules
        self.slot.check(groups, [i for i, s in enumerate(schedules) if s is not None])
        if self.slot == GroupSlot("lr"):
            # As torch's schedulers: record the base lr, which other schedulers and the
            # AdamW paper's decay multiplier η = lr / initial_lr read; keep an existing one.
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        self.base_values = [
            self.slot.get(g) if s is not None else None
            for g, s in zip(groups, schedules, strict=True)
        ]
        self.last_epoch = -1
        self._step_count = 0
        self.step()

    @property
    def key(self) -> str:
        """The scheduled hyperparameter, e.g. ``"lr"`` or ``"betas[0]"``."""
        return str(self.slot)

    def values_at(self, step: int) -> list[float | None]:
        """The value each group gets at ``step`` (``None`` for unscheduled groups)."""
        values: list[float | None] = []
        for s, base in zip(self.schedules, self.base_values, strict=True):
            if s is None:
                values.append(None)
            else:
                v = float(s(step))
                values.append(base * v if self.relative else v)
        return values

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (or, given ``epoch``, jump to it: schedules are closed-form)."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self._step_count += 1
        self._apply()

    def _apply(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.schedules):
            raise RuntimeError(
                f"the optimizer has {len(groups)} param groups but the scheduler was built "
                f"for {len(self.schedules)}; build a new scheduler after add_param_group"
            )
        for group, value in zip(groups, self.values_at(self.last_epoch), strict=True):
            if value is not None:
                self.slot.set(group, value)
        self._last_values = [
            self.slot.get(g) if s is not None else None
            for g, s in zip(groups, self.schedules, strict=True)
        ]
        self._last_lr = _group_lrs(self.optimizer)

    def get_last_value(self) -> list[float | None]:
        """The scheduled hyperparameter of each group after the last step (``None`` where
        the group is not scheduled)."""
        return list(self._last_values)

    def get_last_lr(self) -> list[float]:
        """Each group's learning rate after the last step, whatever ``key`` is scheduled, so
        loggers that call ``get_last_lr`` never mistake e.g. beta1 for an lr."""
        return list(self._last_lr)

    def get_lr(self) -> list[float]:
        """Same as `get_last_lr` (the values are computed in closed form at each step)."""
        return self.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.slot.key,
            "index": self.slot.index,
            "relative": self.relative,
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "base_values": list(self.base_values),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = GroupSlot(state_dict["key"], state_dict["index"])
        if saved != self.slot or state_dict["relative"] != self.relative:
            raise ValueError(
                f"state_dict is for key={str(saved)!r} relative={state_dict['relative']}, "
                f"this scheduler drives key={self.key!r} relative={self.relative}"
            )
        if len(state_dict["base_values"]) != len(self.schedules):
            raise ValueError(
                f"state_dict has {len(state_dict['base_values'])} param groups, "
                f"this scheduler has {len(self.schedules)}"
            )
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        self.base_values = list(state_dict["base_values"])
        self._apply()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key={self.key!r}, step={self.last_epoch}, "
            f"relative={self.relative}, schedules={self.schedules!r})"
        )
