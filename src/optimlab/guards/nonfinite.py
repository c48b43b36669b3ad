r"""Skip optimizer steps whose gradients contain NaN or Inf.

One overflowing batch should not destroy a run: a single NaN reaching Adam's
:math:`v_t` poisons that parameter for good. The guard looks at every gradient before the
inner step; if any element is not finite, the inner ``step()`` is **not called**, so the
parameters and every state tensor (moments, the ``step`` counter) stay bit-for-bit as they
were, as if the batch had never been seen. This is what mixed-precision loss scaling does
for overflows (``torch.amp.GradScaler``), without the scaling.

Skipped steps are counted (``total_skips``, ``consecutive_skips``). A run whose gradients are
non-finite many steps in a row is not going to recover by itself, so with
``max_consecutive_skips=N`` the N-th consecutive skip raises
:class:`NonFiniteGradientError`, naming the first parameter (in ``param_groups`` order) whose
gradient was not finite. The gradients of a skipped step are left in ``.grad`` for the user
(to inspect, and to clear with ``zero_grad()`` as after any step).

**Every process decides alike.** With sharded gradients (FSDP2's DTensors) each process sees
only its shards; the non-finite counts of a DTensor's shards are summed over the processes
holding them (one all-reduce per step), so a NaN in one process's shard skips the step on all
of them and the counts are those of the whole gradients. With DDP the gradients are averaged
before the step, so a NaN anywhere is a NaN everywhere. Where processes hold different plain
parameters (pipeline stages, hand-split models), pass ``process_group``: the processes of that
group then skip together whenever any of them saw a non-finite gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.core import sharding
from optimlab.guards.base import OptimizerWrapper, evaluate_closure, step_applied
from optimlab.guards.naming import NamedParameters, ParameterNames


class NonFiniteGradientError(RuntimeError):
    """Raised after too many consecutive steps with non-finite gradients.

    Attributes:
        parameter: description of the first parameter with a non-finite gradient at the last
            step, e.g. ``'fc2.weight' (param_groups[0]['params'][3], shape (4, 8))``.
        consecutive_skips: how many steps in a row were skipped.
    """

    def __init__(self, message: str, parameter: str, consecutive_skips: int) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.consecutive_skips = consecutive_skips


#: what ``last_nonfinite_parameter`` says when another process of ``process_group`` saw it
OTHER_PROCESS = "a parameter of another process"


def _count_nonfinite(g: Tensor) -> Tensor:
    if g.is_sparse:
        g = g.coalesce().values()
    return torch.isfinite(g).logical_not().sum()


class NonFiniteGuard(OptimizerWrapper):
    """Skips the inner step when any gradient has a NaN or Inf element.

    Args:
        optimizer: the optimizer to wrap.
        max_consecutive_skips: raise :class:`NonFiniteGradientError` when this many steps in a
            row have been skipped (that step is skipped too before raising). None: never raise.
        named_parameters: where to find parameter names for the error message: a module,
            ``model.named_parameters()``, or a ``{name: tensor}`` mapping. Without it, names
            stored by torch in the param groups are used, else positions.
        process_group: a ``torch.distributed`` process group whose processes must skip
            together although their parameters differ (see the module docstring); sharded
            parameters need none.

    Attributes:
        total_skips: steps skipped since construction (checkpointed).
        consecutive_skips: steps skipped since the last applied step (checkpointed).
        last_step_skipped: whether the last ``step()`` was skipped.
        last_nonfinite_counts: per param group, the number of non-finite gradient elements
            seen at the last step (all zeros when it was applied).
        last_nonfinite_parameter: description of the first offending parameter at the last
            step, or None.
        calls: how many times :meth:`step` ran (tells readers whether the above are fresh).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_consecutive_skips: int | None = None,
        *,
        named_parameters: NamedParameters | None = None,
        process_group: Any = None,
    ) -> None:
        super().__init__(optimizer)
        if max_consecutive_skips is not None and not (
            isinstance(max_consecutive_skips, int) and max_consecutive_skips >= 1
        ):
            raise ValueError(f"Invalid max_consecutive_skips value: {max_consecutive_skips}")
        self.max_consecutive_skips = max_consecutive_skips
        self.names = ParameterNames(named_parameters)
        self.process_group = process_group
        self.total_skips = 0
        self.consecutive_skips = 0
        self.last_step_skipped = False
        self.last_nonfinite_counts: list[int] = [0] * len(self.param_groups)
        self.last_nonfinite_parameter: str | None = None
        self.calls = 0

    def _scan(self) -> tuple[list[int], tuple[int, int, int] | None]:
        """Non-finite counts per group, and (group, index, count) of the first bad
        parameter."""
        where: list[tuple[int, int]] = []
        counts: list[Tensor] = []
        groups: list[tuple] = []
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    where.append((gi, i))
                    counts.append(_count_nonfinite(sharding.local(p.grad)))
                    groups.append(sharding.shard_groups(p.grad))
        per_group = [0] * len(self.param_groups)
        if not counts:
            return per_group, None
        # One host sync for the whole check rather than one per parameter; a sharded
        # gradient's count is that of all its shards (one all-reduce per process group).
        device = counts[0].device
        counts = sharding.all_reduce([n.to(device) for n in counts], groups)
        totals = torch.stack(counts).tolist()
        first = None
        for (gi, i), n in zip(where, totals, strict=True):
            per_group[gi] += n
            if n and first is None:
                first = (gi, i, n)
        return per_group, first

    def _elsewhere(self, seen: bool) -> bool:
        """Whether any process of ``process_group`` saw a non-finite gradient."""
        import torch.distributed as dist

        device = next((p.device for g in self.param_groups for p in g["params"]), None)
        if device is None or dist.get_backend(self.process_group) == "gloo":
            device = torch.device("cpu")
        flag = torch.tensor([int(seen)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.process_group)
        return bool(flag.item())

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        counts, first = self._scan()
        self.calls += 1
        self.last_nonfinite_counts = counts
        skip = first is not None
        if self.process_group is not None:
            skip = self._elsewhere(skip)
        if not skip:
            self.last_nonfinite_parameter = None
            self.last_step_skipped = False
            self.consecutive_skips = 0
            self.optimizer.step()
            self.last_step_applied = step_applied(self.optimizer)
            return loss

        self.last_step_skipped = True
        self.last_step_applied = False
        self.total_skips += 1
        self.consecutive_skips += 1
        if first is None:
            self.last_nonfinite_parameter = OTHER_PROCESS
        else:
            self.last_nonfinite_parameter = self.names.describe(self, *first[:2])
        limit = self.max_consecutive_skips
        if limit is not None and self.consecutive_skips >= limit:
            where = f"{self.last_nonfinite_parameter}"
            if first is not None:
                gi, i, count = first
                grad = self.param_groups[gi]["params"][i].grad
                where += f", with {count} of {grad.numel()} elements non-finite"
            raise NonFiniteGradientError(
                f"non-finite gradients (NaN or Inf) in {self.consecutive_skips} consecutive "
                f"steps (max_consecutive_skips={limit}); all of them were skipped. At the "
                f"last one, the first parameter with a non-finite gradient was {where} "
                f"({sum(counts)} in all parameters).",
                self.last_nonfinite_parameter,
                self.consecutive_skips,
            )
        return loss

    def _guard_state_dict(self) -> dict[str, Any]:
        return {
            "total_skips": self.total_skips,
            "consecutive_skips": self.consecutive_skips,
            "max_consecutive_skips": self.max_consecutive_skips,
        }

    def _load_guard_state_dict(self, state: dict[str, Any]) -> None:
        self.total_skips = int(state["total_skips"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.max_consecutive_skips = state["max_consecutive_skips"]

    def _repr_options(self) -> dict[str, Any]:
        return {"max_consecutive_skips": self.max_consecutive_skips}


def skip_nonfinite(
    optimizer: torch.optim.Optimizer,
    max_consecutive_skips: int | None = None,
    *,
    named_parameters: NamedParameters | None = None,
    process_group: Any = None,
) -> NonFiniteGuard:
    """``optimizer`` with non-finite steps skipped; see :class:`NonFiniteGuard`."""
    return NonFiniteGuard(
        optimizer,
        max_consecutive_skips,
        named_parameters=named_parameters,
        process_group=process_group,
    )
