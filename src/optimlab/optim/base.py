"""The base class every optimlab optimizer derives from.

A subclass supplies three things and nothing else:

* ``_validate_group(group)``: range checks for its hyperparameters (torch's messages);
* ``_init_state(group, p, state)``: its state tensors, under torch's names;
* ``_update(ops, group, params, grads, state, steps, info)``: the algorithm, written once with
  the transforms of :mod:`optimlab.core.transforms`, for whichever engine's ``ops``.

This class does the rest the same way for all of them, with torch.optim's semantics: reading
hyperparameters from the param group at every step (so ``torch.optim.lr_scheduler`` works
unchanged; tensor hyperparameters are read as numbers), skipping parameters whose ``.grad`` is
``None``, sparse gradients where the algorithm has a sparse form, complex tensors as pairs of
reals, step counts per parameter, torch's ``foreach``/``fused``/``differentiable`` switches
mapped onto engines (per group, as torch reads them), and ``state_dict`` compatible with
torch.optim in both directions.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

import torch
from torch import Tensor

from optimlab.core import flat as storage
from optimlab.core.engines import (
    DEFERRED,
    ENGINES,
    drop_all_flat,
    maybe_build_buckets,
    new_fused_stats,
    release_all_flat,
    run_step,
    try_fused_step,
)
from optimlab.core.state import State, StepInputs, scalar_step_tensor
from optimlab.core.transforms import WEIGHT_DECAY_MODES, direction, weight_decay
from optimlab.optim import validation as check
from optimlab.optim.spec import REGISTERED, Hyper, TorchTwin

#: torch.optim's switches for how a step is executed; each maps onto an engine
#: (``foreach=True`` → foreach, ``foreach=False`` → loop, ``fused=True`` → fused,
#: ``differentiable=True`` → loop with autograd recording). They are kept per group, like
#: torch, and a loaded checkpoint does not change the running optimizer's choice.
EXECUTION_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def _engine_flags(engine: str, defaults: dict) -> str:
    """Check ``engine`` against torch's ``foreach``/``fused``/``differentiable`` in
    ``defaults`` (torch's errors where torch has them), write the flags the engine implies into
    ``defaults``, and return the optimizer's engine."""
    check.check_choice("engine", engine, ENGINES)
    _check_flag_conflicts(defaults)
    asked = _flags_engine(defaults)
    if asked != "auto" and engine != "auto" and asked != engine:
        flags = ", ".join(f"{k}={defaults[k]}" for k in ("foreach", "fused") if defaults.get(k))
        flags = flags or "foreach=False"
        raise ValueError(f"engine={engine!r} contradicts {flags}; give one or the other")
    if engine == "fused":
        defaults["fused"] = True
    elif engine == "foreach":
        defaults["foreach"] = True
    elif engine == "loop":
        defaults["foreach"] = False
    return asked if asked != "auto" else engine


def _check_flag_conflicts(group: dict) -> None:
    if group.get("fused") and group.get("differentiable"):
        raise RuntimeError("`fused` does not support `differentiable`")
    if group.get("fused") and group.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def _flags_engine(group: dict) -> str:
    """The engine a group's torch switches ask for (``"auto"`` when they leave it open)."""
    if group.get("differentiable"):
        return "loop"
    if group.get("fused"):
        return "fused"
    foreach = group.get("foreach")
    if foreach:
        return "foreach"
    if foreach is False:
        return "loop"
    if group.get("fused") is False:
        return "foreach"  # fused=False: torch's default path, never fused
    return "auto"


def _as_number(value):
    """A 1-element tensor hyperparameter (lr, a beta) as a Python number; tuples elementwise."""
    if isinstance(value, Tensor):
        return value.item()
    if isinstance(value, tuple) and any(isinstance(v, Tensor) for v in value):
        return tuple(v.item() if isinstance(v, Tensor) else v for v in value)
    return value


def _capturable_devices() -> list[str]:
    try:
        from torch.optim.optimizer import _get_capturable_supported_devices

        return _get_capturable_supported_devices()
    except ImportError:  # pragma: no cover - depends on torch's internals
        return ["cuda"]


class Optimizer(torch.optim.Optimizer):
    """Common machinery; see the module docstring. Not used directly."""

    # What the class declares about itself (see optimlab.optim.spec and docs/contributing.md).
    #: the registry name; a class without one (a base) is not registered
    name: str | None = None
    #: year of publication: the registry lists optimizers in this order
    year: int = 0
    #: the torch.optim class computing the same algorithm, if any
    torch_twin: TorchTwin | None = None
    #: without a twin, the torch.optim configuration the benchmark compares with
    stand_in: TorchTwin | None = None
    #: settings that exercise every convention switch (the test suite runs each)
    configs: tuple[dict[str, Any], ...] = ()
    #: settings that must fail, with (the start of) the message
    invalid_configs: tuple[tuple[dict[str, Any], str], ...] = ()
    #: what the lab may tune besides the learning rate
    search_space: tuple[Hyper, ...] = ()
    supports_complex = True
    #: whether every parameter must be a matrix (Muon): tests and benchmarks give it matrices
    matrix_only = False
    #: constructor arguments that choose the arithmetic's precision or which shapes are
    #: accepted, not the formula (Muon's ``ns_dtype``): the float64 reference has none of them
    precision_options: tuple[str, ...] = ()
    #: the settings of those under which the arithmetic is the parameters' own (Muon:
    #: ``ns_dtype=torch.float64``): the tests hold the class to its float64 reference with them
    float64_options: dict[str, Any] = {}
    #: torch's words for a negative lr and weight decay, where its twin words them otherwise
    #: (torch.optim.Adafactor: "Learning rate should be >= 0 but is: -1.0")
    lr_message = "Invalid learning rate: {}"
    weight_decay_message = "Invalid {name} value: {value}"
    #: the state each parameter keeps besides ``step`` (see :mod:`optimlab.core.state`)
    state_spec: tuple[State, ...] = ()
    #: whether ``state["step"]`` exists and is advanced by the base class
    counts_steps = True
    #: whether the algorithm has a sparse form (torch: SGD and Adagrad)
    supports_sparse = False
    #: torch's refusal of sparse gradients, if it words it otherwise than "<Class> does not
    #: support sparse gradients"
    sparse_message: str | None = None

    #: a variant of its parent class that only changes defaults (AdamW of Adam) declares them
    #: here instead of repeating the constructor; see :meth:`__init_subclass__`
    variant_defaults: dict[str, Any] = {}
    #: arguments a variant fixes (AMSGrad fixes ``amsgrad=True``): gone from its signature
    variant_fixed: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        """A class that declares ``variant_defaults`` or ``variant_fixed`` gets its parent's
        constructor with those defaults changed (or arguments fixed), with a real signature
        for ``inspect.signature`` and ``help``."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None:
            if name in REGISTERED and REGISTERED[name].__qualname__ != cls.__qualname__:
                raise TypeError(f"two optimizers are named {name!r}")
            REGISTERED[name] = cls
        new_defaults = cls.__dict__.get("variant_defaults", {})
        fixed = cls.__dict__.get("variant_fixed", {})
        if not new_defaults and not fixed:
            return
        parent_init = cls.__mro__[1].__init__
        signature = inspect.signature(parent_init)
        parameters = [
            p.replace(default=new_defaults.get(p.name, p.default))
            for p in signature.parameters.values()
            if p.name not in fixed
        ]
        unknown = (set(new_defaults) | set(fixed)) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{cls.__name__}: no such constructor arguments {sorted(unknown)}")
        variant_signature = signature.replace(parameters=parameters)

        def __init__(self, *args, **kwargs) -> None:
            bound = variant_signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = {**bound.arguments, **fixed}
            parent_init(arguments.pop("self"), **arguments)

        __init__.__signature__ = variant_signature  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, params, defaults: dict[str, Any], *, engine: str = "auto") -> None:
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets changes between runs; please use a list instead"
            )
        defaults = dict(defaults)
        self.engine = _engine_flags(engine, defaults)
        self.step_info: list[dict[str, Any]] = []
        self._flat: dict[int, list] = {}  # fused engine: group index -> flat buckets
        self._numel_cache: dict[int, tuple[int, int]] = {}
        self._base_lrs: list[float] = []
        self.fused_stats = new_fused_stats()
        # The flat buckets' gradient hooks live on the parameters; they go with the optimizer.
        weakref.finalize(self, release_all_flat, self._flat)
        super().__init__(params, defaults)

    # -- param groups ------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_flag_conflicts(group)
            self._validate_common(group)
            self._validate_group(group)
        except Exception:
            self.param_groups.pop()
            raise
        self._base_lrs.append(float(_as_number(group["lr"])))

    def _validate_common(self, group: dict) -> None:
        check.check_lr(group["lr"], self.lr_message)
        check.check_nonnegative("weight_decay", group["weight_decay"], self.weight_decay_message)
        check.check_choice("weight_decay_mode", group["weight_decay_mode"], WEIGHT_DECAY_MODES)
        check.check_bool("maximize", group.get("maximize", False))

    def _counts_steps(self, group: dict) -> bool:
        """Whether ``group``'s parameters keep a ``step`` count (``counts_steps``; an optimizer
        whose groups run different algorithms decides per group)."""
        return self.counts_steps

    def _validate_group(self, group: dict) -> None:
        raise NotImplementedError

    def base_lr(self, index: int) -> float:
        """Group ``index``'s lr before any schedule, the ``initial_lr`` of the AdamW paper's
        schedule multiplier ``η = lr / initial_lr``.

        As torch's schedulers define it: the ``initial_lr`` a scheduler records in the group
        when it is attached (the group's lr at that moment). Without a scheduler, the lr the
        group was created with. Construction writes nothing into the group, so schedulers
        attached later start from the group's current lr, as with torch.optim.
        """
        group = self.param_groups[index]
        if "initial_lr" in group:
            return float(_as_number(group["initial_lr"]))
        if index < len(self._base_lrs):
            return self._base_lrs[index]
        return float(_as_number(group["lr"]))

    def _hyperparameters(self, index: int, group: dict) -> dict:
        """This step's view of a group, plus ``base_lr``: tensor hyperparameters as numbers,
        except under ``capturable`` or ``differentiable``."""
        # kept as tensors: a capturable step reads nothing back to the host, and a
        # differentiable one lets the gradient flow into a tensor lr or betas
        keep = group.get("capturable") or group.get("differentiable")
        hp = {k: v if keep else _as_number(v) for k, v in group.items() if k != "params"}
        hp["params"] = group["params"]
        # (base_lr() would read a scheduler's tensor initial_lr on the host)
        hp["base_lr"] = hp["initial_lr"] if keep and "initial_lr" in hp else self.base_lr(index)
        return hp

    @classmethod
    def param_groups_for(cls, model: torch.nn.Module) -> list:
        """What this optimizer should be given for a whole ``model``: its trainable
        parameters. An optimizer meant for some parameters only returns param groups that
        send the others elsewhere (Muon: AdamW for all but the hidden matrices)."""
        return [p for p in model.parameters() if p.requires_grad]

    #: the method that steps the parameters :meth:`param_groups_for` does not give this
    #: optimizer's own (Muon: "AdamW"); ``None`` when it takes them all
    fallback: str | None = None

    @classmethod
    def own_share(cls, model: torch.nn.Module) -> float:
        """The fraction of ``model``'s trainable elements that this optimizer's own method
        steps when built from :meth:`param_groups_for`; the rest go to :attr:`fallback`."""
        return 1.0

    @classmethod
    def min_bytes_per_element(cls, group: dict) -> int:
        """The fewest bytes one step must move per parameter element in fp32: read θ and g,
        write θ (12), and read and write every state tensor shaped like θ that ``group``'s
        settings keep (8 each); scalars and factored statistics are negligible. The fused
        engine's GB/s is measured against this (benchmarks/README.md)."""
        kept = [s for s in cls.state_spec if s.shape == "param" and s.when(group, None)]
        return 12 + 8 * len(kept)

    # -- state -------------------------------------------------------------------------------
    def _state_keys(self, group: dict, p: Tensor | None = None) -> tuple[str, ...]:
        """Names of the state tensors (not the 0-d scalars) the group's parameters keep; with
        ``p``, those of that parameter."""
        return tuple(s.name for s in self.state_spec if s.shape != "scalar" and s.when(group, p))

    @property
    def lazy_state_keys(self) -> tuple[str, ...]:
        """State the formula creates itself from the first gradient (SGD's momentum buffer)."""
        return tuple(s.name for s in self.state_spec if s.lazy)

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        """A step counter, and every declared state tensor made from ``p`` (lazy ones wait for
        the formula)."""
        if self._counts_steps(group):
            state["step"] = scalar_step_tensor()
        for spec in self.state_spec:
            if not spec.lazy and spec.when(group, p):
                state[spec.name] = spec.init(p, group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        d = self.__dict__
        d.setdefault("engine", "auto")
        d.setdefault("step_info", [])
        if "_flat" in d:
            drop_all_flat(self)  # a loaded state arrives as separate tensors
        else:
            d["_flat"] = {}
            weakref.finalize(self, release_all_flat, self._flat)
        d["_numel_cache"] = {}
        d.setdefault("_base_lrs", [])
        d.setdefault("fused_stats", new_fused_stats())
        for group in self.param_groups:
            # A torch.optim checkpoint lacks optimlab's options: take the constructor's values,
            # but honour torch's own switch for decoupled decay when it is there.
            if "weight_decay_mode" not in group and "decoupled_weight_decay" in group:
                group["weight_decay_mode"] = (
                    "decoupled" if group["decoupled_weight_decay"] else "l2"
                )
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = scalar_step_tensor(float(p_state["step"]))

    # -- the step ----------------------------------------------------------------------------
    # Inside a torch.compile'd training step, dynamo leaves the optimizer step alone (a graph
    # break): the engines pick their kernels themselves, and the fused engine compiles its own.
    @torch.compiler.disable
    def step(self, closure=None):
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        if "capturable" in self.defaults:
            # torch's own check: a CUDA graph capture of a step that is not capturable fails,
            # and a capturable one run outside a capture warns once
            check = getattr(self, "_accelerator_graph_capture_health_check", None)
            (check or self._cuda_graph_capture_health_check)()  # torch < 2.9 has this name
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.step_info = []
        # torch.optim's rule: autograd records the step only when differentiable=True.
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            for index, group in enumerate(self.param_groups):
                info: dict[str, Any] = {}
                self._step_group(index, group, info)
                self.step_info.append(info)
        return loss

    def _step_group(self, index: int, group: dict, info: dict) -> None:
        engine = _flags_engine(group)
        if group.get("differentiable") and group.get("foreach"):
            raise AssertionError("_foreach ops don't support autograd")  # torch's words
        if group.get("capturable"):
            self._check_capturable(group)
            engine = "loop"  # run_step: device-tensor scalars, one tensor at a time
            info["capturable"] = True
        hp = self._hyperparameters(index, group)
        params = group["params"]
        eager = "loop" if engine == "loop" else "foreach"
        status = None
        if engine in ("fused", "auto"):
            if index not in self._flat:
                status = maybe_build_buckets(self, index, hp, engine, info)
            rest = try_fused_step(self, index, hp, info)
            if rest is not None:
                if not rest:
                    return
                params = rest  # parameters that cannot be fused, beside the buckets
        info.setdefault("engine", "fused" if info.get("fused") else eager)
        self._eager_step(hp, params, info, eager)
        if status == DEFERRED and index not in self._flat:
            # state created from the first gradient (SGD's momentum) exists now
            maybe_build_buckets(self, index, hp, engine)

    def _eager_step(self, group: dict, candidates: list[Tensor], info: dict, engine: str):
        # A switch turned on mid-run (amsgrad, centered, momentum) starts its buffer as it would
        # have at the first step; lazy state is created by _update.
        specs = [spec for spec in self.state_spec if not spec.lazy]
        params: list[Tensor] = []
        grads: list[Tensor] = []
        states: list[dict] = []
        for p in candidates:
            grad = p.grad
            if grad is None:
                continue
            if not self.supports_complex and torch.is_complex(p):
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            if grad.is_sparse and not self.supports_sparse:
                raise RuntimeError(
                    self.sparse_message
                    or f"{type(self).__name__} does not support sparse gradients"
                )
            state = self.state[p]
            if len(state) == 0:
                self._init_state(group, p, state)
            for spec in specs:
                if spec.name not in state and spec.when(group, p):
                    state[spec.name] = spec.init(p, group)
            params.append(p)
            grads.append(grad)
            states.append(state)
        if params:
            run_step(self, group, params, grads, states, info, engine)

    def _check_capturable(self, group: dict) -> None:
        """``capturable=True`` promises a step without host synchronisation, for CUDA graphs:
        torch refuses it off its capturable devices, with this message, and so do we."""
        devices = _capturable_devices()
        for p in group["params"]:
            if p.device.type not in devices:
                raise AssertionError(
                    "If capturable=True, params and state_steps must be on supported "
                    f"devices: {devices}."
                )

    # -- gradients and checkpoints ----------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients, with torch's meaning whatever the engine: ``set_to_none`` leaves
        every ``p.grad`` ``None`` (the fused engine routes the next gradients back into its flat
        buffer, see docs/engines.md); otherwise existing gradients are zeroed in place."""
        if not self._flat:
            super().zero_grad(set_to_none)
            return
        for index, group in enumerate(self.param_groups):
            flat = self._flat.get(index)
            if flat is None:
                storage.zero_grad_(group["params"], set_to_none)
                continue
            for bucket in flat:
                bucket.zero_grad(set_to_none)
            storage.zero_grad_(flat.idle + flat.eager, set_to_none)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Loaded state arrives as separate tensors; flat storage is rebuilt at the next step.
        # How this optimizer runs (engine, foreach, fused...) stays as constructed: it is a
        # choice of the running process, not part of the training state.
        drop_all_flat(self)
        flags = [{k: g[k] for k in EXECUTION_FLAGS if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, kept in zip(self.param_groups, flags):
            group.update(kept)
        self._restore_scalar_dtypes(state_dict)

    def _restore_scalar_dtypes(self, state_dict: dict[str, Any]) -> None:
        """Per-parameter scalars (``step``, NAdam's ``mu_product``) are never loaded in a less
        precise dtype than they were saved in. torch's loader casts every floating-point
        state tensor but ``step`` to the parameter's dtype: a float32 ``mu_product`` of a
        bfloat16 parameter would come back rounded to bfloat16, and the resumed run would
        differ from the uninterrupted one. Where the cast loses nothing (float32 to a float64
        parameter's float64) it stays, as in torch.optim, so a run moved from torch.optim
        continues exactly as torch.optim would continue it."""
        keys = {"step"} | {spec.name for spec in self.state_spec if spec.shape == "scalar"}
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id, {})
            state = self.state.get(p, {})
            for key in keys & saved.keys() & state.keys():
                value, loaded = saved[key], state[key]
                if torch.is_tensor(value) and _less_precise(loaded.dtype, value.dtype):
                    state[key] = value.detach().to(device=loaded.device, copy=True)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["engine"] = self.engine
        state["_base_lrs"] = list(self._base_lrs)
        return state

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        for group in sd["param_groups"]:
            # torch.optim's Adam/RAdam/NAdam read this flag; writing it keeps a checkpoint's
            # meaning when it is loaded into their torch.optim twins.
            if "weight_decay_mode" in group:
                group["decoupled_weight_decay"] = group["weight_decay_mode"] == "decoupled"
        return sd

    # -- what subclasses build on ------------------------------------------------------------
    def _update(self, s: StepInputs) -> None:
        """The algorithm, once, for whichever engine's ``s.ops`` (see :class:`StepInputs`)."""
        raise NotImplementedError

    def _gradient(self, s: StepInputs, params: list | None = None, grads: list | None = None):
        """The gradient every algorithm starts from: ``−g`` when maximizing, then the group's
        weight decay (coupled into ``g``, or applied to ``θ`` directly); see
        :func:`optimlab.core.transforms.weight_decay`. ``params``/``grads`` default to all of
        ``s``'s."""
        params = s.params if params is None else params
        grads = s.grads if grads is None else grads
        group = s.group
        g = direction(s.ops, grads, group.get("maximize", False))
        return weight_decay(
            s.ops,
            params,
            g,
            mode=group["weight_decay_mode"],
            lr=group["lr"],
            decay=group["weight_decay"],
            initial_lr=group["base_lr"],
        )

    def _torch_kernel_applies(self, group) -> bool:
        """Whether one of torch's fused kernels computes exactly this group's formula (then
        the fused engine steps the flat buffers with it, see :meth:`_torch_fused`)."""
        return False

    def _torch_fused(self, group, params, grads, state, step) -> None:
        """Step the fused engine's tensors (lists: flat buffers or runs of them) with torch's
        fused kernel; ``state`` maps each key to a list like ``params``, ``step`` is the
        bucket's (already incremented) step count."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return super().__repr__().replace(" (\n", f" (\nEngine: {self.engine}\n", 1)


def resolve_decoupled(weight_decay_mode: str, decoupled_weight_decay: bool) -> str:
    """torch's ``decoupled_weight_decay=True`` is ``weight_decay_mode="decoupled"``."""
    if not decoupled_weight_decay:
        return weight_decay_mode
    if weight_decay_mode not in ("l2", "decoupled"):
        raise ValueError(
            f"decoupled_weight_decay=True contradicts weight_decay_mode={weight_decay_mode!r}"
        )
    return "decoupled"


def _less_precise(dtype: torch.dtype, than: torch.dtype) -> bool:
    """Whether floating-point ``dtype`` keeps fewer significant bits than ``than``."""
    if not (dtype.is_floating_point and than.is_floating_point):
        return False
    return torch.finfo(dtype).eps > torch.finfo(than).eps
