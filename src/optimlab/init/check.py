"""`check_init`: one forward and backward pass with hooks, to see whether signals explode,
vanish or saturate at initialisation."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from optimlab.init._table import format_table
from optimlab.init.apply import is_weight

EXPLODING_ACTIVATIONS = "exploding activations"
VANISHING_ACTIVATIONS = "vanishing activations"
EXPLODING_GRADIENTS = "exploding gradients"
VANISHING_GRADIENTS = "vanishing gradients"
SATURATED = "saturated"
DEAD = "dead output"
ZERO_GRADIENT = "zero gradient"
NON_FINITE = "non-finite values"

# Bounded activations and their output range. Exact types: ReLU6 subclasses Hardtanh, and
# its zeros are the ReLU half, not saturation.
_BOUNDED = {nn.Tanh: (-1.0, 1.0), nn.Softsign: (-1.0, 1.0), nn.Sigmoid: (0.0, 1.0)}
# An output within this fraction of the range from either bound counts as saturated
# (tanh: |y| ≥ 0.98, i.e. |x| ≥ 2.3; sigmoid: y ≤ 0.01 or y ≥ 0.99).
SATURATION_MARGIN = 0.01


def _bounds(module: nn.Module) -> tuple[float, float] | None:
    kind = type(module)
    if kind in _BOUNDED:
        return _BOUNDED[kind]
    if kind is nn.Hardtanh:
        return float(module.min_val), float(module.max_val)
    if kind is nn.Hardsigmoid:
        return 0.0, 1.0
    return None


@dataclass(frozen=True)
class LayerStats:
    """Signal statistics of one layer during `check_init`'s pass.

    - ``act_std``: std of the layer's output (for a weighted layer, the pre-activation);
    - ``act_ratio``: ``act_std`` over that of the first weighted layer;
    - ``grad_std``: std of ``∂L/∂output``, the error signal backpropagated to the layer's
      output (the backward twin of ``act_std``);
    - ``grad_ratio``: ``grad_std`` over that of the reference layer, the penultimate
      weighted layer (see `check_init`);
    - ``weight_grad_std``: std of ``∂L/∂W`` over the layer's weights (what the optimizer
      sees; reported, not judged: it also carries the scale of the layer's input);
    - ``saturation``: fraction of outputs at a bound (bounded activations only).

    The ratio and gradient fields are None for activation rows. Stds are population stds
    (``correction=0``) over every element of every call of the layer in the pass.
    """

    name: str
    kind: str
    act_std: float
    act_ratio: float | None = None
    grad_std: float | None = None
    grad_ratio: float | None = None
    weight_grad_std: float | None = None
    saturation: float | None = None


@dataclass(frozen=True)
class InitFlag:
    """A problem `check_init` found: which layer, what, the offending number, and why."""

    layer: str
    problem: str
    value: float
    detail: str


@dataclass(frozen=True)
class InitCheck:
    """The result of `check_init`: per-layer `LayerStats` rows and the `InitFlag` found."""

    rows: tuple[LayerStats, ...]
    flags: tuple[InitFlag, ...]
    loss: float
    max_ratio: float
    max_saturation: float

    @property
    def ok(self) -> bool:
        return not self.flags

    def flagged(self, problem: str) -> list[InitFlag]:
        return [f for f in self.flags if f.problem == problem]

    def table(self) -> str:
        headers = ["layer", "type", "act std", "act/first", "grad std", "grad/ref", "dW std"]
        headers.append("saturated")
        body = [
            (r.name, r.kind, r.act_std, r.act_ratio, r.grad_std, r.grad_ratio)
            + (r.weight_grad_std, r.saturation)
            for r in self.rows
        ]
        lines = [format_table(headers, body), ""]
        if self.ok:
            lines.append(
                f"no problems: every ratio within {self.max_ratio:g}x, "
                f"saturation at most {self.max_saturation:.0%}"
            )
        else:
            # One line per problem: the layers it hits and the worst of them.
            lines.append(f"{len(self.flags)} problem(s):")
            for problem in dict.fromkeys(f.problem for f in self.flags):
                hits = self.flagged(problem)
                worst = max(hits, key=lambda f: abs(math.log(f.value)) if f.value > 0 else 0.0)
                layers = ", ".join(f.layer for f in hits)
                lines.append(f"  {problem} in {layers} (worst: {worst.layer}, {worst.detail})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class _Moments:
    """Running count, sum and sum of squares (float64) of everything a layer outputs."""

    def __init__(self, bounds: tuple[float, float] | None) -> None:
        self.bounds = bounds
        self.n, self.total, self.total_sq, self.saturated = 0, 0.0, 0.0, 0
        self.finite = True

    def add(self, x: Tensor) -> None:
        x = x.detach().double()
        self.finite = self.finite and bool(torch.isfinite(x).all())
        self.n += x.numel()
        self.total += x.sum().item()
        self.total_sq += x.square().sum().item()
        if self.bounds is not None:
            lo, hi = self.bounds
            margin = SATURATION_MARGIN * (hi - lo)
            self.saturated += int(((x <= lo + margin) | (x >= hi - margin)).sum())

    @property
    def std(self) -> float:
        if not self.finite:
            return math.nan
        if self.n == 0:
            return 0.0
        mean = self.total / self.n
        return math.sqrt(max(self.total_sq / self.n - mean * mean, 0.0))


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _call(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def random_probe_loss(output: Tensor) -> Tensor:
    """``L = Σ output · r`` with ``r ~ N(0, 1)`` drawn from a fixed seed: the error signal
    ``∂L/∂output = r`` has unit variance whatever the output's scale or any target."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model returned a {type(output).__name__}; pass loss_fn= to map it to a scalar"
        )
    r = torch.randn(output.shape, generator=torch.Generator().manual_seed(0))
    return (output * r.to(output)).sum()


