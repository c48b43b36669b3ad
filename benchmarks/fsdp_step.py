"""The optimizer step under FSDP2: optimlab against torch.optim on the same sharded parameters.

    python benchmarks/fsdp_step.py --quick
    python benchmarks/fsdp_step.py
    python benchmarks/fsdp_step.py --optimizers adamw lion --steps 30

Two CPU processes (gloo, one torch thread each) shard a GPT-2-shaped model with
``fully_shard`` (default: 4 layers, d = 256, vocabulary 8192, context 256; about 5.3 M
parameters, each process holding half of every weight's rows). Only the optimizer step is
timed: every parameter gets a random sharded gradient once, and each optimlab optimizer on its
default engine steps the same DTensor parameters as its torch twin (or, for one without a
twin, the torch algorithm with the same memory traffic, its ``stand_in``) in torch's default
mode (foreach). The two sides' steps are interleaved (torch, ours, ours, torch, ...), every
step starts on both processes at once (a barrier), and a step's time is the slower process's.

Reported per optimizer: the median milliseconds per step of both sides, their ratio (optimlab /
torch; the target for AdamW is at most 0.5) and the median of the ratios of neighbouring
steps, and the achieved bandwidth on the local shards: the algorithm's minimum bytes per
parameter (``Optimizer.min_bytes_per_element``) times the elements this process holds, over
its median time. The result also goes to ``benchmarks/results/fsdp_step.json``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_speed  # noqa: E402

import optimlab  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fsdp_step.json"
#: ratio targets (optimlab / torch), per optimizer
TARGETS = {"adamw": 0.5}
QUICK_OPTIMIZERS = ("adamw", "lion", "adafactor")


# -- the model -----------------------------------------------------------------------------------
class Block(nn.Module):
    """A GPT-2 block's parameters (the step never runs the forward pass)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.ModuleDict({"c_attn": nn.Linear(d, 3 * d), "c_proj": nn.Linear(d, d)})
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(d, 4 * d), "c_proj": nn.Linear(4 * d, d)})


