"""What the distributed tests run in their worker processes (tests/test_distributed*.py).

Each scenario is a function ``scenario(rank, world, *args) -> result`` run in ``world``
processes by :func:`spawn`: CPU, the gloo backend, a ``FileStore`` in a temporary directory (no
ports, so ``pytest -n 2`` cannot collide), one torch thread per process. Results travel back to
the test as files; the test asserts on them. A collective that waits for a missing peer times
out (``TIMEOUT``) instead of hanging the suite.

Every scenario runs all the optimizers it covers in one process group: starting processes costs
seconds, a training run milliseconds.
"""

from __future__ import annotations

import datetime
import math
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import optimlab
import optimlab.core.sharding
from optimlab.guards.base import find_guard

from specs import SPEC_BY_NAME, SPECS

#: every test module of the distributed set is skipped on a torch without gloo
needs_gloo = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed"
)

TIMEOUT = datetime.timedelta(seconds=120)
#: global batch, split evenly between the ranks
BATCH = 8
LENGTH = 6


class Net(nn.Module):
    """A small model with every kind of parameter sharding meets: a 3-D convolution weight, 2-D
    weights whose rows do not split evenly over two ranks (7 = 4 + 3), and a [1, 7] weight and
    [1] bias of which the second rank holds no rows at all."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 5, kernel_size=3)
        self.fc1 = nn.Linear(5 * (LENGTH - 2), 7)
        self.fc2 = nn.Linear(7, 1)

    def forward(self, x):
        h = torch.tanh(self.conv(x)).flatten(1)
        return self.fc2(torch.tanh(self.fc1(h)))


def make_model(dtype=torch.float64, seed=0) -> Net:
    torch.manual_seed(seed)
    return Net().to(dtype)


def batch(step: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step`` (the same on every rank)."""
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, 3, LENGTH, generator=gen).to(dtype)
    y = torch.randn(BATCH, 1, generator=gen).to(dtype)
    return x, y


def local_batch(step: int, rank: int, world: int, dtype=torch.float64):
    x, y = batch(step, dtype)
    per = BATCH // world
    return x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]


def loss_fn(model, x, y):
    return nn.functional.mse_loss(model(x), y)


def optimizer_kwargs(name: str, cfg: dict) -> dict:
    """A spec config with the class's exact arithmetic (Muon: Newton–Schulz in float64)."""
    return {**cfg, **SPEC_BY_NAME[name].cls.float64_options}


def build_optimizer(name: str, model: nn.Module, cfg: dict, engine: str):
    cls = SPEC_BY_NAME[name].cls
    return cls(cls.param_groups_for(model), **optimizer_kwargs(name, cfg), engine=engine)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective), or the tensor itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: full(p.detach()).clone() for k, p in model.named_parameters()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() if a[k].numel() else 0.0 for k in a)


def train(model, opt, steps: int, data, start: int = 0, dtype=torch.float64) -> None:
    """``steps`` training steps from step ``start``; ``data(step, dtype)`` gives each batch."""
    for step in range(start, start + steps):
        x, y = data(step, dtype)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()


def train_single(name: str, cfg: dict, engine: str, steps: int, dtype=torch.float64):
    """The reference: one process, the whole batch."""
    model = make_model(dtype)
    opt = build_optimizer(name, model, cfg, engine)
    train(model, opt, steps, batch, dtype=dtype)
    return model, opt


def sharded_model(dtype=torch.float64, seed=0) -> Net:
    """:func:`make_model` under FSDP2: ``fc1`` its own unit, the rest the root's."""
    from torch.distributed.fsdp import fully_shard

    model = make_model(dtype, seed)
    fully_shard(model.fc1)
    fully_shard(model)
    return model


def rank_data(rank: int, world: int):
    """This rank's half of each global batch."""

    def data(step, dtype=torch.float64):
        return local_batch(step, rank, world, dtype)

    return data


#: the tolerance on float64 weights after a few steps against one process: elementwise
#: formulas only see gradients averaged in another order; Adafactor's statistics and RMS and
#: Muon's Newton–Schulz also add up their sums in another order
TOLERANCE = {"elementwise": 1e-12, "whole-tensor": 1e-11}
WHOLE_TENSOR = ("adafactor", "muon")


def tolerance(name: str) -> float:
    return TOLERANCE["whole-tensor" if name in WHOLE_TENSOR else "elementwise"]