def _std(tensors: list[Tensor]) -> float:
    flat = torch.cat([t.detach().double().flatten() for t in tensors])
    return flat.std(correction=0).item() if flat.numel() else 0.0


def check_init(
    model: nn.Module,
    batch: Any,
    *,
    loss_fn: Callable[[Any], Tensor] | None = None,
    max_ratio: float = 10.0,
    max_saturation: float = 0.5,
    train: bool = True,
) -> InitCheck:
    """Run ``loss_fn(model(batch))`` forward and backward and report per-layer signal stats.

    ``batch`` is passed as ``model(batch)``, ``model(*batch)`` for a tuple or list, or
    ``model(**batch)`` for a mapping. ``loss_fn`` maps the output to a scalar; by default
    `random_probe_loss`, which backpropagates a unit-variance error. Gradients come from
    ``torch.autograd.grad`` with respect to each layer's output (``∂L/∂output``, judged)
    and weights (``∂L/∂W``, reported): the model's ``.grad`` fields are never touched.

    Rows (see `LayerStats`) are the layers with a weight of dim ≥ 2 and the bounded
    activation modules (Tanh, Sigmoid, Softsign, Hardtanh, Hardsigmoid), in call order.
    Flags, with ``R = max_ratio``:

    - exploding / vanishing activations: ``act_ratio > R`` / ``< 1/R``, the forward signal
      against the first weighted layer's output;
    - exploding / vanishing gradients: ``grad_ratio > R`` / ``< 1/R``, the backward signal
      against the penultimate weighted layer's: every hidden layer's error passes through
      the output layer, whose width (not the depth) sets its scale, so the output layer's
      own error (the loss's, not a propagated one) is neither the reference nor judged;
    - saturated: more than ``max_saturation`` of a bounded activation's outputs within 1 %
      of the output range from a bound, where its derivative is ≈ 0;
    - dead output (a weighted layer's output is constant), zero gradient, non-finite values.

    The pass runs in training mode (``train=False`` for eval mode); afterwards every
    module's mode, every buffer (e.g. BatchNorm running stats) and the RNG state (CPU and
    the model's CUDA devices) are as they were. A layer modified in place after its call
    (e.g. by ``ReLU(inplace=True)``) has its ``∂L/∂output`` taken after that change.
    """
    if not (max_ratio > 1.0):
        raise ValueError(f"Invalid max_ratio: {max_ratio!r} (expected a number > 1)")
    if not (0.0 <= max_saturation <= 1.0):
        raise ValueError(f"Invalid max_saturation: {max_saturation!r} (expected 0..1)")
    names = {m: name or type(m).__name__ for name, m in model.named_modules()}
    weights = {}
    for m in names:
        own = [p for n, p in m.named_parameters(recurse=False) if is_weight(n, p)]
        if own:
            weights[m] = own
    watched = {m: _bounds(m) for m in names if m in weights or _bounds(m) is not None}
    stats: dict[nn.Module, _Moments] = {}  # insertion order = first-call order
    outputs: dict[nn.Module, list[Tensor]] = {}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        out = _first_tensor(output)
        if out is None:
            return
        stats.setdefault(module, _Moments(watched[module])).add(out)
        if module in weights and out.requires_grad:
            outputs.setdefault(module, []).append(out)

    modes = {m: m.training for m in names}
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    handles = [m.register_forward_hook(record) for m in watched]
    try:
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            model.train(train)
            output = _call(model, batch)
            loss = (loss_fn or random_probe_loss)(output)
            if not (isinstance(loss, Tensor) and loss.dim() == 0):
                raise ValueError("loss_fn must return a scalar tensor")
            params = [p for m in stats if m in weights for p in weights[m] if p.requires_grad]
            outs = [t for ts in outputs.values() for t in ts]
            grads = (
                torch.autograd.grad(loss, params + outs, allow_unused=True)
                if params or outs
                else ()
            )
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                buffer.copy_(saved)
    grad_of = {id(t): g for t, g in zip(params + outs, grads, strict=True) if g is not None}

    def grad_std(tensors: list[Tensor]) -> float | None:
        found = [grad_of[id(t)] for t in tensors if id(t) in grad_of]
        return _std(found) if found else None

    out_grad = {m: grad_std(outputs.get(m, [])) for m in stats if m in weights}
    weight_grad = {m: grad_std(weights[m]) for m in stats if m in weights}
    return _assess(
        stats, weights, out_grad, weight_grad, names, loss.item(), max_ratio, max_saturation
    )


