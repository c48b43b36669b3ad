"""Code generation: a recorded program as a straight-line Python function, compiled.

:func:`kernel_source` writes the program of :mod:`optimlab.core.recording` as the source of a
function ``kernel(inputs, scalars)``, one line per operation, from each operation's math in
:mod:`optimlab.core.vocabulary`; in-place results into the inputs are written with
``copy_``, so the compiled graph stores straight into the input buffers. :func:`get_kernel`
builds and compiles it once per (program, inputs, device, dtype) with ``torch.compile``:
C++/OpenMP on CPU, Triton on CUDA.
Inductor fuses an elementwise program into one loop that reads each buffer once and writes it
once. :class:`CompiledKernel` then skips dynamo's per-call overhead on CPU.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor

from optimlab.core.vocabulary import BY_NAME, MATH_NAMESPACE


def kernel_source(program: tuple, n_inputs: int) -> str:
    """The recorded program as the source of a straight-line function ``kernel``: each
    operation's math over its tensors ``t*`` and scalars ``s*`` (0-d tensors)."""
    names = ", ".join(f"t{i}" for i in range(n_inputs))
    lines = ["def kernel(inputs, scalars):", f"    {names}, = inputs"]
    for name, out, args, slots, statics in program:
        op = BY_NAME[name]
        fields = {f"t{j}": f"t{a}" for j, a in enumerate(args)}
        fields.update({f"s{j}": f"scalars[{k}]" for j, k in enumerate(slots)})
        fields.update({key: repr(value) for key, value in statics})
        expr = _substitute(op.math, fields)
        if op.inplace and args[0] < n_inputs:
            lines.append(f"    {fields['t0']}.copy_({expr})")
        elif op.inplace:
            # a temporary updated in place is rebound instead: the same values for every later
            # use, and inductor fails on copy_ into some reduced temporaries (KeyError 'bufN')
            lines.append(f"    {fields['t0']} = {expr}")
        else:
            lines.append(f"    t{out} = {expr}")
    return "\n".join(lines) + "\n"


def _substitute(math: str, fields: dict[str, str]) -> str:
    """``math`` with its names ``t0, s1, ...`` replaced (whole words only)."""
    return re.sub(r"\b(\w+)\b", lambda m: fields.get(m.group(1), m.group(1)), math)


def build_kernel(program: tuple, n_inputs: int):
    """A plain Python function running ``program`` on ``(inputs, scalars)``.

    Each program gets its own generated function (its own code object) because torch.compile
    caches compiled code per code object: one shared interpreter function would be
    "recompiled" for every optimizer configuration and hit dynamo's recompile limit.
    """
    source = kernel_source(program, n_inputs)
    namespace = dict(MATH_NAMESPACE)
    exec(compile(source, f"<optimlab-fused-{abs(hash(program)):x}>", "exec"), namespace)
    kernel = namespace["kernel"]
    kernel.source = source
    return kernel


_KERNELS: dict[tuple, object] = {}
_VERIFIED: set = set()  # kernels that have run once (compiled successfully)
#: batched kernel keys that only compile for one parameter at a time (see fused.run_fused)
SPLIT_BATCHES: set = set()


def get_kernel(key: tuple):
    """The kernel for ``key = (program, n_inputs, device, dtype, compile, batched)``, built
    (and compiled) once per key.

    The flat length is symbolic (``dynamic=True``): buckets of every size (param groups of
    different sizes, say one per layer) share one compiled kernel. With static shapes each new
    size was a recompile, and a ninth one hit dynamo's recompile limit, a hard error under
    ``fullgraph=True``. Dynamo still specializes lengths 0 and 1, which costs at most two more
    compiles per program.
    """
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = build_kernel(*key[:2])
        if key[4]:
            if key[2] == "cpu":
                kernel = CompiledKernel(kernel)
            else:
                kernel = torch.compile(kernel, fullgraph=True, dynamic=True)
        _KERNELS[key] = kernel
    return kernel


def reset_kernels() -> None:
    """Forget every built kernel, as a new process would (inductor's disk cache still applies).
    ``torch._dynamo.reset()`` alone does not: a :class:`CompiledKernel` keeps calling the graphs
    it remembers."""
    _KERNELS.clear()
    _VERIFIED.clear()
    SPLIT_BATCHES.clear()