def fused_report(opt) -> dict:
    """What the last step's ``step_info`` says about fusing, per group."""
    return {
        "fused": [bool(info.get("fused")) for info in opt.step_info],
        "eager_params": sum(info.get("eager_params", 0) for info in opt.step_info),
        "fallback": [info.get("fallback") for info in opt.step_info if info.get("fallback")],
    }


def _case(out: dict, key: str, fn: Callable) -> None:
    """Run one case, keeping its result or the error (one case failing does not hide the
    others; every rank fails alike, so no collective is left waiting)."""
    try:
        out[key] = fn()
    except Exception as error:  # noqa: BLE001 - reported by the test, with its traceback
        out[key] = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"}


# -- scenarios -----------------------------------------------------------------------------------
STEPS = 3


_REFERENCES: dict[tuple, dict] = {}


def reference(name: str, index: int, engine: str) -> dict[str, torch.Tensor]:
    """The weights one process reaches with config ``index`` of optimizer ``name`` (cached:
    several scenarios compare with the same run)."""
    key = (name, index, engine)
    if key not in _REFERENCES:
        model, _ = train_single(name, SPEC_BY_NAME[name].configs[index], engine, STEPS)
        _REFERENCES[key] = full_params(model)
    return _REFERENCES[key]


def fsdp2_runs() -> list[tuple[str, int, str]]:
    """Every config on the fused engine (sharded parameters in buckets of local shards, or on
    the foreach path for formulas that reduce over whole tensors), and each optimizer's first
    config on the loop and foreach engines."""
    runs = []
    for spec in SPECS:
        runs += [(spec.name, i, "fused") for i in range(len(spec.configs))]
        runs += [(spec.name, 0, engine) for engine in ("loop", "foreach")]
    return runs


def fsdp2_training(rank: int, world: int) -> dict:
    """:func:`fsdp2_runs` with FSDP2 on ``world`` processes against one process on the same
    global batches (rank 0 compares; every rank reports what it fused)."""
    out: dict = {}
    for name, i, engine in fsdp2_runs():

        def case(name=name, i=i, engine=engine):
            model = sharded_model()
            opt = build_optimizer(name, model, SPEC_BY_NAME[name].configs[i], engine)
            train(model, opt, STEPS, rank_data(rank, world))
            got = full_params(model)
            result = {"fusing": fused_report(opt)}
            if rank == 0:
                result["err"] = max_diff(got, reference(name, i, engine))
            return result

        _case(out, f"{name}-{i}-{engine}", case)
    return out


def ddp_scenarios(rank: int, world: int) -> dict:
    """:func:`ddp_and_zero_training` and :func:`ddp_nonfinite_agreement` in one process group."""
    return {
        "training": ddp_and_zero_training(rank, world),
        "agreement": ddp_nonfinite_agreement(rank, world),
        "guards": ddp_and_zero_guards(rank, world),
    }


#: (mode, engine) of the DDP and ZeRO runs: plain DDP, DDP with gradient_as_bucket_view=True,
#: ZeroRedundancyOptimizer, and with parameters_as_bucket_view=True
DDP_RUNS = (
    ("ddp", "loop"),
    ("ddp", "foreach"),
    ("ddp", "fused"),
    ("ddp-grad-view", "fused"),
    ("zero", "loop"),
    ("zero", "foreach"),
    ("zero", "fused"),
    ("zero-bucket-view", "fused"),
)