class GPT2Shaped(nn.Module):
    def __init__(self, layers: int, d: int, vocab: int, context: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.h = nn.ModuleList(Block(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)


def sharded_model(args: argparse.Namespace) -> nn.Module:
    """The model under FSDP2 (each block its own unit, as GPT training scripts do), with a
    random gradient on every parameter, sharded like it."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    torch.manual_seed(0)
    model = GPT2Shaped(args.layers, args.d, args.vocab, args.context)
    for block in model.h:
        fully_shard(block)
    fully_shard(model)
    gen = torch.Generator().manual_seed(1 + dist.get_rank())
    for p in model.parameters():
        shard = p.to_local()
        grad = torch.randn(shard.shape, generator=gen, dtype=shard.dtype) * 1e-3
        p.grad = DTensor.from_local(
            grad, p.device_mesh, p.placements, shape=p.shape, stride=p.stride()
        )
    return model


# -- the two sides -------------------------------------------------------------------------------
class Together:
    """Several torch optimizers stepped as one (torch.optim.Muon takes matrices only: the
    rest of the model steps on torch.optim.AdamW, as optimlab's Muon sends it to AdamW)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()


def build_sides(name: str, model: nn.Module) -> tuple[torch.optim.Optimizer, Any, str]:
    """(optimlab's optimizer on its default engine, torch's twin or stand-in in its default
    mode on the same parameters, the torch class's name)."""
    cls = optimlab.get_optimizer_class(name)
    ours = cls(cls.param_groups_for(model), **step_speed.OURS_KWARGS.get(name, {}))
    twin, kwargs, _, _ = step_speed.torch_baseline(name)
    torch_cls = getattr(torch.optim, twin)
    if name != "muon":
        label = f"{twin} (amsgrad)" if kwargs.get("amsgrad") else twin
        return ours, torch_cls(model.parameters(), **kwargs), label
    matrices = [p for g in ours.param_groups if g.get("use_muon", True) for p in g["params"]]
    rest = [p for g in ours.param_groups if not g.get("use_muon", True) for p in g["params"]]
    theirs = Together(torch_cls(matrices, **kwargs), torch.optim.AdamW(rest))
    return ours, theirs, f"{twin} + AdamW"


def _timed(opt) -> float:
    """One step started on both processes together; the slower process's seconds."""
    dist.barrier()
    start = time.perf_counter()
    opt.step()
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return float(elapsed)


def _torch_steps(opt) -> str | None:
    """``None`` if torch's optimizer steps DTensor parameters, else why not (torch's
    Adafactor, for one, updates a reduced DTensor in place, which DTensor refuses)."""
    try:
        opt.step()
    except Exception as error:  # noqa: BLE001 - reported in the row
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return None


def measure(name: str, model: nn.Module, steps: int, warmup: int) -> dict[str, Any]:
    ours, theirs, twin = build_sides(name, model)
    torch_error = _torch_steps(theirs)
    sides = (theirs, ours) if torch_error is None else (ours,)
    for _ in range(warmup):  # state creation, fused buffers, compiling
        for opt in sides:
            opt.step()
    times: list[list[float]] = [[] for _ in sides]
    pairs = []
    for order in step_speed.interleaving(len(sides), steps):
        times[order].append(_timed(sides[order]))
        if len(sides) == 2 and len(times[0]) == len(times[1]):
            pairs.append(times[1][-1] / times[0][-1])
    ours_ms = statistics.median(times[-1]) * 1e3
    torch_ms = statistics.median(times[0]) * 1e3 if torch_error is None else None
    local = sum(p.to_local().numel() for p in model.parameters())
    group = ours.param_groups[0]
    nbytes = step_speed.min_bytes_per_param(name, group) * local
    info = ours.step_info
    return {
        "optimizer": name,
        "torch_baseline": twin,
        "same_algorithm": optimlab.get_optimizer_class(name).torch_twin is not None,
        "torch_error": torch_error,
        "engine": [i.get("engine") for i in info],
        "fused": [bool(i.get("fused")) for i in info],
        "ms": ours_ms,
        "torch_ms": torch_ms,
        "ratio": None if torch_ms is None else ours_ms / torch_ms,
        "ratio_paired": statistics.median(pairs) if pairs else None,
        "local_params": local,
        "gbps": nbytes / (ours_ms * 1e-3) / 1e9,
        "torch_gbps": None if torch_ms is None else nbytes / (torch_ms * 1e-3) / 1e9,
        "steps": len(times[-1]),
        "times_ms": [t * 1e3 for t in times[-1]],
        "torch_times_ms": [t * 1e3 for t in times[0]] if torch_error is None else [],
        "target": TARGETS.get(name),
    }


# -- processes -----------------------------------------------------------------------------------
def _worker(rank: int, world: int, store: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = sharded_model(args)
        rows = []
        for name in args.optimizers:
            try:
                row = measure(name, model, args.steps, args.warmup)
                row["status"] = "ok"
            except Exception as error:  # noqa: BLE001 - one optimizer failing is reported
                row = {"optimizer": name, "status": f"error: {type(error).__name__}: {error}"}
                if rank == 0:
                    traceback.print_exc()
            rows.append(row)
            if rank == 0:
                print(f"  {name}: {_line(row)}", file=sys.stderr, flush=True)
        if rank == 0:
            params = sum(p.numel() for p in model.parameters())
            torch.save({"rows": rows, "params": params}, out)
        dist.barrier()  # leave together: gloo aborts a process whose peer is still talking
    finally:
        dist.destroy_process_group()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="optimlab-fsdp-") as directory:
        out = f"{directory}/rows.pt"
        mp.spawn(_worker, args=(2, f"{directory}/store", args, out), nprocs=2, join=True)
        result = torch.load(out)
    return {
        "benchmark": "fsdp_step",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": ["python", "benchmarks/fsdp_step.py", *sys.argv[1:]],
        "machine": step_speed.machine_info("cpu"),
        "model": {
            "layers": args.layers,
            "d": args.d,
            "vocab": args.vocab,
            "context": args.context,
            "params": result["params"],
            "processes": 2,
            "threads_per_process": args.threads,
        },
        "rows": result["rows"],
    }


# -- output --------------------------------------------------------------------------------------
def _line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return row["status"]
    theirs = row["torch_error"] or f"{row['torch_ms']:.2f} ms, ratio {row['ratio']:.2f}"
    return f"{row['ms']:.2f} ms, {row['gbps']:.1f} GB/s; {row['torch_baseline']}: {theirs}"


def verdict(row: dict[str, Any]) -> str:
    target = row.get("target")
    if row["status"] != "ok" or target is None:
        return "-"
    if row["ratio"] is None:
        return f"FAIL (<= {target}: no torch time)"
    return f"{'PASS' if row['ratio'] <= target else 'FAIL'} (<= {target})"


def table(doc: dict[str, Any]) -> str:
    """The result as a Markdown table (notes below it for torch sides that cannot step
    DTensors)."""
    lines = [
        "| optimizer | torch side | engine | ms | torch ms | ratio | paired | GB/s | "
        "torch GB/s | target |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for row in doc["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['optimizer']} | {row['status'].splitlines()[0]} |" + " |" * 8)
            continue
        twin = row["torch_baseline"] + ("" if row["same_algorithm"] else " (stand-in)")
        if row["torch_error"]:
            notes.append(f"{row['optimizer']}: torch.optim.{twin} failed: {row['torch_error']}")
            twin += " (fails)"
        engine = "/".join(
            f"{e}{' (eager)' if e == 'fused' and not f else ''}"
            for e, f in zip(row["engine"], row["fused"])
        )
        lines.append(
            f"| {row['optimizer']} | {twin} | {engine} | {row['ms']:.2f} | "
            f"{step_speed._fmt(row['torch_ms'], '.2f')} | {step_speed._fmt(row['ratio'], '.2f')} | "
            f"{step_speed._fmt(row['ratio_paired'], '.2f')} | {row['gbps']:.1f} | "
            f"{step_speed._fmt(row['torch_gbps'], '.1f')} | {verdict(row)} |"
        )
    return "\n".join(lines + [""] + notes if notes else lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = optimlab.available_optimizers()
    ap = argparse.ArgumentParser(
        description="Time the optimizer step under FSDP2 on two CPU processes (gloo): "
        "optimlab against torch.optim on the same sharded parameters."
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"{' '.join(QUICK_OPTIMIZERS)} only, 10 timed steps per side",
    )
    ap.add_argument("--optimizers", nargs="+", choices=names, default=None, metavar="NAME")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per side (30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d", type=int, default=256, help="model width")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--json", type=Path, default=RESULTS, metavar="PATH", help="result file")
    args = ap.parse_args(argv)
    if args.optimizers is None:
        args.optimizers = list(QUICK_OPTIMIZERS if args.quick else names)
    if args.steps is None:
        args.steps = 10 if args.quick else 30
    for key in ("steps", "layers", "d", "vocab", "context", "threads"):
        if getattr(args, key) < 1:
            ap.error(f"--{key} must be at least 1")
    if args.warmup < 0:
        ap.error("--warmup must be at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not dist.is_available() or not dist.is_gloo_available():
        print("fsdp_step: this torch has no gloo backend", file=sys.stderr)
        return 2
    doc = run(args)
    step_speed.write_json(args.json, doc)
    model = doc["model"]
    print(
        f"FSDP2, 2 processes x {model['threads_per_process']} thread(s), "
        f"{model['params']:,} params ({model['layers']} layers, d={model['d']}, "
        f"vocab {model['vocab']}), fp32, optimizer step only"
    )
    print(table(doc))
    print(f"written: {args.json}")
    failed = [r for r in doc["rows"] if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
