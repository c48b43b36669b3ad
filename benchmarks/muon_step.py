"""Muon's step: optimlab against torch.optim.Muon, and both against torch.mm's FLOP/s.

    python benchmarks/muon_step.py
    python benchmarks/muon_step.py --quick
    python benchmarks/muon_step.py --layout batch --engines fused foreach

Muon's step is bound by the matrix products of its Newton–Schulz iteration, not by memory
traffic, so the measure is FLOP/s. For an m×n matrix with m ≤ n (a tall one is transposed
first), each of the ``ns_steps`` quintic steps computes A = X·Xᵀ (2m²n FLOPs),
B = b·A + c·A·A (2m³) and B·X (2m²n): ``ns_steps·(4m²n + 2m³)`` per matrix and step, the
elementwise work (momentum, normalisation, update) being negligible beside it.

Two layouts:

* ``gpt2_d384``: the hidden weight matrices of a 4-layer GPT-2 of width 384, as
  ``nn.Linear`` stores them ([out, in]): per layer the attention's [1152, 384] and
  [384, 384], the MLP's [1536, 384] and [384, 1536] (16 matrices, 7.1 M parameters);
* ``batch``: 256 matrices of 64×128 (2.1 M parameters), where per-matrix overhead shows.

Sides, stepped in turn (ABC, BCA, CAB, ...) after a warm-up so that drift on a shared machine
hits every side alike: ``torch.optim.Muon`` (its only mode: one matrix at a time, bfloat16
Newton–Schulz), optimlab's Muon on each engine asked for, and ``torch.mm``: the same products
in bfloat16 on the same shapes, one matrix after another (the FLOP/s this machine's matrix
library reaches on them: the roofline of the step). Gradients are random, set once; fp32
parameters, default Muon settings (lr 0.02).

Reported per row: median ms per step, the ratio to torch.optim.Muon, GFLOP/s, and the fraction
of torch.mm's GFLOP/s. Targets (issue 11): on ``gpt2_d384`` at most torch's time and at least
0.8 of torch.mm's FLOP/s; on ``batch`` at most 0.5 of torch's time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import optimlab

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NS_STEPS = 5
ENGINES = ("loop", "foreach", "fused")


def gpt2_d384(layers: int = 4, d: int = 384) -> list[tuple[int, int]]:
    shapes: list[tuple[int, int]] = []
    for _ in range(layers):
        shapes += [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]
    return shapes


def batch(count: int = 256) -> list[tuple[int, int]]:
    return [(64, 128)] * count


LAYOUTS: dict[str, Callable[[], list[tuple[int, int]]]] = {"gpt2_d384": gpt2_d384, "batch": batch}
#: (ratio to torch.optim.Muon at most, fraction of torch.mm's FLOP/s at least)
TARGETS: dict[str, tuple[float, float | None]] = {"gpt2_d384": (1.0, 0.8), "batch": (0.5, None)}


def ns_flops(shapes: Sequence[tuple[int, int]], steps: int = NS_STEPS) -> int:
    """FLOPs of ``steps`` quintic Newton–Schulz steps on each matrix (m ≤ n after the
    transpose): steps·(4m²n + 2m³)."""
    total = 0
    for rows, cols in shapes:
        m, n = min(rows, cols), max(rows, cols)
        total += steps * (4 * m * m * n + 2 * m**3)
    return total


def make_params(shapes: Sequence[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = (torch.randn(shape, generator=gen) * 0.02).requires_grad_(True)
        p.grad = torch.randn(shape, generator=gen)
        params.append(p)
    return params


class MatmulRoofline:
    """The Newton–Schulz products alone, with ``torch.mm`` in bfloat16 on each matrix."""

    def __init__(self, shapes: Sequence[tuple[int, int]], steps: int = NS_STEPS) -> None:
        gen = torch.Generator().manual_seed(1)
        self.steps = steps
        self.mats = []
        for rows, cols in shapes:
            m, n = min(rows, cols), max(rows, cols)
            x = (torch.randn(m, n, generator=gen) / n**0.5).bfloat16()
            self.mats.append((x, torch.empty(m, m, dtype=torch.bfloat16)))

    def step(self) -> None:
        for x, a in self.mats:
            for _ in range(self.steps):
                torch.mm(x, x.T, out=a)
                b = torch.mm(a, a)
                torch.mm(b, x)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_layout(
    name: str, engines: Sequence[str], steps: int, warmup: int, log: Callable[[str], None]
) -> dict[str, Any]:
    shapes = LAYOUTS[name]()
    flops = ns_flops(shapes)
    sides: dict[str, Callable[[], Any]] = {}
    theirs = torch.optim.Muon(make_params(shapes), lr=0.02)
    sides["torch.optim.Muon"] = theirs.step
    ours = {}
    for engine in engines:
        ours[engine] = optimlab.Muon(make_params(shapes), lr=0.02, engine=engine)
        sides[f"optimlab {engine}"] = ours[engine].step
    roofline = MatmulRoofline(shapes)
    sides["torch.mm (bf16)"] = roofline.step
    first = {k: timed(fn) for k, fn in sides.items()}  # state, compiling (fused: 2nd step)
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    names = list(sides)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(steps):
        order = names[i % len(names) :] + names[: i % len(names)]
        for k in order:
            times[k].append(timed(sides[k]))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    mm_gflops = flops / (ms["torch.mm (bf16)"] / 1e3) / 1e9
    rows = []
    ratio_max, mm_min = TARGETS[name]
    for k in names:
        gflops = flops / (ms[k] / 1e3) / 1e9
        row = {
            "side": k,
            "ms": ms[k],
            "times_ms": [1e3 * t for t in times[k]],
            "first_step_ms": 1e3 * first[k],
            "ratio_to_torch": ms[k] / ms["torch.optim.Muon"],
            "gflops": gflops,
            "fraction_of_mm": gflops / mm_gflops,
            "target": None,
        }
        if k.startswith("optimlab"):
            engine = k.split()[1]
            stats = getattr(ours[engine], "fused_stats", None)
            row["fused_stats"] = dict(stats) if isinstance(stats, dict) else None
            failed = []
            if row["ratio_to_torch"] > ratio_max:
                failed.append(f"ratio {row['ratio_to_torch']:.2f} > {ratio_max}")
            if mm_min is not None and row["fraction_of_mm"] < mm_min:
                failed.append(f"FLOP/s {row['fraction_of_mm']:.2f} of mm < {mm_min}")
            row["target"] = {
                "ratio_max": ratio_max,
                "mm_fraction_min": mm_min,
                "verdict": "FAIL" if failed else "PASS",
                "failed": failed,
            }
        rows.append(row)
        log(f"{name} {k}: {ms[k]:.1f} ms, {gflops:.1f} GFLOP/s")
    return {
        "layout": {
            "name": name,
            "matrices": len(shapes),
            "params": sum(r * c for r, c in shapes),
            "ns_flops_per_step": flops,
        },
        "steps": steps,
        "warmup": warmup,
        "rows": rows,
    }


def print_layout(result: dict[str, Any]) -> None:
    lay = result["layout"]
    print(
        f"\n{lay['name']}: {lay['matrices']} matrices, {lay['params']:,} params, "
        f"{lay['ns_flops_per_step'] / 1e9:.2f} GFLOP of Newton–Schulz per step"
    )
    print(f"{'side':<20} {'ms/step':>9} {'vs torch':>9} {'GFLOP/s':>9} {'of mm':>7}  target")
    for r in result["rows"]:
        target = r["target"]
        verdict = "" if target is None else target["verdict"]
        if target and target["failed"]:
            verdict += ": " + "; ".join(target["failed"])
        print(
            f"{r['side']:<20} {r['ms']:>9.1f} {r['ratio_to_torch']:>9.2f} {r['gflops']:>9.1f} "
            f"{r['fraction_of_mm']:>7.2f}  {verdict}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--layout", nargs="+", choices=[*LAYOUTS, "all"], default=["all"])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=["fused"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="3 timed steps per side")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/muon_step.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    layouts = list(LAYOUTS) if "all" in args.layout else args.layout
    steps = args.steps or (3 if args.quick else 15)
    results = []
    for name in layouts:
        result = run_layout(
            name, args.engines, steps, args.warmup, lambda m: print(m, file=sys.stderr)
        )
        print_layout(result)
        results.append(result)
    doc = {
        "benchmark": "muon_step",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "torch": torch.__version__,
            "optimlab": optimlab.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
        },
        "ns_steps": NS_STEPS,
        "layouts": results,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / "muon_step.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