def ddp_and_zero_training(rank: int, world: int) -> dict:
    """Every optimizer (its first config) under DDP (gradients averaged, plain parameters) and
    under ``ZeroRedundancyOptimizer`` (each rank steps its partition, then broadcasts), against
    one process (rank 0 compares)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict = {}
    for spec in SPECS:
        for mode, engine in DDP_RUNS:

            def case(mode=mode, spec=spec, engine=engine):
                model = make_model()
                ddp = DDP(model, gradient_as_bucket_view=mode == "ddp-grad-view")
                groups = spec.cls.param_groups_for(model)
                kwargs = {**optimizer_kwargs(spec.name, spec.configs[0]), "engine": engine}
                if mode.startswith("zero"):
                    opt = ZeroRedundancyOptimizer(
                        groups,
                        optimizer_class=spec.cls,
                        parameters_as_bucket_view=mode == "zero-bucket-view",
                        **kwargs,
                    )
                    inner = opt.optim
                else:
                    opt = inner = spec.cls(groups, **kwargs)
                train(ddp, opt, STEPS, rank_data(rank, world))
                result = {"fusing": fused_report(inner)}
                if rank == 0:
                    result["err"] = max_diff(full_params(model), reference(spec.name, 0, engine))
                return result

            _case(out, f"{mode}-{spec.name}-0-{engine}", case)
    return out


# -- guards --------------------------------------------------------------------------------------
def _adamw(model, engine="fused"):
    return optimlab.AdamW(model.parameters(), lr=0.01, weight_decay=0.1, engine=engine)


def _guard_runs():
    """(name, wrap(opt) -> guarded optimizer, micro-batches per step)."""
    return [
        ("clip-norm-2", lambda o: optimlab.GradientClipping(o, max_norm=0.05), 1),
        ("clip-norm-inf", lambda o: optimlab.GradientClipping(o, 0.02, float("inf")), 1),
        ("clip-value", lambda o: optimlab.GradientClipping(o, value=0.01), 1),
        ("nonfinite", lambda o: optimlab.NonFiniteGuard(o), 1),
        ("accumulate", lambda o: optimlab.GradientAccumulation(o, 2), 2),
        ("ema", lambda o: optimlab.EMA(o, decay=0.8), 1),
        ("lookahead", lambda o: optimlab.Lookahead(o, k=2, alpha=0.5), 1),
        (
            "chain",
            lambda o: optimlab.EMA(
                optimlab.Lookahead(
                    optimlab.GradientClipping(optimlab.NonFiniteGuard(o), max_norm=0.05), k=2
                ),
                decay=0.8,
            ),
            1,
        ),
    ]


#: the step at which a NaN appears in one gradient element, and where: fc1.weight's row 4,
#: which the second of two ranks holds (rows 4-6)
NAN_STEP, NAN_ROW = 1, 4


def _guarded_training(model, guard, steps, data, micro, nan_rows, diagnostics):
    """Train with ``guard``; ``nan_rows(p) -> local row`` (or None) says where a NaN goes at
    ``NAN_STEP``. Returns the diagnostics records' numbers and the guard's counters."""
    records = []
    if diagnostics:
        optimlab.StepDiagnostics(guard, callback=records.append, per_parameter=True)
    for step in range(steps):
        x, y = data(step)
        guard.zero_grad()
        for m in range(micro):
            part = slice(m * len(x) // micro, (m + 1) * len(x) // micro)
            loss_fn(model, x[part], y[part]).backward()
            if m < micro - 1:
                guard.step()
        if step == NAN_STEP and find_guard(guard, optimlab.NonFiniteGuard) is not None:
            fc1 = getattr(model, "module", model).fc1  # under DDP, the module it wraps
            row = nan_rows(fc1.weight)
            if row is not None:
                optimlab.core.sharding.local(fc1.weight.grad)[row, 0] = float("nan")
        guard.step()
    numbers = [
        [(g.grad_norm, g.update_norm, g.param_norm, g.effective_lr_median) for g in r.groups]
        for r in records
    ]
    nonfinite = find_guard(guard, optimlab.NonFiniteGuard)
    counters = {
        "skips": None if nonfinite is None else nonfinite.total_skips,
        "last_norm": _last_norm(guard),
    }
    return numbers, counters


def _last_norm(guard):
    clip = find_guard(guard, optimlab.GradientClipping)
    return None if clip is None or clip.last_norm is None else float(clip.last_norm)


def _extra_weights(guard) -> dict[str, torch.Tensor]:
    """EMA averages and Lookahead slow weights, whole."""
    out = {}
    ema = find_guard(guard, optimlab.EMA)
    if ema is not None:
        out.update({f"ema{i}": full(t) for i, t in enumerate(ema.averaged_parameters())})
    lookahead = find_guard(guard, optimlab.Lookahead)
    if lookahead is not None:
        out.update({f"slow{i}": full(t) for i, t in enumerate(lookahead.slow_weights())})
    return out


def fsdp2_guards(rank: int, world: int) -> dict:
    """Each guard, and a chain of them, around AdamW under FSDP2 against one process, with a
    NaN in one element of one rank's gradient shard at one step (rank 0 reports; every rank
    reports its own skip count and clipping norm)."""
    out: dict = {}
    rows = 7 // world + (7 % world > 0)  # fc1.weight rows per rank (7 split like torch.chunk)
    for name, wrap, micro in _guard_runs():
        for engine in ("foreach", "fused"):

            def case(wrap=wrap, micro=micro, engine=engine):
                model = sharded_model()
                guard = wrap(_adamw(model, engine))

                def nan_row(p):
                    start = rank * rows
                    return NAN_ROW - start if start <= NAN_ROW < start + rows else None

                numbers, counters = _guarded_training(
                    model, guard, STEPS, rank_data(rank, world), micro, nan_row, True
                )
                got = {**full_params(model), **_extra_weights(guard)}
                result = {"counters": counters, "numbers": numbers}
                if rank == 0:
                    ref_model = make_model()
                    ref = wrap(_adamw(ref_model, engine))
                    ref_numbers, ref_counters = _guarded_training(
                        ref_model, ref, STEPS, batch_of, micro, lambda p: NAN_ROW, True
                    )
                    want = {**full_params(ref_model), **_extra_weights(ref)}
                    result.update(
                        err=max_diff(got, want),
                        ref_counters=ref_counters,
                        ref_numbers=ref_numbers,
                    )
                return result

            _case(out, f"{name}-{engine}", case)
    return out


def ddp_and_zero_guards(rank: int, world: int) -> dict:
    """Each guard and the chain around AdamW under DDP, and around a ZeroRedundancyOptimizer
    of AdamW, with a NaN in one gradient element at one step (on every rank: DDP averaged it
    there), against one process (rank 0 compares)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict = {}
    for name, wrap, micro in _guard_runs():
        for mode in ("ddp", "zero"):

            def case(wrap=wrap, micro=micro, mode=mode):
                model = make_model()
                ddp = DDP(model)
                if mode == "zero":
                    inner = ZeroRedundancyOptimizer(
                        model.parameters(),
                        optimizer_class=optimlab.AdamW,
                        lr=0.01,
                        weight_decay=0.1,
                        engine="fused",
                    )
                else:
                    inner = _adamw(model)
                guard = wrap(inner)
                _, counters = _guarded_training(
                    ddp, guard, STEPS, rank_data(rank, world), micro, lambda p: NAN_ROW, False
                )
                result = {"counters": counters}
                if rank == 0:
                    ref_model = make_model()
                    ref = wrap(_adamw(ref_model))
                    _, ref_counters = _guarded_training(
                        ref_model, ref, STEPS, batch_of, micro, lambda p: NAN_ROW, False
                    )
                    got = {**full_params(model), **_extra_weights(guard)}
                    want = {**full_params(ref_model), **_extra_weights(ref)}
                    result.update(err=max_diff(got, want), ref_counters=ref_counters)
                return result

            _case(out, f"{mode}-{name}", case)
    return out


