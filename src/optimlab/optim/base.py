"""The base class every optimlab optimizer derives from.

A subclass supplies three things and nothing else:

* ``_validate_group(group)``: range checks for its hyperparameters (torch's messages);
* ``_init_state(group, p, state)``: its state tensors, under torch's names;
* ``_update(ops, group, params, grads, state, steps, info)``: the algorithm, written once with
  the transforms of :mod:`optimlab.core.transforms`, for whichever engine's ``ops``.

This class does the rest the same way for all of them: reading hyperparameters from the param
group at every step (so ``torch.optim.lr_scheduler`` works unchanged), skipping parameters
whose ``.grad`` is ``None``, rejecting sparse gradients, viewing complex tensors as pairs of
reals (as torch.optim does), counting steps per parameter, picking the engine, and keeping
``state_dict`` compatible with torch.optim.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.core import fused
from optimlab.core.engines import (
    ENGINES,
    maybe_build_buckets,
    new_fused_stats,
    run_step,
    try_fused_step,
)
from optimlab.core.transforms import WEIGHT_DECAY_MODES, direction, weight_decay
from optimlab.optim import validation as check


def scalar_step_tensor(value: float = 0.0) -> Tensor:
    """A step counter with torch.optim's dtype, so checkpoints load both ways."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(value, dtype=dtype)


class Optimizer(torch.optim.Optimizer):
    """Common machinery; see the module docstring. Not used directly."""

    #: names of the elementwise state tensors this optimizer keeps, for a given group
    #: (``step`` and other 0-d scalars are not listed).
    def _state_keys(self, group: dict) -> tuple[str, ...]:
        raise NotImplementedError

    #: whether ``state["step"]`` exists and is advanced by the base class
    counts_steps = True
    #: state keys that ``_update`` creates itself on first use (SGD's momentum buffer)
    lazy_state_keys: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict[str, Any], *, engine: str = "auto") -> None:
        check.check_choice("engine", engine, ENGINES)
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets changes between runs; please use a list instead"
            )
        self.engine = engine
        self.step_info: list[dict[str, Any]] = []
        self._flat: dict[int, list] = {}  # fused engine: group index -> flat buckets
        self._numel_cache: dict[int, tuple[int, int]] = {}
        self.fused_stats = new_fused_stats()
        super().__init__(params, defaults)

    # -- param groups ------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group.get("params") if isinstance(param_group, dict) else None
        if params is not None and not isinstance(params, (Tensor, set)):
            params = param_group["params"] = list(params)
            # torch only warns about this; a parameter stepped twice per step is always a bug.
            if len(params) != len(set(params)):
                raise ValueError("some parameters appear more than once in a parameter group")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._validate_common(group)
        self._validate_group(group)
        # The AdamW paper's schedule multiplier η = lr / initial_lr needs the base lr; torch's
        # schedulers use the same key and keep an existing value.
        group.setdefault("initial_lr", group["lr"])

    def _validate_common(self, group: dict) -> None:
        check.check_lr(group["lr"])
        check.check_nonnegative("weight_decay", group["weight_decay"])
        check.check_choice("weight_decay_mode", group["weight_decay_mode"], WEIGHT_DECAY_MODES)
        check.check_bool("maximize", group["maximize"])

    def _validate_group(self, group: dict) -> None:
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------------
    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        """Default: a step counter and zero-filled tensors for every key in ``_state_keys``."""
        if self.counts_steps:
            state["step"] = scalar_step_tensor()
        for key in self._state_keys(group):
            state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("engine", "auto")
        self.__dict__.setdefault("step_info", [])
        self.__dict__["_flat"] = {}
        self.__dict__["_numel_cache"] = {}
        self.__dict__.setdefault("fused_stats", new_fused_stats())
        for group in self.param_groups:
            # A torch.optim checkpoint lacks optimlab's options: take the constructor's values,
            # but honour torch's own switch for decoupled decay when it is there.
            if "weight_decay_mode" not in group and "decoupled_weight_decay" in group:
                group["weight_decay_mode"] = (
                    "decoupled" if group["decoupled_weight_decay"] else "l2"
                )
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            group.setdefault("initial_lr", group["lr"])
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = scalar_step_tensor(float(p_state["step"]))

    # -- the step ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.step_info = []
        fusing = self.engine in ("fused", "auto")
        for index, group in enumerate(self.param_groups):
            info: dict[str, Any] = {}
            if fusing:
                if index not in self._flat:
                    maybe_build_buckets(self, index, group, before_step=True)
                if try_fused_step(self, index, group, info):
                    self.step_info.append(info)
                    continue
            # A switch turned on mid-run (amsgrad, centered, momentum) starts its buffer at
            # zero, as it would have at the first step; lazy state is created by _update.
            eager_keys = [k for k in self._state_keys(group) if k not in self.lazy_state_keys]
            params: list[Tensor] = []
            grads: list[Tensor] = []
            states: list[dict] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients; "
                        "use a dense gradient (e.g. nn.Embedding(sparse=False))"
                    )
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(group, p, state)
                for key in eager_keys:
                    if key not in state:
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                states.append(state)
            if params:
                run_step(self, group, params, grads, states, info)
                if fusing and self.lazy_state_keys and index not in self._flat:
                    # Only state created from the first gradient (SGD's momentum) waits for
                    # an eager step; everything else was tried before the step.
                    maybe_build_buckets(self, index, group)
            self.step_info.append(info)
        return loss

    # -- the fused engine's flat storage ----------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients. Groups in the fused engine's flat storage keep their gradient views
        and are zeroed in one pass, whatever ``set_to_none`` says (see docs/engines.md)."""
        if not self._flat:
            super().zero_grad(set_to_none)
            return
        for index, group in enumerate(self.param_groups):
            params = group["params"]
            if index in self._flat:
                for bucket in self._flat[index]:
                    fused.restore_grad_views(bucket)
                params = self._flat[index].outside
            for p in params:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().requires_grad_(False)
                    p.grad.zero_()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Loaded state arrives as separate tensors; flat storage is rebuilt after a step.
        self._flat = {}
        super().load_state_dict(state_dict)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["engine"] = self.engine
        return state

    def _update(self, ops, group, params, grads, state, steps, raw, info) -> None:
        raise NotImplementedError

    def _gradient(self, ops, group: dict, params: list, grads: list) -> list:
        """The gradient every algorithm starts from: ``−g`` when maximizing, then the group's
        weight decay (coupled into ``g``, or applied to ``θ`` directly); see
        :func:`optimlab.core.transforms.weight_decay`."""
        g = direction(ops, grads, group["maximize"])
        return weight_decay(
            ops,
            params,
            g,
            mode=group["weight_decay_mode"],
            lr=group["lr"],
            decay=group["weight_decay"],
            initial_lr=group["initial_lr"],
        )

    def _torch_fused(self, group, param, grad, state, step) -> bool:
        """Step one flat buffer with a torch fused kernel if one computes exactly this
        group's formula; return whether it did. ``step`` is already incremented."""
        return False

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        for group in sd["param_groups"]:
            # torch.optim's Adam/RAdam/NAdam read this flag; writing it keeps a checkpoint's
            # meaning when it is loaded into their torch.optim twins.
            if "weight_decay_mode" in group:
                group["decoupled_weight_decay"] = group["weight_decay_mode"] == "decoupled"
        return sd

    def __repr__(self) -> str:
        return super().__repr__().replace(" (\n", f" (\nEngine: {self.engine}\n", 1)
