"""Optimizer step speed: every optimlab optimizer and engine against torch.optim's best mode.

    python benchmarks/step_speed.py --quick
    python benchmarks/step_speed.py --layout gpt2 --optimizers adamw sgd --engines foreach fused
    python benchmarks/step_speed.py --recompile-check

Everything runs in one process. For each optimizer the torch.optim baseline is built once and
each optimlab engine is timed against it step by step, alternating the order (torch, ours,
ours, torch, ...), after a warm-up, so that drift on a shared machine hits both sides alike.
Gradients are random, set once and reused; the backward pass is not timed. fp32 throughout.

Reported per row: median milliseconds per step of both sides and their ratio (optimlab /
torch), the achieved bandwidth (the algorithm's minimum bytes per step, from
:func:`min_bytes_per_param`, divided by the median time) and its fraction of the machine's
in-place bandwidth measured in the same run, the peak memory a step allocates beyond what
already exists (params, grads, state), the first step's time and the start-up overhead of
all untimed steps (for the fused engine this includes compiling, which happens in its second
step), and PASS/FAIL against the targets where the layout has them.
See benchmarks/README.md for the meaning of every column.
"""

from __future__ import annotations

import os

# Kineto (the profiler used to account CPU memory) logs every start/stop to stderr unless told
# otherwise before torch is imported.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _layouts  # noqa: E402

import optimlab  # noqa: E402

SCHEMA_VERSION = 1
ENGINES = ("loop", "foreach", "fused")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# -- minimum memory traffic ------------------------------------------------------------------
#: Minimum bytes one fp32 step must move per parameter: every tensor the update must read
#: costs 4 B and every tensor it must write costs 4 B. The parameter and its gradient are
#: read, the parameter is written, and each elementwise state tensor is read and written
#: once: 12 B + 8 B per state tensor. Weight decay, bias correction and bounds cost nothing
#: extra (they reuse values already read). ``(base, {group flag: extra bytes when the flag
#: is on})``.
def min_bytes_per_param(name: str, group: dict[str, Any], element_size: int = 4) -> float:
    """Minimum bytes per parameter of one step of ``name`` with ``group``'s settings, from the
    class's declared state (:meth:`optimlab.Optimizer.min_bytes_per_element`)."""
    cls = optimlab.get_optimizer_class(name)
    return cls.min_bytes_per_element(group) * element_size / 4


# -- what runs against what --------------------------------------------------------------------
#: Settings of our side that differ from the optimizer's defaults (the torch side gets the same).
OURS_KWARGS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}}


def torch_baseline(name: str) -> tuple[str, dict[str, Any], str, bool]:
    """(torch.optim class, kwargs, preferred mode, True if it is the same algorithm) for
    ``name``, from the class's ``torch_twin`` (or, without one, its ``stand_in``, the torch
    algorithm with the same memory traffic). A twin gets our side's hyperparameters wherever it
    takes them; a stand-in only the lr. ``fused`` is preferred where torch has it."""
    cls = optimlab.get_optimizer_class(name)
    twin = cls.torch_twin or cls.stand_in
    theirs = inspect.signature(twin.cls).parameters
    ours = inspect.signature(cls).parameters
    kwargs = dict(twin.fixed)
    settings = {k: p.default for k, p in ours.items() if p.default is not p.empty}
    settings.update(OURS_KWARGS.get(name, {}))
    execution = ("foreach", "fused", "capturable", "differentiable")
    for key, value in settings.items():
        shared = key in theirs and key not in execution
        if shared and (cls.torch_twin is not None or key == "lr"):
            kwargs[key] = value
    kwargs = {k: v for k, v in kwargs.items() if v != theirs[k].default or k in twin.fixed}
    mode = "fused" if "fused" in theirs else "foreach" if "foreach" in theirs else "default"
    return twin.name, kwargs, mode, cls.torch_twin is not None


#: name -> ``torch_baseline(name)``
TORCH_BASELINES: dict[str, tuple[str, dict[str, Any], str, bool]] = {
    name: torch_baseline(name) for name in optimlab.available_optimizers()
}
# -- targets ---------------------------------------------------------------------------------
#: The optimizers torch fuses under their own name (SGD, Adagrad, Adam, AdamW): fused /
#: torch-fused must not exceed these.
FUSED_TWIN_TARGET = {"gpt2": 1.0, "many_small": 0.4}
FUSED_TWINS = tuple(
    name
    for name, (_, _, mode, twin) in TORCH_BASELINES.items()
    if twin and mode == "fused" and not optimlab.get_optimizer_class(name).torch_twin.fixed
)
#: Every other optimizer against a torch foreach baseline ...
OTHER_TARGET = {"gpt2": 0.35, "many_small": 0.15}
#: ... and against a torch fused stand-in (AMSGrad, AdaBound, AMSBound), where a one-pass
#: kernel cannot beat another one-pass kernel by 3x, the fused-twin bound applies instead.
#: AdaBound and AMSBound, which torch lacks, also meet ``OTHER_TARGET`` against the same
#: algorithm in torch's foreach ops (our ``foreach`` engine) when that row ran.
#: Every other elementwise optimizer must also reach this fraction of our fused AdamW's GB/s.
GBPS_FRACTION_OF_ADAMW = 0.85
#: Targets of their own, (optimizer, layout) -> ratio: Adafactor at most 0.2 of torch's
#: Adafactor (its faster mode); Muon, bound by matrix products (benchmarks/muon_step.py
#: measures its FLOP/s), at most torch.optim.Muon's time.
RATIO_TARGETS: dict[tuple[str, str], float | None] = {
    ("adafactor", "gpt2"): 0.2,
    ("muon", "gpt2"): 1.0,
    # Lion's target is its GB/s against our fused AdamW; its stand-in (torch's fused SGD with
    # momentum, the same 20 B/param) is not an algorithm torch offers for Lion
    ("lion", "gpt2"): None,
    ("lion", "many_small"): None,
}
#: optimizers whose step is not one elementwise pass: no GB/s target against AdamW's (their
#: GB/s against the machine's bandwidth is still shown). Adafactor needs three passes, since
#: clipping needs RMS(U) over a whole tensor before any of it is written (24 B/param at
#: least, README); Muon is bound by its matrix products (benchmarks/muon_step.py).
NOT_MEMORY_BOUND = ("adafactor", "muon")
GBPS_PERCENT = round(100 * GBPS_FRACTION_OF_ADAMW)