def batch_of(step, dtype=torch.float64):
    return batch(step, dtype)


def ddp_nonfinite_agreement(rank: int, world: int) -> dict:
    """Plain parameters whose gradients differ between processes (a NaN on one rank only,
    after DDP averaged them): with ``process_group`` both skip, without it only that one."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    out = {}
    for agree in (True, False):
        model = make_model()
        ddp = DDP(model)
        group = dist.group.WORLD if agree else None
        guard = optimlab.NonFiniteGuard(_adamw(model), process_group=group)
        before = full_params(model)
        x, y = local_batch(0, rank, world)
        loss_fn(ddp, x, y).backward()
        if rank == 1:
            model.fc1.weight.grad[0, 0] = float("nan")
        guard.step()
        out[agree] = {
            "skipped": guard.last_step_skipped,
            "moved": max_diff(full_params(model), before) > 0,
            "parameter": guard.last_nonfinite_parameter,
        }
    return out


# -- process groups ------------------------------------------------------------------------------
def _entry(rank: int, world: int, directory: str, fn: Callable, compile_: bool, args) -> None:
    from optimlab.core import fused

    torch.set_num_threads(1)
    fused.COMPILE = compile_  # the recorded programs run eagerly unless asked: same numbers
    dist.init_process_group(
        "gloo",
        init_method=f"file://{directory}/store",
        rank=rank,
        world_size=world,
        timeout=TIMEOUT,
    )
    try:
        result = fn(rank, world, *args)
        torch.save(result, Path(directory) / f"result-{rank}.pt")
        dist.barrier()  # leave together: gloo aborts a process whose peer is still talking
    except BaseException:
        (Path(directory) / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world: int = 2, *args, compile_: bool = False) -> list:
    """Run ``fn(rank, world, *args)`` in ``world`` new processes; their results, by rank.
    ``compile_``: let the fused engine compile its kernels (slow: seconds per program)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="optimlab-dist-") as directory:
        entry_args = (world, directory, fn, compile_, args)
        mp.spawn(_entry, args=entry_args, nprocs=world, join=True)
        return [torch.load(Path(directory) / f"result-{r}.pt") for r in range(world)]


