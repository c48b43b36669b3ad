"""A whole training step, as a user runs it: optimlab's default engine against torch.optim.

    python benchmarks/train_step.py                      # AdamW, the GPT-2-shaped model
    python benchmarks/train_step.py --optimizers adamw sgd radam --steps 15

Each step is the standard loop: ``opt.zero_grad()`` (torch's default, ``set_to_none=True``),
forward, cross-entropy loss, ``loss.backward()``, ``opt.step()``. The model is GPT-2-shaped
(token and position embeddings, pre-norm blocks of causal self-attention and a GELU MLP, a
final norm, the output head tied to the token embedding) and small enough for two CPU cores:
by default 4 layers, width 384, 6 heads, GPT-2's 50,257-token vocabulary, 26.4 M parameters,
batches of 4 × 64 tokens. Both sides train identical copies on the same batches, in one
process, interleaved (each side runs after each side equally often), in fp32 with one torch
thread. optimlab uses its defaults (``engine="auto"``: fused for this model); torch.optim uses
its fastest mode for the same algorithm (``fused=True`` where torch has it, else
``foreach=True``), as in ``step_speed.py``.

Reported: median ms of the whole step, of forward + backward, and of ``opt.step()`` alone,
for both sides, and the ratios (optimlab / torch); the optimizer step's GB/s against the
machine's bandwidth measured in the same run; and the cost of routing gradients into the fused
engine's flat buffer (the post-accumulate-grad hooks, see docs/engines.md): the backward pass of
the model with the hooks against an identical model without them, per step and per parameter
tensor, with the bytes the hooks copy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_speed as ss  # noqa: E402

import optimlab  # noqa: E402


# -- the model ---------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # the head is tied to wte


def make_model(args: argparse.Namespace) -> GPT:
    torch.manual_seed(0)
    return GPT(args.vocab, args.d, args.layers, args.heads, args.ctx)


def batches(args: argparse.Namespace, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    shape = (args.batch, args.ctx)
    return [
        (torch.randint(0, args.vocab, shape, generator=gen), torch.randint(0, args.vocab, shape))
        for _ in range(n)
    ]


def train_step(model: GPT, opt, idx: torch.Tensor, target: torch.Tensor) -> tuple[float, ...]:
    """One standard step; (whole, forward + backward, optimizer step) in seconds."""
    ss.evict_caches("cpu")
    t0 = time.perf_counter()
    opt.zero_grad()
    logits = model(idx)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), target.view(-1))
    loss.backward()
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    return t2 - t0, t1 - t0, t2 - t1


# -- the measurement ---------------------------------------------------------------------------
def _ms(times: Sequence[float]) -> float:
    return statistics.median(times) * 1e3


def compare(name: str, args: argparse.Namespace, data) -> dict[str, Any]:
    ours_model, torch_model = make_model(args), make_model(args)
    ours = optimlab.create_optimizer(name, ours_model.parameters(), **ss.OURS_KWARGS.get(name, {}))
    theirs, baseline = ss.build_torch(name, list(torch_model.parameters()))
    sides = [(ours_model, ours), (torch_model, theirs)]
    for i in range(args.warmup):  # the fused engine compiles in its first steps
        for model, opt in sides:
            train_step(model, opt, *data[i % len(data)])
    times: list[list[tuple[float, ...]]] = [[], []]
    for k, side in enumerate(ss.interleaving(2, args.steps)):
        model, opt = sides[side]
        times[side].append(train_step(model, opt, *data[k % len(data)]))
    med = [[_ms([t[j] for t in times[s]]) for j in range(3)] for s in range(2)]
    n = sum(p.numel() for p in ours_model.parameters())
    min_bytes = ss.min_bytes_per_param(name, ours.param_groups[0]) * n
    info = ours.step_info[0] if ours.step_info else {}
    return {
        "optimizer": name,
        "torch_baseline": baseline["label"],
        "engine": info.get("engine"),
        "ms": med[0][0],
        "torch_ms": med[1][0],
        "ratio": med[0][0] / med[1][0],
        "fwd_bwd_ms": med[0][1],
        "torch_fwd_bwd_ms": med[1][1],
        "step_ms": med[0][2],
        "torch_step_ms": med[1][2],
        "step_ratio": med[0][2] / med[1][2],
        "step_gbps": min_bytes / (med[0][2] / 1e3) / 1e9,
        "torch_step_gbps": min_bytes / (med[1][2] / 1e3) / 1e9,
        "steps": args.steps,
        "grad_copies": ours.fused_stats["grad_copies"],
        "times_s": times,
    }


def routing_cost(args: argparse.Namespace, data) -> dict[str, Any]:
    """Backward pass of a model whose parameters carry the fused engine's gradient hooks
    against an identical model without them, interleaved; the difference is what tracking
    and routing the gradients costs."""
    hooked, plain = make_model(args), make_model(args)
    opt = optimlab.AdamW(hooked.parameters(), engine="fused")
    train_step(hooked, opt, *data[0])  # builds the flat buffers and attaches the hooks
    buckets = [b for flat in opt._flat.values() for b in flat]
    tensors = sum(len(b.grad_params) for b in buckets)  # routed: copied in by a hook
    direct = sum(len(b.direct) for b in buckets)  # used where autograd made them
    nbytes = sum(p.numel() * p.element_size() for b in buckets for p in b.grad_params)

    def backward(model) -> float:
        ss.evict_caches("cpu")
        model.zero_grad(set_to_none=True)
        logits = model(data[0][0])
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), data[0][1].view(-1))
        t0 = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        backward(hooked)
        backward(plain)
    times: list[list[float]] = [[], []]
    for side in ss.interleaving(2, 2 * args.steps):
        times[side].append(backward((hooked, plain)[side]))
    extra_ms = _ms(times[0]) - _ms(times[1])
    return {
        "backward_ms_with_hooks": _ms(times[0]),
        "backward_ms_without": _ms(times[1]),
        "extra_ms_per_step": extra_ms,
        "extra_us_per_tensor": extra_ms * 1e3 / max(tensors, 1),
        "tensors": tensors,
        "direct_tensors": direct,
        "copied_bytes_per_step": nbytes,
        "times_s": times,
    }


def hook_cost_per_tensor(count: int = 2000, numel: int = 256, reps: int = 15) -> dict[str, Any]:
    """The fixed cost of the gradient hooks, per parameter tensor: ``count`` small parameters
    (so that the backward pass itself is cheap and the difference is not lost in its noise),
    a backward pass with the fused engine's hooks against one without, interleaved."""
    gen = torch.Generator().manual_seed(0)
    sides = []
    for hooked in (True, False):
        params = [torch.randn(numel, generator=gen).requires_grad_() for _ in range(count)]
        weights = [torch.randn(numel, generator=gen) for _ in range(count)]
        if hooked:
            opt = optimlab.AdamW(params, engine="fused")
            _small_backward(params, weights)
            opt.step()  # builds the flat buffers and attaches the hooks
        sides.append((params, weights))
    for params, weights in sides:
        _small_backward(params, weights)
    times: list[list[float]] = [[], []]
    for side in ss.interleaving(2, reps):
        times[side].append(_small_backward(*sides[side]))
    extra_us = (statistics.median(times[0]) - statistics.median(times[1])) * 1e6
    return {
        "tensors": count,
        "numel": numel,
        "backward_ms_with_hooks": _ms(times[0]),
        "backward_ms_without": _ms(times[1]),
        "extra_us_per_tensor": extra_us / count,
        "times_s": times,
    }


