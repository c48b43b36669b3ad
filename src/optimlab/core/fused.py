"""The fused engine: one pass over memory per step, for every optimizer, from the same formula.

A group's parameters, gradients and state live in flat buffers (:mod:`optimlab.core.flat`).
At each step the optimizer's formula is recorded (:mod:`optimlab.core.recording`) and run as one
compiled kernel over the buffers (:mod:`optimlab.core.codegen`), or, where one of torch's fused
kernels computes exactly the same formula, with that kernel. This module runs one such step.

A parameter that cannot be fused (complex, sparse gradient, a tensor subclass, state of another
shape) is stepped on the ``foreach`` path beside the buckets. A group falls back to that path
as a whole, counted in ``fused_stats["eager_steps"]``, for a step in which a parameter of its
buckets has no gradient, or when its state does not exist yet (SGD's momentum at the first
step). Buckets are also split by per-parameter step count (see :mod:`optimlab.core.engines`),
so parameters that skipped a step, or were unfrozen later, are fused in a bucket of their own
after one rebuild.
"""

from __future__ import annotations

import os
import time
import warnings

import torch
from torch import Tensor

from optimlab.core import codegen
from optimlab.core.flat import FlatBucket
from optimlab.core.recording import RecordingOps, Sym
from optimlab.core.state import StepInputs

#: compile the recorded programs (``False``: run them eagerly, for tests and debugging)
COMPILE = os.environ.get("OPTIMLAB_FUSED_COMPILE", "1") != "0"
#: ``engine="auto"`` fuses a group from this many elements; below it the compile time (seconds
#: on CPU) is not repaid and ``foreach`` is used.
AUTO_MIN_NUMEL = int(os.environ.get("OPTIMLAB_FUSED_MIN_NUMEL", 1_000_000))


def pack_scalars(bucket: FlatBucket, values: list[float], dtype: torch.dtype) -> Tensor:
    """The program's scalars as one vector on the bucket's device.

    On CPU the bucket's vector is refilled through a NumPy view of it, which costs a third of
    building a new tensor from a list (cold caches: 9 µs against 30). The kernel runs
    synchronously, so the vector is free again when the step ends. Elsewhere a new vector is
    copied to the device at every step, so a copy in flight never sees the next step's values.
    """
    device = bucket.like.device
    if device.type != "cpu":
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)
    buffer = bucket.scalar_buffer
    if buffer is None or buffer.shape[0] != len(values) or buffer.dtype != dtype:
        buffer = bucket.scalar_buffer = torch.empty(len(values), dtype=dtype)
    buffer.numpy()[:] = values
    return buffer


def count_step(bucket: FlatBucket) -> float:
    """Add one to every parameter's step count in the bucket; the new count (all are equal)."""
    steps = bucket.scalars["step"]
    if steps.device.type == "cpu":
        # a NumPy view skips torch's dispatcher: 15 µs against 45 for ``add_`` and ``item``
        counts = steps.numpy()
        counts += 1.0
        return float(counts[0])
    steps.add_(1.0)
    return steps[0].item()


def torch_kernel_applies(opt, group: dict, like: Tensor) -> bool:
    """Whether one of torch's fused kernels computes ``group``'s formula exactly for tensors
    like ``like``: on CPU (on CUDA they want the step counts on the device; the compiled path
    serves there), fp32/fp64 (torch's bf16 SGD kernel rounds more often), torch's values of
    every switch (the optimizer's ``_torch_kernel_applies``)."""
    return (
        like.device.type == "cpu"
        and like.dtype in (torch.float32, torch.float64)
        and opt._torch_kernel_applies(group)
    )