def is_close(err: float, tol: float) -> bool:
    return math.isfinite(err) and err <= tol


# -- checkpoints ---------------------------------------------------------------------------------
#: steps before the checkpoint; one more follows it
SAVED_AT = 2
#: optimizers whose bfloat16 checkpoints are checked for their state dtypes: bf16 moments,
#: float32 step counts and NAdam's float32 mu product, Adafactor's factored statistics
DTYPE_RUNS = ("adamw", "nadam", "adafactor", "muon", "sgd")


def _checkpoint_runs() -> list[tuple[str, torch.dtype]]:
    runs = [(spec.name, torch.float64) for spec in SPECS]
    return runs + [(name, torch.bfloat16) for name in DTYPE_RUNS]


def _run_key(name: str, dtype: torch.dtype) -> str:
    return f"{name}-{str(dtype).removeprefix('torch.')}"


def _whole_state(model, opt) -> dict[str, torch.Tensor]:
    """Every state tensor of ``opt``, whole, by parameter name and key."""
    out = {}
    for pname, p in model.named_parameters():
        for key, value in opt.state.get(p, {}).items():
            if torch.is_tensor(value):
                out[f"{pname}.{key}"] = full(value).detach().clone()
    return out


#: the config each checkpoint run uses (SGD's first keeps no state)
CHECKPOINT_CONFIG = {"sgd": 1}


def _fresh(name: str, dtype: torch.dtype):
    model = sharded_model(dtype)
    cfg = SPEC_BY_NAME[name].configs[CHECKPOINT_CONFIG.get(name, 0)]
    return model, build_optimizer(name, model, cfg, "fused")


def _save(model, opt, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)