def _small_backward(params, weights) -> float:
    for p in params:
        p.grad = None
    loss = torch.stack([(p * w).sum() for p, w in zip(params, weights)]).sum()
    t0 = time.perf_counter()
    loss.backward()
    return time.perf_counter() - t0


# -- output ------------------------------------------------------------------------------------
COLUMNS = (
    "optimizer",
    "torch baseline",
    "engine",
    "ms/step",
    "torch ms",
    "ratio",
    "fwd+bwd ms",
    "torch fwd+bwd",
    "opt.step ms",
    "torch step",
    "step ratio",
    "step GB/s",
    "% BW",
)


def _row(r: dict[str, Any], bandwidth: float) -> list[str]:
    return [
        r["optimizer"],
        r["torch_baseline"],
        str(r["engine"]),
        f"{r['ms']:.1f}",
        f"{r['torch_ms']:.1f}",
        f"{r['ratio']:.3f}",
        f"{r['fwd_bwd_ms']:.1f}",
        f"{r['torch_fwd_bwd_ms']:.1f}",
        f"{r['step_ms']:.2f}",
        f"{r['torch_step_ms']:.2f}",
        f"{r['step_ratio']:.2f}",
        f"{r['step_gbps']:.1f}",
        f"{100 * r['step_gbps'] / bandwidth:.0f}%",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizers", nargs="+", default=["adamw"], metavar="NAME")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--d", type=int, default=384, help="model width")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--ctx", type=int, default=64, help="tokens per sequence")
    p.add_argument("--batch", type=int, default=4, help="sequences per batch")
    p.add_argument("--steps", type=int, default=20, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--hook-tensors",
        type=int,
        default=2000,
        help="small parameters of the hooks' fixed-cost measurement",
    )
    p.add_argument("--json", default=str(ss.RESULTS_DIR / "train_step-cpu.json"))
    p.add_argument("--plain", action="store_true", help="plain-text table")
    args = p.parse_args(argv)
    unknown = [n for n in args.optimizers if n not in optimlab.available_optimizers()]
    if unknown:
        p.error(f"unknown optimizer(s): {', '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    bandwidth = ss.measure_bandwidth("cpu")
    data = batches(args, 4)
    model = make_model(args)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"GPT-2-shaped model: {args.layers} layers, width {args.d}, vocab {args.vocab}, "
        f"{params:,} parameters; batch {args.batch}x{args.ctx}; {args.threads} thread(s); "
        f"bandwidth add_ {bandwidth['add_gbps']:.1f} GB/s",
        flush=True,
    )
    rows = []
    for name in args.optimizers:
        print(f"  {name} ...", flush=True)
        rows.append(compare(name, args, data))
    routing = routing_cost(args, data)
    fixed = hook_cost_per_tensor(args.hook_tensors)
    doc = ss._doc_header("train_step", "cpu")
    doc.update(
        {
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "plain")},
            "parameters": params,
            "bandwidth": bandwidth,
            "rows": rows,
            "routing": routing,
            "hooks_per_tensor": fixed,
        }
    )
    ss.write_json(Path(args.json), doc)
    body = [_row(r, bandwidth["add_gbps"]) for r in rows]
    ss.print_table("whole training step (median of interleaved steps)", COLUMNS, body, args.plain)
    r, h = routing, fixed
    print(
        f"gradient routing (hooks): backward {r['backward_ms_with_hooks']:.1f} ms with, "
        f"{r['backward_ms_without']:.1f} ms without: {r['extra_ms_per_step']:+.2f} ms per step, "
        f"{r['extra_us_per_tensor']:+.2f} us per routed tensor ({r['tensors']} routed, "
        f"{r['copied_bytes_per_step'] / 1e6:.2f} MB copied; {r['direct_tensors']} large "
        "gradients used where autograd made them)"
    )
    print(
        f"hooks alone: {h['extra_us_per_tensor']:+.2f} us per parameter tensor and backward "
        f"pass ({h['tensors']} tensors of {h['numel']} elements: backward "
        f"{h['backward_ms_with_hooks']:.2f} ms with the hooks, "
        f"{h['backward_ms_without']:.2f} ms without)"
    )
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