#: call a compiled CPU kernel straight away for input signatures dynamo has already dispatched
#: (see :class:`CompiledKernel`); ``OPTIMLAB_FUSED_DIRECT=0`` sends every call through dynamo
DIRECT_CALLS = os.environ.get("OPTIMLAB_FUSED_DIRECT", "1") != "0"


class CompiledKernel:
    """One recorded program compiled with ``torch.compile``, remembering dynamo's dispatch.

    Every call of a compiled function first runs dynamo's frame hook and guards. With cold
    caches (as after a backward pass) that costs 0.15-0.2 ms on our CPUs, 5% of a step of
    8 M parameters and more than all the other Python of the step. Our kernels are only ever
    called one way: contiguous 1-D flat buffers of the key's dtype and device, made by
    ``torch.empty``, never aliasing and never requiring grad, plus one scalars vector. The
    guards can then tell two calls apart only by the lengths and by global state, of which
    grad mode and the thread count change the compiled code. So the first call of each
    *signature* (buffer length, scalars length, grad mode, threads) goes through dynamo, which
    compiles a graph or picks one; that graph and how dynamo passed it our tensors are
    remembered, and later calls with the signature call the graph directly. A new lr is a new
    value in the scalars vector, not a new signature.

    Not seen by a remembered graph: the rest of the global state dynamo guards on (autocast,
    deterministic mode, the default dtype, torch-function modes, ``torch.compiler.set_stance``).
    None of it changes an elementwise program of in-place stores. The graph comes from
    ``torch._inductor.compile_fx.compile_fx``, the function behind the ``"inductor"`` backend;
    without it (a torch that moved it), or with ``OPTIMLAB_FUSED_DIRECT=0``, every call goes
    through dynamo as usual.
    """

    def __init__(self, fn) -> None:
        self.direct: dict[tuple, tuple] = {}
        self._ran: tuple | None = None  # the graph the current dynamo call ran, and its args
        try:
            from torch._inductor.compile_fx import compile_fx
        except ImportError:  # pragma: no cover - depends on torch's internals
            self.compiled = torch.compile(fn, fullgraph=True, dynamic=True)
            return

        def backend(gm, example_inputs):
            graph = compile_fx(gm, example_inputs)

            def probe(*args):
                self._ran = (graph, args)
                return graph(*args)

            return probe

        self.compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend=backend)

    def __call__(self, inputs: list[Tensor], scalars: Tensor):
        signature = (
            inputs[0].shape[0] if inputs[0].dim() == 1 else tuple(t.shape for t in inputs),
            scalars.shape[0],
            torch.is_grad_enabled(),
            torch.get_num_threads(),
        )
        direct = self.direct.get(signature) if DIRECT_CALLS else None
        if direct is not None:
            graph, plan = direct
            ours = (*inputs, scalars)
            return graph(*[ours[v] if is_ours else v for is_ours, v in plan])
        self._ran = None
        try:
            out = self.compiled(inputs, scalars)
            if DIRECT_CALLS and self._ran is not None:
                graph, args = self._ran
                plan = _argument_plan(args, (*inputs, scalars))
                if plan is not None:
                    self.direct[signature] = (graph, plan)
        finally:
            self._ran = None  # holds the flat buffers: a rebuild must be able to free them
        return out


def _argument_plan(args, ours) -> tuple | None:
    """How to rebuild ``args`` (what dynamo passed a graph) from ``ours``: each tensor by its
    position in ``ours``, each size as the constant it is for this signature; ``None`` if an
    argument is neither (then every call goes through dynamo)."""
    plan = []
    for a in args:
        if isinstance(a, Tensor):
            found = [j for j, t in enumerate(ours) if t is a]
            if len(found) != 1:
                return None
            plan.append((True, found[0]))
        elif type(a) is int:
            plan.append((False, a))
        else:
            return None
    return tuple(plan)


def is_compile_error(error: Exception) -> bool:
    """Whether ``error`` was raised while compiling, before the program touched a tensor."""
    from torch._dynamo import exc

    names = ("BackendCompilerFailed", "FailOnRecompileLimitHit", "Unsupported")
    return isinstance(error, tuple(getattr(exc, n) for n in names if hasattr(exc, n)))