def _load(model, opt, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _after(model, opt) -> dict:
    """What a test compares: the whole state (values and dtypes) and the weights."""
    state = _whole_state(model, opt)
    return {
        "state": state,
        "dtypes": {k: v.dtype for k, v in state.items()},
        "weights": full_params(model),
    }


def checkpoint_save(rank: int, world: int, directory: str) -> dict:
    """Train each run ``SAVED_AT`` steps and save a DCP checkpoint (``directory/first/KEY``);
    report the state then, and the weights one more step reaches (uninterrupted)."""
    out: dict = {}
    for name, dtype in _checkpoint_runs():
        key = _run_key(name, dtype)

        def case(name=name, dtype=dtype, key=key):
            model, opt = _fresh(name, dtype)
            data = rank_data(rank, world)
            train(model, opt, SAVED_AT, data, dtype=dtype)
            _save(model, opt, f"{directory}/first/{key}")
            saved = _after(model, opt)
            train(model, opt, 1, data, start=SAVED_AT, dtype=dtype)
            return {"saved": saved, "continued": full_params(model)}

        _case(out, key, case)
    return out


def checkpoint_load(
    rank: int, world: int, directory: str, source: str, again: str | None = None
) -> dict:
    """Load each ``directory/SOURCE`` checkpoint on ``world`` processes (the same or another
    world size than it was saved with), report the state as loaded, save it again to
    ``directory/AGAIN`` if given, and take the step after it."""
    out: dict = {}
    for name, dtype in _checkpoint_runs():
        key = _run_key(name, dtype)

        def case(name=name, dtype=dtype, key=key):
            model, opt = _fresh(name, dtype)
            _load(model, opt, f"{directory}/{source}/{key}")
            loaded = _after(model, opt)
            if again is not None:
                _save(model, opt, f"{directory}/{again}/{key}")
            train(model, opt, 1, rank_data(rank, world), start=SAVED_AT, dtype=dtype)
            return {"loaded": loaded, "continued": full_params(model)}

        _case(out, key, case)
    return out


# -- the vocabulary on shards --------------------------------------------------------------------
#: whole tensors and how each operation that is not elementwise is applied to them; Shard(0)
#: over two ranks splits 7 rows 4 + 3, a [1, 7] matrix's single row lives on the first rank
#: only, and a [5, 3, 4] stack shards its batch dimension
SHARDED_OP_CASES = {
    "rms": ((7, 5), (1, 7), (5, 3, 4), (3,)),
    "row_mean_sq": ((7, 5), (1, 7), (5, 3, 4)),
    "col_mean_sq": ((7, 5), (1, 7), (5, 3, 4)),
    "row_mean": ((7, 5), (1, 7), (5, 3, 4)),
    "group_sum": ((7, 5), (1, 7), (3,)),
    "group_sum_sq": ((7, 5), (1, 7), (3,)),
    "newton_schulz": ((7, 5), (5, 7), (1, 7)),
    "as_matrix": ((5, 3, 4), (7, 5)),
}
NS = {"a": 3.4445, "b": -4.775, "c": 2.0315, "steps": 5, "eps": 1e-7, "dtype": torch.float64}


def sharded_ops(rank: int, world: int) -> dict:
    """Each operation of :data:`SHARDED_OP_CASES` on DTensor shards (ShardedOps over the
    foreach engine), gathered, against the foreach engine on the whole tensors: the largest
    difference per operation (rank 0 reports)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from optimlab.core.sharding import ShardedOps
    from optimlab.core.tensorlist import FOREACH as foreach

    mesh = init_device_mesh("cpu", (world,))
    out = {}
    for name, shapes in SHARDED_OP_CASES.items():
        gen = torch.Generator().manual_seed(len(name))
        wholes = [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in shapes]
        kwargs = NS if name == "newton_schulz" else {}
        ops = ShardedOps(foreach)
        shards = [ops.enter(distribute_tensor(t, mesh, [Shard(0)]), t, "parameter") for t in wholes]
        got = getattr(ops, name)(shards, **kwargs)
        want = getattr(foreach, name)(wholes, **kwargs)
        errs = []
        for result, expected in zip(got, want):
            layout = ops.layout(result)
            whole = layout.gather(result) if layout is not None else result
            errs.append((whole - expected).abs().max().item() if expected.numel() else 0.0)
        out[name] = max(errs)
    return out


#: optimizers of :func:`hsdp_training`: elementwise, whole-tensor reductions, Newton-Schulz
HSDP_RUNS = ("adamw", "adafactor", "muon")


def hsdp_training(rank: int, world: int) -> dict:
    """FSDP2 on two-dimensional meshes against one process: replicated over the ``world``
    processes and sharded over one (HSDP's layout), and the other way round; parameters are
    placed ``(Replicate(), Shard(0))``. The reductions must add up each shard once, not once
    per replica."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    out: dict = {}
    for shape in ((world, 1), (1, world)):
        for name in HSDP_RUNS:

            def case(name=name, shape=shape):
                mesh = init_device_mesh("cpu", shape, mesh_dim_names=("replicate", "shard"))
                model = make_model()
                fully_shard(model.fc1, mesh=mesh)
                fully_shard(model, mesh=mesh)
                opt = build_optimizer(name, model, SPEC_BY_NAME[name].configs[0], "fused")
                train(model, opt, STEPS, rank_data(rank, world))
                got = full_params(model)  # a collective: every rank
                result = {"placements": str(model.fc1.weight.placements)}
                if rank == 0:
                    result["err"] = max_diff(got, reference(name, 0, "fused"))
                return result

            _case(out, f"hsdp{shape[0]}x{shape[1]}-{name}-0-fused", case)
    return out


def refused_switches(rank: int, world: int) -> dict:
    """What a step of AdamW with ``differentiable=True`` or ``capturable=True`` on FSDP2
    parameters raises (the error's type and message), and whether the weights stayed."""
    from optimlab.optim import base

    out = {}
    capturable_devices = base._capturable_devices
    # as tests/test_capturable.py does: let the CPU pass optimlab's capturable device check, so
    # what is refused is the sharding, not the device
    base._capturable_devices = lambda: ["cpu", "cuda"]
    for switch in ("differentiable", "capturable"):
        model = sharded_model()
        opt = optimlab.AdamW(model.parameters(), lr=0.01, engine="loop", **{switch: True})
        x, y = local_batch(0, rank, world)
        loss_fn(model, x, y).backward()
        before = full_params(model)
        try:
            opt.step()
            out[switch] = {"error": None}
        except Exception as error:  # noqa: BLE001 - the test reads it
            out[switch] = {"error": f"{type(error).__name__}: {error}"}
        out[switch]["moved"] = max_diff(full_params(model), before) > 0
    base._capturable_devices = capturable_devices
    return out


def fsdp2_guard_scenarios(rank: int, world: int) -> dict:
    """:func:`fsdp2_guards`, :func:`sharded_ops`, :func:`hsdp_training` and
    :func:`refused_switches` in one process group."""
    return {
        "guards": fsdp2_guards(rank, world),
        "ops": sharded_ops(rank, world),
        "hsdp": hsdp_training(rank, world),
        "refused": refused_switches(rank, world),
    }
