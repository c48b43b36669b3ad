"""The common shell of every guard: an optimizer that wraps another optimizer.

A guard must still *be* an optimizer to the code around it: ``torch.optim.lr_scheduler``
refuses anything that is not an instance of :class:`torch.optim.Optimizer`, training loops
read ``param_groups`` and ``state``, call ``zero_grad`` and ``step(closure)``, and checkpoints
go through ``state_dict`` / ``load_state_dict``. So :class:`OptimizerWrapper` subclasses
:class:`torch.optim.Optimizer` but owns no parameters of its own:

* ``param_groups``, ``state`` and ``defaults`` are *properties* that read the wrapped
  optimizer's attributes every time. Sharing the objects once at construction would not be
  enough, because ``torch.optim.Optimizer.load_state_dict`` replaces both the list of groups
  and the state dict with new objects; a scheduler that changes ``lr`` through the wrapper
  therefore always changes the inner optimizer's groups.
* ``state_dict()`` is the inner optimizer's state dict (so ``sd["state"]`` and
  ``sd["param_groups"]`` look exactly like torch's) plus one extra key, ``"optimlab_guards"``:
  a list with one entry per guard, outermost first, each ``{"guard": class name, "state":
  {...}}``. Per-parameter guard tensors (slow weights, averages) are keyed by the parameter's
  position in the flattened ``param_groups``, the same numbering torch uses for ``state``.
  ``load_state_dict`` takes its own entry off the list and hands the rest down, so guards
  nest to any depth, the same guard type may appear twice, and a plain torch optimizer loads
  such a checkpoint by ignoring the extra key.

Guards talk to each other through one attribute, ``last_step_applied``: whether the most recent
``step()`` call changed the parameters. A non-finite guard that skipped, or an accumulator
between micro-batches, sets it to ``False`` so that an outer Lookahead or EMA does not count a
step that did not happen. Plain optimizers do not have the attribute and are taken to always
apply their step (:func:`step_applied`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

GUARDS_KEY = "optimlab_guards"

_G = TypeVar("_G")


class OptimizerWrapper(torch.optim.Optimizer):
    """Base class of the guards: an optimizer that delegates to ``self.optimizer``.

    Subclasses implement :meth:`step` and, when they keep state, :meth:`_guard_state_dict`
    and :meth:`_load_guard_state_dict`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{type(self).__name__} wraps a torch.optim.Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        # Deliberately no Optimizer.__init__: it would build new param groups. We create the
        # hook registries it would have created, so register_step_pre_hook and friends work on
        # the wrapper itself (StepDiagnostics relies on them), and let torch wrap our step()
        # so that those hooks run.
        self.optimizer = optimizer
        self._init_hook_registries()
        self._patch_step_function()
        self.last_step_applied = False

    def _init_hook_registries(self) -> None:
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()

    # -- what makes it look like the inner optimizer ---------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @property
    def step_info(self) -> list[dict[str, Any]] | None:
        """The innermost optimizer's per-group ``step_info`` (optimlab optimizers), or None."""
        return getattr(self.optimizer, "step_info", None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        raise NotImplementedError

    # -- checkpoints ---------------------------------------------------------------------
    def _guard_state_dict(self) -> dict[str, Any]:
        """This guard's own state (plain Python values and tensors)."""
        return {}

    def _load_guard_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_guard_state_dict` returned."""

    def state_dict(self) -> dict[str, Any]:
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state_dict = dict(self.optimizer.state_dict())
        own = {"guard": type(self).__name__, "state": self._guard_state_dict()}
        state_dict[GUARDS_KEY] = [own, *state_dict.get(GUARDS_KEY, [])]
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)  # shallow copy: the caller's dict is left as it was
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        guards = list(state_dict.pop(GUARDS_KEY, []))
        name = type(self).__name__
        if not guards or guards[0].get("guard") != name:
            found = guards[0].get("guard") if guards else "no guard state"
            raise ValueError(
                f"{name}.load_state_dict: expected the state of a {name} guard, found "
                f"{found!r}; the checkpoint was saved from an optimizer wrapped differently"
            )
        if len(guards) > 1:
            state_dict[GUARDS_KEY] = guards[1:]
        self.optimizer.load_state_dict(state_dict)
        self._load_guard_state_dict(guards[0]["state"])
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    # -- pickling / deepcopy -------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Like torch.optim.Optimizer, drop hooks and the instance-level ``step`` that an
        # LRScheduler patches in: neither can be pickled.
        dropped = ("step", "_opt_called")
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in dropped and not k.startswith("_optimizer_")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hook_registries()
        self._patch_step_function()

    def __repr__(self) -> str:
        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        options = ", ".join(f"{k}={v!r}" for k, v in self._repr_options().items())
        return f"{type(self).__name__}({options}) (\n{inner}\n)"

    def _repr_options(self) -> dict[str, Any]:
        return {}


def iter_chain(optimizer: torch.optim.Optimizer) -> Iterator[torch.optim.Optimizer]:
    """The optimizer, then each optimizer it wraps, down to the innermost one."""
    current = optimizer
    while True:
        yield current
        if not isinstance(current, OptimizerWrapper):
            return
        current = current.optimizer


def find_guard(optimizer: torch.optim.Optimizer, kind: type[_G]) -> _G | None:
    """The outermost guard of class ``kind`` in the wrapper chain, or None."""
    for opt in iter_chain(optimizer):
        if isinstance(opt, kind):
            return opt
    return None


def step_applied(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's last ``step()`` changed the parameters (True for plain ones)."""
    return getattr(optimizer, "last_step_applied", True)


def evaluate_closure(closure: Callable[[], Any] | None) -> Any:
    """Run the closure with autograd on, as torch.optim optimizers do.

    Guards that inspect or change gradients (clipping, the non-finite check, accumulation)
    need the gradients *before* the inner step, so they evaluate the closure themselves, once,
    and then call the inner ``step()`` without it. Optimizers that re-evaluate the closure
    several times per step (L-BFGS) therefore cannot sit inside those guards.
    """
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def flat_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """All parameters in ``param_groups`` order: index i is torch's state_dict id i."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def load_param_tensors(
    optimizer: torch.optim.Optimizer, saved: dict[int, Tensor], what: str
) -> dict[Tensor, Tensor]:
    """Per-parameter guard tensors from a checkpoint, cast to each parameter's device/dtype."""
    params = flat_params(optimizer)
    loaded: dict[Tensor, Tensor] = {}
    for index, value in saved.items():
        if not 0 <= int(index) < len(params):
            raise ValueError(f"{what} for parameter {index}, but the optimizer has {len(params)}")
        p = params[int(index)]
        if value.shape != p.shape:
            raise ValueError(
                f"{what} for parameter {index} has shape {tuple(value.shape)}, "
                f"the parameter has {tuple(p.shape)}"
            )
        loaded[p] = value.detach().to(device=p.device, dtype=p.dtype, copy=True)
    return loaded


def save_param_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[Tensor, Tensor]
) -> dict[int, Tensor]:
    """The inverse of :func:`load_param_tensors`: key by flattened parameter index."""
    return {i: tensors[p] for i, p in enumerate(flat_params(optimizer)) if p in tensors}