def run_fused(
    opt, group: dict, bucket: FlatBucket, keys: tuple[str, ...], info: dict, stats: dict
) -> None:
    """One fused step of ``opt``'s formula over ``bucket``."""
    first = dict(bucket.first)  # _update may rebind entries; the views stay
    steps = [count_step(bucket)] if opt._counts_steps(group) else None
    flat = bucket.like
    if torch_kernel_applies(opt, group, flat):
        params, grads, state = bucket.torch_lists()
        if params:
            opt._torch_fused(group, params, grads, state, first.get("step"))
        stats["torch_fused_steps"] += 1
        return
    if bucket.direct:  # pragma: no cover - guarded by the caller (the group is rebuilt)
        raise RuntimeError("a bucket with direct gradients needs one of torch's fused kernels")
    n_inputs = 2 + len(keys)  # param, grad, then the state buffers in ``keys`` order
    rec = RecordingOps(n_inputs)
    state = {key: [Sym(2 + j)] for j, key in enumerate(keys)}
    for key in opt._state_keys(group):
        state.setdefault(key, [None])  # a state this shape of parameter does not keep
    shapes = [] if bucket.shape is None else [bucket.shape]
    dtypes = [flat.dtype]
    inputs = StepInputs(rec, group, [Sym(0)], [Sym(1)], state, steps, [first], info, shapes, dtypes)
    opt._update(inputs)
    for key, vec in bucket.scalars.items():
        if key != "step":  # other scalar state was updated on element 0 only
            vec.fill_(first[key].item())
    # bf16/fp16 parameters compute their scalars in fp32 (the kernel upcasts anyway).
    sdtype = flat.dtype if flat.dtype in (torch.float32, torch.float64) else torch.float32
    scalars = pack_scalars(bucket, rec.values, sdtype)
    calls = bucket.kernel_calls(keys)  # one over flat buffers, or one per local shard
    compile_ = COMPILE
    batched = bucket.shape is not None
    key = (tuple(rec.program), n_inputs, str(flat.device), flat.dtype, compile_, batched)
    kernel = codegen.get_kernel(key, calls[0] if batched and calls else None)
    started = time.perf_counter()
    batch = calls[0][0].shape[0] if batched and calls else 1  # batched: one call
    done = 0
    split = batched and key in codegen.SPLIT_BATCHES  # hashing the program once, not per call
    try:
        for inputs in calls:
            if split:
                _run_one_by_one(kernel, inputs, scalars)
            else:
                kernel(inputs, scalars)
            done += 1
    except Exception as error:  # noqa: BLE001 - any compiler failure falls back, loudly
        verified = kernel in codegen._VERIFIED
        if not compile_ or (verified and not codegen.is_compile_error(error)):
            raise
        if (
            batch > 1
            and key not in codegen.SPLIT_BATCHES
            and _one_by_one_compiles(kernel, calls[0], scalars)
        ):
            # inductor's CPU code generator fails on some batched programs that reduce a
            # state they just updated (its outer-loop fusion: Adafactor's unfactored
            # second moment); the same program compiles for one parameter at a time
            codegen.SPLIT_BATCHES.add(key)
            info["batch_split"] = True
            _finish(kernel, flat, stats, compile_, started)
            return
        # The first call compiles; without a working toolchain (no C++ compiler, no Triton) the
        # same program still runs eagerly, one pass per operation, and the step is not lost. A
        # kernel that has worked before and fails to compile for a new bucket (a recompile)
        # stays compiled for the buckets it serves. A compile error comes before the program
        # touches a tensor, so the calls that failed are run again eagerly.
        warnings.warn(
            f"optimlab fused engine: torch.compile failed ({type(error).__name__}: {error}); "
            "running the recorded program eagerly instead",
            RuntimeWarning,
            stacklevel=4,
        )
        stats["compile_failures"] = stats.get("compile_failures", 0) + 1
        kernel = codegen.get_kernel((*key[:4], False, batched))  # the same program, eagerly
        if not verified:
            codegen._KERNELS[key] = kernel
        for inputs in calls[done:]:
            kernel(inputs, scalars)
    if split:
        info["batch_split"] = True
    _finish(kernel, flat, stats, compile_, started, ran=bool(calls))


def _finish(
    kernel, flat: Tensor, stats: dict, compile_: bool, started: float, ran: bool = True
) -> None:
    """Count a fused step; a kernel that ran (a bucket of local shards may have none on this
    process) has compiled."""
    stats["fused_steps"] += 1
    if not ran:
        return
    codegen._VERIFIED.add(kernel)
    if stats.get("compile_seconds") is None and compile_:
        if flat.device.type == "cuda":
            torch.cuda.synchronize(flat.device)
        stats["compile_seconds"] = time.perf_counter() - started


def _run_one_by_one(kernel, inputs: list[Tensor], scalars: Tensor) -> None:
    """A batched program run on each parameter of the batch alone (views ``[i:i+1]``): every
    member of a bucket shares its scalars."""
    for i in range(inputs[0].shape[0]):
        kernel([t[i : i + 1] for t in inputs], scalars)


def _one_by_one_compiles(kernel, inputs: list[Tensor], scalars: Tensor) -> bool:
    """Run the first parameter of the batch alone; if that compiles, the rest too."""
    try:
        kernel([t[0:1] for t in inputs], scalars)
    except Exception as error:  # noqa: BLE001
        if codegen.is_compile_error(error):
            return False
        raise
    for i in range(1, inputs[0].shape[0]):
        kernel([t[i : i + 1] for t in inputs], scalars)
    return True