def _assess(stats, weights, out_grad, weight_grad, names, loss, max_ratio, max_saturation):
    weighted = [m for m in stats if m in weights]
    ref_act = stats[weighted[0]].std if weighted else math.nan
    with_grad = [m for m in weighted if out_grad[m] is not None]
    ref_grad = out_grad[with_grad[-2 if len(with_grad) > 1 else -1]] if with_grad else math.nan
    output_layer = with_grad[-1] if with_grad else None

    def ratio(value: float | None, ref: float) -> float | None:
        if value is None or not (math.isfinite(ref) and ref > 0.0):
            return None
        return value / ref

    rows, flags = [], []
    for m, moments in stats.items():
        name, kind, act = names[m], type(m).__name__, moments.std
        if m in weights:
            g = out_grad[m]
            row = LayerStats(
                name, kind, act, ratio(act, ref_act), g, ratio(g, ref_grad), weight_grad[m]
            )
        else:
            frac = moments.saturated / moments.n if moments.n else 0.0
            row = LayerStats(name, kind, act, saturation=frac)
        rows.append(row)
        # The output layer's error is the loss's own, not a propagated one: not judged.
        judge_grad = m in weights and m is not output_layer
        flags += _flags_for(
            row, m in weights, judge_grad, moments.finite, max_ratio, max_saturation
        )
    return InitCheck(tuple(rows), tuple(flags), loss, max_ratio, max_saturation)


def _flags_for(row: LayerStats, weighted, judge_grad, finite, max_ratio, max_saturation):
    found = []
    grads = (row.grad_std, row.weight_grad_std)
    if not finite or any(g is not None and not math.isfinite(g) for g in grads):
        found.append(InitFlag(row.name, NON_FINITE, math.nan, "NaN or inf in the pass"))
        return found
    checks = [
        (row.act_ratio, EXPLODING_ACTIVATIONS, VANISHING_ACTIVATIONS, "the first layer"),
        (row.grad_ratio, EXPLODING_GRADIENTS, VANISHING_GRADIENTS, "the reference layer"),
    ]
    if not judge_grad:
        checks.pop()
    for value, up, down, ref in checks:
        if value is not None and value > max_ratio:
            found.append(InitFlag(row.name, up, value, f"{value:.3g}x {ref}"))
        elif value is not None and value < 1.0 / max_ratio:
            found.append(InitFlag(row.name, down, value, f"{value:.3g}x {ref}"))
    if weighted:
        if row.act_std == 0.0:
            found.append(InitFlag(row.name, DEAD, 0.0, "the output is constant"))
        if row.grad_std == 0.0:
            found.append(InitFlag(row.name, ZERO_GRADIENT, 0.0, "dL/doutput is 0"))
    if row.saturation is not None and row.saturation > max_saturation:
        found.append(
            InitFlag(row.name, SATURATED, row.saturation, f"{row.saturation:.0%} of outputs")
        )
    return found