#: Timed steps per row at least, per layout (small layouts get more: their steps are short).
MIN_STEPS = {"gpt2": 7, "resnet50": 15, "many_small": 25}


# -- machine ---------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    env_keys = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "KMP_BLOCKTIME")
    info = {
        "torch": torch.__version__,
        "optimlab": optimlab.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "device_name": _cpu_model(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ.get(k) for k in env_keys},
        "parallel_info": torch.__config__.parallel_info(),
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def measure_bandwidth(device: str, numel: int = 64 * 2**20, reps: int = 7) -> dict[str, Any]:
    """In-place bandwidth ``a.add_(b, alpha=s)`` (12 B per element) and copy ``b.copy_(a)``
    (8 B per element), median of ``reps`` after one warm-up, in GB/s (1e9 bytes)."""
    a = torch.empty(numel, dtype=torch.float32, device=device).fill_(1.0)
    b = torch.empty(numel, dtype=torch.float32, device=device).fill_(0.5)

    def median_seconds(fn: Callable[[], Any]) -> float:
        fn()
        times = []
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    add_s = median_seconds(lambda: a.add_(b, alpha=1e-6))
    copy_s = median_seconds(lambda: b.copy_(a))
    return {
        "add_gbps": 12 * numel / add_s / 1e9,
        "copy_gbps": 8 * numel / copy_s / 1e9,
        "numel": numel,
        "reps": reps,
        "rule": "add_: 12 B/element (read a, b; write a); copy_: 8 B/element",
    }


# -- tensors and optimizers ------------------------------------------------------------------
def make_side(
    layout: _layouts.Layout, device: str, seed: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Parameters (``requires_grad`` leaves) with their random ``.grad`` set once."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for _, shape in layout:
        p = (torch.randn(shape, generator=gen) * 0.02).to(device).requires_grad_(True)
        p.grad = torch.randn(shape, generator=gen).to(device)
        params.append(p)
    return params, [p.grad for p in params]


def clone_side(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_(True)
        # a model's parameters before their first backward have no gradient (train_step.py)
        q.grad = p.grad.clone() if p.grad is not None else torch.randn_like(q)
        out.append(q)
    return out


def _torch_fused_works(cls: type, kwargs: dict[str, Any], device: torch.device) -> bool:
    """Whether ``cls(fused=True)`` steps on ``device`` (torch checks the device only in the
    first step), tried on a one-element parameter."""
    probe = torch.zeros(1, device=device, requires_grad=True)
    probe.grad = torch.ones_like(probe)
    try:
        cls([probe], fused=True, **kwargs).step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def _faster_of_loop_and_foreach(cls: type, kwargs: dict[str, Any], params, device: str) -> str:
    """``"foreach"`` or ``"for-loop"``, whichever steps ``params`` faster (median of three
    alternating steps after one each). Without a fused kernel torch's foreach mode is not
    always its faster one (Adafactor's for-loop is faster on CPU)."""
    sides = {
        "foreach": cls(clone_side(params), foreach=True, **kwargs),
        "for-loop": cls(clone_side(params), foreach=False, **kwargs),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    for opt in sides.values():
        opt.step()
    for _ in range(3):
        for k, opt in sides.items():
            times[k].append(timed_step(opt, device))
    return min(times, key=lambda k: statistics.median(times[k]))


def build_torch(name: str, params: list[torch.Tensor]) -> tuple[torch.optim.Optimizer, dict]:
    """torch.optim's best mode for ``name``: ``fused=True`` where torch has it for this device,
    otherwise the faster of ``foreach=True`` and its for-loop (or its only mode: Muon)."""
    cls_name, kwargs, mode, twin = TORCH_BASELINES[name]
    cls = getattr(torch.optim, cls_name)
    device = str(params[0].device)
    if mode == "fused" and not _torch_fused_works(cls, kwargs, params[0].device):
        mode = "foreach"
    elif mode == "foreach":
        mode = _faster_of_loop_and_foreach(cls, kwargs, params, device)
    flags = {"default": {}, "for-loop": {"foreach": False}}.get(mode, {mode: True})
    opt = cls(params, **flags, **kwargs)
    extra = ", amsgrad" if kwargs.get("amsgrad") else ""
    label = f"{cls_name}{extra} {mode}" + ("" if twin else " (no twin)")
    desc = {
        "label": label,
        "class": f"torch.optim.{cls_name}",
        "kwargs": kwargs,
        "mode": mode,
        "twin": twin,
        "note": None if twin else f"no torch twin; compared with torch {cls_name}{extra}",
    }
    return opt, desc


def build_ours(name: str, params: list[torch.Tensor], engine: str) -> torch.optim.Optimizer:
    return optimlab.create_optimizer(name, params, engine=engine, **OURS_KWARGS.get(name, {}))


#: bytes read before every timed step (see :func:`evict_caches`)
EVICT_BYTES = 128 * 2**20
_EVICT_BUFFERS: dict[str, torch.Tensor] = {}


def evict_caches(device: str) -> None:
    """Read :data:`EVICT_BYTES`, several times any CPU's last-level cache or a GPU's L2.

    Every timed step then starts from the same state: caches holding nothing of the step's
    tensors and no dirty lines of the previous step. Without this, the step that follows
    another side's step pays for writing back that side's dirty cache lines (about 0.5 ms on
    our CPUs after a foreach step), and the interleaving order decides who pays.
    """
    buf = _EVICT_BUFFERS.get(device)
    if buf is None:
        buf = _EVICT_BUFFERS[device] = torch.ones(EVICT_BYTES // 4, device=device)
    buf.sum()


def timed_step(opt: torch.optim.Optimizer, device: str) -> float:
    evict_caches(device)
    _sync(device)
    t0 = time.perf_counter()
    opt.step()
    _sync(device)
    return time.perf_counter() - t0


MEMORY_CHOICES = ("all", "fused", "none")
MEMORY_METHOD = {
    "cpu": "torch profiler (profile_memory): peak of the running total of c10 CPU allocator "
    "allocations minus frees during one steady-state step",
    "cuda": "torch.cuda.max_memory_allocated() during one steady-state step minus "
    "torch.cuda.memory_allocated() before it",
}


def peak_extra_bytes(opt: torch.optim.Optimizer, device: str) -> int | None:
    """Peak bytes one step allocates on top of what exists before it (see ``MEMORY_METHOD``)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        opt.step()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # a torch whose profiler keeps its results elsewhere
        return None
    mem = [e for e in events if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    mem.sort(key=lambda e: e.start_ns())
    total = peak = 0
    for e in mem:
        total += e.nbytes()
        peak = max(peak, total)
    return peak


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the distinct storages behind the optimizer's state tensors."""
    seen: dict[int, int] = {}
    for st in opt.state.values():
        for t in st.values():
            if torch.is_tensor(t):
                s = t.untyped_storage()
                seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def _reset_compiler() -> None:
    # Each fused optimizer starts from a fresh compiler state, as in a new process (inductor's
    # on-disk cache still applies), and cannot exhaust a shared recompile limit.
    import torch._dynamo

    from optimlab.core import codegen

    torch._dynamo.reset()
    codegen.reset_kernels()


# -- one layout ------------------------------------------------------------------------------
def interleaving(sides: int, steps: int) -> list[int]:
    """The order of the timed steps: each side at least ``steps`` times, and every side
    directly after every side (itself included) equally often.

    A step's time depends on what ran just before it, beyond what :func:`evict_caches`
    removes (a long torch foreach step leaves the next step slower by up to 1 ms on our VMs).
    Plain alternation (0 1 2 | 2 1 0 | ...) puts side 1 after side 0 half the time and side 2
    never; repeating a de Bruijn sequence of order 2 over the sides (for three: 0 0 1 0 2 1 1 2
    2) gives each ordered pair once per cycle.
    """
    cycle: list[int] = []
    # Lyndon words over range(sides) of length dividing 2, in lexicographic order, concatenated
    # (Fredricksen, Kessler and Maiorana).
    for first in range(sides):
        cycle.append(first)
        cycle.extend(j for second in range(first + 1, sides) for j in (first, second))
    # each side appears ``sides`` times per cycle
    repeats = max(1, math.ceil(steps / sides))
    return cycle * repeats


def _median_ms(times: Sequence[float]) -> float:
    return statistics.median(times) * 1e3


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def _empty_row(name: str, engine: str, base: dict, status: str, reason: str | None) -> dict:
    return {
        "optimizer": name,
        "engine": engine,
        "status": status,
        "reason": reason,
        "torch_baseline": base,
        "ms": None,
        "torch_ms": None,
        "ratio": None,
        "ratio_paired": None,
        "steps": 0,
        "times_ms": [],
        "torch_times_ms": [],
        "min_bytes_per_param": None,
        "gbps": None,
        "torch_gbps": None,
        "bw_fraction": None,
        "extra_mib": None,
        "torch_extra_mib": None,
        "state_mib": None,
        "state_bytes_per_param": None,
        "first_step_ms": None,
        "warmup_ms": [],
        "startup_overhead_s": None,
        "torch_first_step_ms": None,
        "compile_seconds": None,
        "fused_stats": None,
        "adamw_ref_ms": None,
        "adamw_ref_times_ms": [],
        "gbps_fraction_of_adamw": None,
        "target": None,
    }


def _measure_row(
    row: dict[str, Any],
    torch_opt: torch.optim.Optimizer,
    params: list[torch.Tensor],
    *,
    n_params: int,
    device: str,
    bandwidth: dict[str, Any] | None,
    min_steps: int,
    max_steps: int,
    warmup: int,
    budget_s: float,
    measure_memory: bool,
    reference: torch.optim.Optimizer | None = None,
) -> None:
    """Fill ``row`` with the timings of our ``row["engine"]`` against ``torch_opt``.

    ``reference`` (our fused AdamW on its own copy of the layout), when given, is stepped in
    the same interleaved sequence, so the GB/s target compares numbers taken side by side.
    """
    name, engine = row["optimizer"], row["engine"]
    if engine == "fused":
        _reset_compiler()
    ours = build_ours(name, params, engine)
    row["first_step_ms"] = timed_step(ours, device) * 1e3
    bpp = min_bytes_per_param(name, ours.param_groups[0])
    row["min_bytes_per_param"] = bpp
    sides = [torch_opt, ours] + ([reference] if reference is not None else [])

    last = [0.0] * len(sides)
    startup = [row["first_step_ms"] / 1e3]
    # The fused engine runs its first step eagerly and compiles in the second: it needs two.
    for _ in range(max(2 if engine == "fused" else 1, warmup)):
        last = [timed_step(opt, device) for opt in sides]
        startup.append(last[1])
    if measure_memory:
        row["extra_mib"] = _mib(peak_extra_bytes(ours, device))
    steps = min_steps
    if budget_s > 0:
        steps = max(min_steps, min(max_steps, math.ceil(budget_s / sum(last))))
    times: list[list[float]] = [[] for _ in sides]
    for k in interleaving(len(sides), steps):
        times[k].append(timed_step(sides[k], device))
    steps = len(times[1])  # at least the number asked for: whole cycles of the interleaving
    t_torch, t_ours = times[0], times[1]
    ms, torch_ms = _median_ms(t_ours), _median_ms(t_torch)
    stats = getattr(ours, "fused_stats", None)
    row.update(
        ms=ms,
        torch_ms=torch_ms,
        ratio=ms / torch_ms,
        ratio_paired=statistics.median(a / b for a, b in zip(t_ours, t_torch)),
        steps=steps,
        times_ms=[t * 1e3 for t in t_ours],
        torch_times_ms=[t * 1e3 for t in t_torch],
        gbps=bpp * n_params / (ms / 1e3) / 1e9,
        torch_gbps=bpp * n_params / (torch_ms / 1e3) / 1e9,
        state_mib=_mib(state_bytes(ours)),
        state_bytes_per_param=state_bytes(ours) / n_params,
        warmup_ms=[t * 1e3 for t in startup[1:]],
        # What the untimed steps cost beyond as many steady steps: state creation, flat
        # buffers, compiling (the fused engine compiles in its second step).
        startup_overhead_s=max(0.0, sum(startup) - len(startup) * ms / 1e3),
        fused_stats=dict(stats) if isinstance(stats, dict) else None,
    )
    if reference is not None:
        ref_ms = _median_ms(times[2])
        ref_bpp = min_bytes_per_param("adamw", reference.param_groups[0])
        row["adamw_ref_ms"] = ref_ms
        row["adamw_ref_times_ms"] = [t * 1e3 for t in times[2]]
        row["gbps_fraction_of_adamw"] = (bpp / ms) / (ref_bpp / ref_ms)
    if isinstance(stats, dict) and stats.get("compile_seconds") is not None:
        row["compile_seconds"] = float(stats["compile_seconds"])
    if bandwidth:
        row["bw_fraction"] = row["gbps"] / bandwidth["add_gbps"]


def _build_reference(params: list[torch.Tensor], device: str) -> torch.optim.Optimizer | None:
    """Our fused AdamW on a copy of the layout, past its start-up; ``None`` if unavailable."""
    try:
        ref = build_ours("adamw", clone_side(params), "fused")
        for _ in range(3):
            ref.step()
        _sync(device)
    except NotImplementedError:
        return None
    return ref


def _needs_gbps_target(layout_name: str, name: str, engine: str) -> bool:
    return (
        engine == "fused"
        and layout_name in FUSED_TWIN_TARGET
        and name not in FUSED_TWINS
        and name not in NOT_MEMORY_BOUND
    )


def run_layout(
    layout_name: str,
    layout: _layouts.Layout,
    *,
    optimizers: Sequence[str],
    engines: Sequence[str] = ENGINES,
    device: str = "cpu",
    bandwidth: dict[str, Any] | None = None,
    min_steps: int | None = None,
    warmup: int = 2,
    budget_s: float = 4.0,
    max_steps: int = 200,
    memory: str = "all",
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time ``optimizers`` x ``engines`` on ``layout`` against torch; one dict per row.

    After the first step (timed alone) and ``warmup`` alternating steps, the number of timed
    pairs is ``budget_s`` divided by the warm-up pair time, clamped to
    ``[min_steps, max_steps]``. ``memory``: measure the peak extra memory of ``"all"`` rows,
    of the ``"fused"`` rows only (and the torch baselines), or ``"none"``.
    """
    if memory not in MEMORY_CHOICES:
        raise ValueError(f"memory must be one of {MEMORY_CHOICES}, got {memory!r}")
    log = log or (lambda msg: None)
    if min_steps is None:
        min_steps = MIN_STEPS.get(layout_name, 7)
    torch_params, _ = make_side(layout, device, seed=0)
    rows: list[dict[str, Any]] = []
    total = len(optimizers) * len(engines)
    reference: list[Any] = []  # our fused AdamW for the GB/s target, built when first needed
    all_params = torch_params
    for name in optimizers:
        torch_params = all_params
        if optimlab.get_optimizer_class(name).matrix_only:
            # Muon takes matrices only: the layout's 2-D tensors (the hidden matrices and the
            # embeddings: the step is the same work whatever a matrix is used for)
            torch_params = [p for p in all_params if p.dim() == 2]
            if not torch_params:
                for engine in engines:
                    reason = "the layout has no matrices"
                    base = {"label": "—", "mode": None, "twin": None, "note": None}
                    rows.append(_empty_row(name, engine, base, "n/a", reason))
                    log(f"[{len(rows)}/{total}] {layout_name} {name} {engine}: n/a ({reason})")
                continue
        n_params = sum(p.numel() for p in torch_params)
        torch_opt, base = build_torch(name, torch_params)
        torch_first = timed_step(torch_opt, device)
        torch_opt.step()
        torch_extra = peak_extra_bytes(torch_opt, device) if memory != "none" else None
        for engine in engines:
            label = f"[{len(rows) + 1}/{total}] {layout_name} {name} {engine}"
            row = _empty_row(name, engine, base, "ok", None)
            row["torch_first_step_ms"] = torch_first * 1e3
            row["torch_extra_mib"] = _mib(torch_extra)
            rows.append(row)
            try:
                ref = None
                if _needs_gbps_target(layout_name, name, engine):
                    if not reference:
                        reference.append(_build_reference(all_params, device))
                    ref = reference[0]
                _measure_row(
                    row,
                    torch_opt,
                    # Fresh tensors for every row: an engine may re-point parameters into
                    # buffers of its own, which must not leak into the next row.
                    clone_side(torch_params),
                    n_params=n_params,
                    device=device,
                    bandwidth=bandwidth,
                    min_steps=min_steps,
                    max_steps=max_steps,
                    warmup=warmup,
                    budget_s=budget_s,
                    measure_memory=memory == "all" or (memory == "fused" and engine == "fused"),
                    reference=ref,
                )
            except NotImplementedError as exc:
                row.update(status="n/a", reason=f"NotImplementedError: {exc}")
                log(f"{label}: n/a ({exc})")
            except Exception as exc:  # record it, finish the other rows, exit non-zero
                row.update(status="error", reason=f"{type(exc).__name__}: {exc}")
                log(f"{label}: ERROR {type(exc).__name__}: {exc}")
            else:
                ms, torch_ms = row["ms"], row["torch_ms"]
                log(f"{label}: {ms:.2f} ms vs torch {torch_ms:.2f} ms (x{ms / torch_ms:.2f})")
            gc.collect()
        del torch_opt
        gc.collect()
    reference.clear()
    apply_targets(rows, layout_name)
    return rows


def apply_targets(rows: list[dict[str, Any]], layout_name: str) -> None:
    """Set ``row["target"]`` on the fused rows of a layout that has targets (see README).

    The GB/s rule uses the row's own interleaved fused-AdamW reference when it has one
    (``gbps_fraction_of_adamw``), else the fused AdamW row of the same run.
    """
    if layout_name not in FUSED_TWIN_TARGET:
        return
    adamw = next((r for r in rows if r["optimizer"] == "adamw" and r["engine"] == "fused"), None)
    adamw_gbps = adamw["gbps"] if adamw and adamw["status"] == "ok" else None
    foreach = {r["optimizer"]: r for r in rows if r["engine"] == "foreach" and r["status"] == "ok"}
    for row in rows:
        if row["engine"] != "fused":
            continue
        name, base = row["optimizer"], row["torch_baseline"]
        if (name, layout_name) in RATIO_TARGETS:
            bound = RATIO_TARGETS[(name, layout_name)]
        elif name in NOT_MEMORY_BOUND:
            continue
        elif name in FUSED_TWINS or base["mode"] == "fused":
            bound = FUSED_TWIN_TARGET[layout_name]
        else:
            bound = OTHER_TARGET[layout_name]
        target: dict[str, Any] = {
            "ratio_max": bound,
            "gbps_min_fraction_of_adamw": None,
            "gbps_fraction_of_adamw": None,
            "gbps_basis": None,
            "foreach_ratio_max": None,
            "foreach_ratio": None,
            "verdict": None,
            "failed": [],
            "unchecked": [],
        }
        row["target"] = target
        if row["status"] != "ok":
            continue
        if bound is not None and row["ratio"] > bound:
            target["failed"].append("ratio")
        if not base.get("twin", True) and bound is not None:
            # torch has no such class: its best mode would be these foreach ops.
            target["foreach_ratio_max"] = OTHER_TARGET[layout_name]
            if name in foreach:
                target["foreach_ratio"] = row["ms"] / foreach[name]["ms"]
                if target["foreach_ratio"] > OTHER_TARGET[layout_name]:
                    target["failed"].append("foreach ratio")
            else:
                target["unchecked"].append("foreach ratio: no foreach row in this run")
        if _needs_gbps_target(layout_name, name, "fused"):
            target["gbps_min_fraction_of_adamw"] = GBPS_FRACTION_OF_ADAMW
            if row.get("gbps_fraction_of_adamw") is not None:
                fraction, basis = row["gbps_fraction_of_adamw"], "interleaved reference"
            elif adamw_gbps:
                fraction, basis = row["gbps"] / adamw_gbps, "fused AdamW row"
            else:
                fraction, basis = None, None
                target["unchecked"].append("GB/s: no fused AdamW to compare with")
            target.update(gbps_fraction_of_adamw=fraction, gbps_basis=basis)
            if fraction is not None and fraction < GBPS_FRACTION_OF_ADAMW:
                target["failed"].append("GB/s")
        target["verdict"] = "FAIL" if target["failed"] else "PASS"


# -- recompile check -------------------------------------------------------------------------
#: The hyperparameter each optimizer varies during the recompile check (besides lr):
#: (group key, index in a tuple or None, start, end). Constructor kwargs come from ``RC_KWARGS``.
RC_VARY: dict[str, tuple[str, int | None, float, float] | None] = {
    "sgd": ("momentum", None, 0.9, 0.8),
    "rmsprop": ("momentum", None, 0.9, 0.8),
    "adadelta": ("rho", None, 0.9, 0.95),
    "adagrad": None,  # no momentum-like coefficient: the lr schedule alone
}
RC_KWARGS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}, "rmsprop": {"momentum": 0.9}}
RC_LAYOUT: _layouts.Layout = _layouts.many_small(8, 512) + [
    ("w", (64, 32)),
    ("b", (32,)),
    ("conv", (8, 8, 3, 3)),
]


def _dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    # One graph per compile, recompiles included. (``counters["frames"]`` stays at 0 for
    # ``torch.compile(fullgraph=True)`` in torch 2.13, so it cannot be the measure.)
    return {
        "graphs": counters["stats"]["unique_graphs"],
        "frames": counters["frames"]["total"],
        "aot_autograd": counters["aot_autograd"]["total"],
    }


def _past_initial(opt: torch.optim.Optimizer, i: int) -> bool:
    """Whether step ``i`` (0-based) completed the start-up: the first fused step for the fused
    engine (its first step runs eagerly and it compiles in the next), else the first step."""
    stats = getattr(opt, "fused_stats", None)
    if getattr(opt, "engine", None) != "fused" or not isinstance(stats, dict):
        return True
    return stats.get("fused_steps", 0) + stats.get("torch_fused_steps", 0) > 0


def recompile_check(
    optimizers: Sequence[str],
    *,
    steps: int = 1000,
    device: str = "cpu",
    engine: str = "fused",
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """``steps`` steps of each optimizer with a cosine lr schedule and a changing beta1 (or
    momentum, or rho), from a fresh dynamo state. ``startup_compiles`` counts the frames dynamo
    compiles until the first fused step has run (``initial_steps`` steps), ``recompiles`` those
    it compiles after that: 0 expected. Every kernel call goes through dynamo's guards, not
    only the first of each input signature (``codegen.DIRECT_CALLS`` is off for the check)."""
    from optimlab.core import codegen

    log = log or (lambda msg: None)
    direct, codegen.DIRECT_CALLS = codegen.DIRECT_CALLS, False
    try:
        return _recompile_rows(optimizers, steps=steps, device=device, engine=engine, log=log)
    finally:
        codegen.DIRECT_CALLS = direct


def _recompile_rows(
    optimizers: Sequence[str],
    *,
    steps: int,
    device: str,
    engine: str,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows = []
    for name in optimizers:
        vary = RC_VARY.get(name, ("betas", 0, 0.9, 0.85))
        row: dict[str, Any] = {
            "optimizer": name,
            "engine": engine,
            "steps": steps,
            "varied": ["lr"]
            + ([vary[0] if vary[1] is None else f"{vary[0]}[{vary[1]}]"] if vary else []),
            "status": "ok",
            "reason": None,
            "initial_steps": None,
            "startup_compiles": None,
            "recompiles": None,
            "recompile_steps": None,
            "dynamo_counters": None,
            "seconds": None,
            "fused_stats": None,
        }
        rows.append(row)
        params, _ = make_side(RC_LAYOUT, device, seed=1)
        t0 = time.perf_counter()
        try:
            _reset_compiler()
            before = _dynamo_counts()
            kwargs = RC_KWARGS.get(name, {})
            opt = optimlab.create_optimizer(name, params, engine=engine, **kwargs)
            initial_steps, after_first = None, before
            seen, recompile_at = before["graphs"], []
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=steps, eta_min=0.1 * opt.param_groups[0]["lr"]
            )
            for i in range(steps):
                if vary is not None:
                    key, idx, first, last = vary
                    value = last + (first - last) * 0.5 * (1 + math.cos(math.pi * i / steps))
                    for group in opt.param_groups:
                        if idx is None:
                            group[key] = value
                        else:
                            seq = list(group[key])
                            seq[idx] = value
                            group[key] = type(group[key])(seq)
                opt.step()
                sched.step()
                now = _dynamo_counts()["graphs"]
                if initial_steps is None and _past_initial(opt, i):
                    initial_steps, after_first = i + 1, _dynamo_counts()
                elif initial_steps is not None and now > seen:
                    recompile_at.append(i + 1)
                seen = now
            _sync(device)
        except NotImplementedError as exc:
            row.update(status="n/a", reason=f"NotImplementedError: {exc}")
            log(f"recompile check {name}: n/a ({exc})")
            continue
        except Exception as exc:
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}")
            log(f"recompile check {name}: ERROR {type(exc).__name__}: {exc}")
            continue
        end = _dynamo_counts()
        stats = getattr(opt, "fused_stats", None)
        if initial_steps is None:
            row.update(status="not fused", reason="no step of the run was fused")
        row.update(
            initial_steps=initial_steps,
            startup_compiles=after_first["graphs"] - before["graphs"],
            recompiles=end["graphs"] - after_first["graphs"],
            recompile_steps=recompile_at,
            dynamo_counters={k: end[k] - before[k] for k in end},
            seconds=time.perf_counter() - t0,
            fused_stats=dict(stats) if isinstance(stats, dict) else None,
        )
        log(f"recompile check {name}: {row['recompiles']} recompiles in {steps} steps")
    return rows


# -- output ----------------------------------------------------------------------------------
def _doc_header(benchmark: str, device: str) -> dict[str, Any]:
    """The fields every result file starts with: what ran, when, how, and on what."""
    return {
        "benchmark": benchmark,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": sys.argv,
        "machine": machine_info(device),
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = (
    "optimizer",
    "engine",
    "torch baseline",
    "ms/step",
    "torch ms",
    "ratio",
    "GB/s",
    "% BW",
    "extra MiB",
    "torch extra",
    "state B/param",
    "1st step ms",
    "startup s",
    "target",
)


def verdict_text(target: dict[str, Any] | None) -> str:
    """The ``target`` column: the verdict and each checked number against its bound."""
    if target is None:
        return ""
    if target["verdict"] is None:
        return "-"
    bad = target["failed"]
    parts = []
    if target["ratio_max"] is not None:
        parts.append(f"ratio{'>' if 'ratio' in bad else '<='}{target['ratio_max']}")
    fraction = target["gbps_fraction_of_adamw"]
    if fraction is not None:
        sign = "<" if "GB/s" in bad else ">="
        parts.append(f"GB/s {100 * fraction:.0f}%{sign}{GBPS_PERCENT}% AdamW")
    if target.get("foreach_ratio") is not None:
        sign = ">" if "foreach ratio" in bad else "<="
        parts.append(
            f"{target['foreach_ratio']:.2f}{sign}{target['foreach_ratio_max']} of our foreach"
        )
    parts += [f"{unchecked.split(':')[0]} unchecked" for unchecked in target["unchecked"]]
    verdict = f"{target['verdict']}: " + ", ".join(parts)
    return verdict


def table_cells(row: dict[str, Any]) -> list[str]:
    startup = _fmt(row["startup_overhead_s"], ".2f")
    if row["compile_seconds"] is not None:
        startup += f" (compile {row['compile_seconds']:.1f})"
    verdict = verdict_text(row["target"])
    ms = {"ok": _fmt(row["ms"], ".2f"), "n/a": "n/a"}.get(row["status"], "error")
    bw = row["bw_fraction"]
    return [
        row["optimizer"],
        row["engine"],
        row["torch_baseline"]["label"],
        ms,
        _fmt(row["torch_ms"], ".2f"),
        _fmt(row["ratio"], ".2f"),
        _fmt(row["gbps"], ".1f"),
        "-" if bw is None else f"{100 * bw:.0f}%",
        _fmt(row["extra_mib"], ".1f"),
        _fmt(row["torch_extra_mib"], ".1f"),
        _fmt(row["state_bytes_per_param"], ".3g"),
        _fmt(row["first_step_ms"], ".1f"),
        startup,
        verdict,
    ]


def _header(doc: dict[str, Any]) -> str:
    m, bw, lay = doc["machine"], doc["bandwidth"], doc["layout"]
    env = m["env"]
    return (
        f"layout {lay['name']}: {lay['tensors']} tensors, {lay['params']:,} params, fp32"
        f"{' (quick)' if lay['quick'] else ''}\n"
        f"{m['device']}: {m['device_name']} | torch {m['torch']} | threads {m['threads']} "
        f"(interop {m['interop_threads']}), OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, "
        f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}\n"
        f"bandwidth (same run): add_ {bw['add_gbps']:.1f} GB/s, copy_ {bw['copy_gbps']:.1f} GB/s"
    )


def _print_plain(title: str, header: Sequence[str], body: list[list[str]], out) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in body:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=out)


def print_table(title: str, header: Sequence[str], body: list[list[str]], plain: bool) -> None:
    print(title)
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(title, header, body, sys.stdout)
        return
    table = Table()
    for i, h in enumerate(header):
        justify = "left" if i < 3 or i == len(header) - 1 else "right"
        table.add_column(h, justify=justify, no_wrap=True)
    for r in body:
        style = "red" if r[-1].startswith("FAIL") or r[3] == "error" else None
        table.add_row(*r, style=style)
    # Wide enough never to wrap a row, also when the output is not a terminal.
    Console(width=max(300, Console().width)).print(table)


def print_result(doc: dict[str, Any], plain: bool = False) -> None:
    print_table(_header(doc), COLUMNS, [table_cells(r) for r in doc["rows"]], plain)
    reasons = {}
    for r in doc["rows"]:
        if r["status"] != "ok":
            reasons.setdefault(r["reason"], []).append(f"{r['optimizer']}/{r['engine']}")
    for reason, where in reasons.items():
        print(f"  not run: {', '.join(where)}: {reason}")
    notes = {r["torch_baseline"]["note"] for r in doc["rows"] if r["torch_baseline"]["note"]}
    for note in sorted(notes):
        print(f"  note: {note}")


# -- command line ----------------------------------------------------------------------------
def default_json_path(layout: str, device: str, kind: str = "step_speed") -> Path:
    return RESULTS_DIR / f"{kind}-{layout}-{device.split(':')[0]}.json"


def _json_path(arg: str | None, layout: str, device: str, several: bool) -> Path:
    if arg is None:
        return default_json_path(layout, device)
    path = Path(arg)
    return path.with_name(f"{path.stem}-{layout}{path.suffix}") if several else path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = optimlab.available_optimizers()
    ap = argparse.ArgumentParser(
        description="Time optimlab's optimizers and engines against torch.optim's best mode.",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="many_small only, 7 timed steps per row: every optimizer and engine "
        "in under 2 minutes on 2 cores (plus fused compile time)",
    )
    ap.add_argument(
        "--layout",
        nargs="+",
        choices=[*_layouts.LAYOUTS, "all"],
        default=None,
        help="parameter layout(s); default: all, or many_small with --quick",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads, both sides")
    ap.add_argument(
        "--optimizers",
        nargs="+",
        choices=names,
        default=names,
        metavar="NAME",
        help=f"subset of: {' '.join(names)}",
    )
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="result file; default benchmarks/results/step_speed-<layout>-<device>"
        ".json (with several layouts, -<layout> is added to PATH's stem)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="minimum timed steps per row (default per layout: "
        + ", ".join(f"{k} {v}" for k, v in MIN_STEPS.items())
        + "; 7 with --quick), or the step count of --recompile-check (1000)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps per side per row after the first (default 2, 1 with --quick; "
        "at least 2 for the fused engine, which compiles in its second step)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed steps per row; more steps if they fit (default 4, 0 with --quick)",
    )
    ap.add_argument(
        "--memory",
        choices=MEMORY_CHOICES,
        default=None,
        help="rows whose peak extra memory is measured (one profiled step each, slow for "
        "many small tensors on CPU); default all, fused with --quick",
    )
    ap.add_argument("--plain", action="store_true", help="plain-text table even if rich exists")
    ap.add_argument(
        "--recompile-check",
        action="store_true",
        help="instead of timing: steps of each fused optimizer with a cosine lr and "
        "a changing beta1/momentum, counting recompiles (0 expected)",
    )
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main_recompile(args: argparse.Namespace) -> int:
    steps = args.steps or 1000
    rows = recompile_check(args.optimizers, steps=steps, device=args.device, log=_log)
    header = (
        "optimizer",
        "varied",
        "steps",
        "first fused step",
        "start-up compiles",
        "recompiles",
        "compile s",
        "eager steps",
        "seconds",
        "result",
    )
    body = []
    for r in rows:
        if r["status"] in ("ok", "not fused"):
            eager = (r["fused_stats"] or {}).get("eager_steps")
            result = "PASS" if r["status"] == "ok" and r["recompiles"] == 0 else "FAIL"
            if r["recompile_steps"]:
                result += f" (at step {', '.join(map(str, r['recompile_steps'][:5]))})"
            cells = [
                _fmt(r["initial_steps"], "d"),
                str(r["startup_compiles"]),
                str(r["recompiles"]),
                _fmt((r["fused_stats"] or {}).get("compile_seconds"), ".1f"),
                _fmt(eager, "d"),
                f"{r['seconds']:.1f}",
                result,
            ]
        else:
            cells = ["-"] * 6 + [r["status"]]
        body.append([r["optimizer"], " ".join(r["varied"]), str(r["steps"]), *cells])
    title = (
        f"recompile check: engine fused, {steps} steps, cosine lr, torch {torch.__version__}\n"
        "compiles = graphs dynamo compiles (counters['stats']['unique_graphs']); "
        "recompiles = those after the first fused step (0 expected); "
        "eager steps = fused_stats['eager_steps']"
    )
    print_table(title, header, body, args.plain)
    for reason in {r["reason"] for r in rows if r["reason"]}:
        print(f"  not run: {reason}")
    doc = {
        **_doc_header("recompile_check", args.device),
        "layout": {"tensors": len(RC_LAYOUT), "params": _layouts.numel(RC_LAYOUT)},
        "rows": rows,
    }
    path = (
        Path(args.json) if args.json else default_json_path("small", args.device, "recompile_check")
    )
    write_json(path, doc)
    print(f"wrote {path}")
    if any(r["status"] in ("error", "not fused") for r in rows):
        return 1
    return 1 if any(r["status"] == "ok" and r["recompiles"] for r in rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "step_speed: --device cuda was asked for, but torch sees no CUDA device "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    if args.recompile_check:
        return main_recompile(args)

    layouts = args.layout or (["many_small"] if args.quick else ["all"])
    if "all" in layouts:
        layouts = list(_layouts.LAYOUTS)
    budget = args.budget if args.budget is not None else (0.0 if args.quick else 4.0)
    memory = args.memory or ("fused" if args.quick else "all")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    bandwidth = measure_bandwidth(args.device, reps=5 if args.quick else 9)
    status = 0
    for layout_name in layouts:
        layout = _layouts.get_layout(layout_name)
        min_steps = args.steps or (7 if args.quick else MIN_STEPS[layout_name])
        t0 = time.perf_counter()
        rows = run_layout(
            layout_name,
            layout,
            optimizers=args.optimizers,
            engines=args.engines,
            device=args.device,
            bandwidth=bandwidth,
            min_steps=min_steps,
            warmup=warmup,
            budget_s=budget,
            memory=memory,
            log=_log,
        )
        doc = {
            **_doc_header("step_speed", args.device),
            "bandwidth": bandwidth,
            "layout": {
                "name": layout_name,
                "tensors": len(layout),
                "params": _layouts.numel(layout),
                "quick": args.quick,
            },
            "settings": {
                "dtype": "float32",
                "min_steps": min_steps,
                "warmup": warmup,
                "budget_s": budget,
                "memory": memory,
                "memory_method": None if memory == "none" else MEMORY_METHOD[args.device],
                "timing": "perf_counter around optimizer.step(), torch/ours alternating "
                "(ABBA); ms = median; ratio = median ours / median torch",
                "wall_seconds": time.perf_counter() - t0,
            },
            "rows": rows,
        }
        print_result(doc, plain=args.plain)
        path = _json_path(args.json, layout_name, args.device, len(layouts) > 1)
        write_json(path, doc)
        print(f"wrote {path}")
        if any(r["status"] == "error" for r in rows):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
