"""The learning-rate range test (Smith, arXiv:1506.01186; popularised by fastai).

Train for a short while with a learning rate that grows exponentially from ``start_lr`` to
``end_lr``, record the loss at every step, smooth it, and read a good learning rate off the
curve. Works with any ``torch.optim.Optimizer``: the test writes ``group["lr"]`` before each
step and, when it is done, puts the model, the optimizer and torch's RNG back exactly as they
were, so a training run can start right after it as if nothing had happened.

Smoothing is an exponential moving average with bias correction (as in Adam): without the
correction the first values would be pulled towards zero. The sweep stops early once the
smoothed loss exceeds ``diverge`` times the best value seen, or the loss is not finite:
beyond that point the curve only says "too large".

How a learning rate is suggested (``suggest=``):

* ``"valley"`` (default): the learning rate halfway (in log space) along the descent of the
  smoothed loss, which runs from where the loss has fallen by a tenth of its total fall to
  its minimum. A long flat start does not drag it down, and it stays on the safe side of the
  minimum;
* ``"steepest"``: where the smoothed loss falls fastest per decade of learning rate, before
  its minimum;
* ``"minimum"``: one tenth of the learning rate at the minimum of the smoothed loss (the
  classic rule of thumb).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from optimlab.lab.runner import ema_debiased

SUGGESTIONS = ("valley", "steepest", "minimum")


@dataclass
class LRFinderResult:
    """The curve of a range test and the learning rate it suggests."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    method: str
    reason: str
    stopped_early: bool
    suggestions: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LRFinderResult:
        return cls(**data)

    def plot(self, ax=None, label: str | None = None):
        """Plot the raw and smoothed loss against the learning rate; returns the figure."""
        from optimlab.lab.plots import plot_lr_finder

        return plot_lr_finder([(label or "loss", self)], ax=ax)


def _call(loss_fn: Callable, step: int) -> torch.Tensor:
    try:
        takes_step = len(inspect.signature(loss_fn).parameters) >= 1
    except (TypeError, ValueError):  # builtins without a signature
        takes_step = True
    return loss_fn(step) if takes_step else loss_fn()


def lr_find(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.9,
    diverge: float = 4.0,
    suggest: str = "valley",
) -> LRFinderResult:
    """Run the range test and return the curve with a suggested learning rate.

    Args:
        model: the module whose parameters ``optimizer`` trains (saved and restored).
        optimizer: any ``torch.optim.Optimizer``; every param group gets the same swept lr.
        loss_fn: returns the scalar training loss (a fresh minibatch) for a step; called as
            ``loss_fn(step)``, or ``loss_fn()`` if it takes no argument.
        start_lr, end_lr: the sweep goes exponentially from one to the other.
        steps: number of optimizer steps (the sweep's resolution).
        smoothing: β of the debiased exponential moving average of the loss.
        diverge: stop once the smoothed loss exceeds ``diverge`` × its best value.
        suggest: ``"valley"``, ``"steepest"`` or ``"minimum"`` (see the module docstring).
    """
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ValueError(f"Invalid lr range: start_lr={start_lr}, end_lr={end_lr}")
    if steps < 5:
        raise ValueError(f"Invalid steps: {steps} (need at least 5)")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"Invalid smoothing: {smoothing} (0 <= smoothing < 1)")
    if not diverge > 1.0:
        raise ValueError(f"Invalid diverge: {diverge} (must be > 1)")
    if suggest not in SUGGESTIONS:
        raise ValueError(f"Invalid suggest: {suggest!r} (one of {', '.join(SUGGESTIONS)})")

    model_state = copy.deepcopy(model.state_dict())
    optim_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    lrs: list[float] = []
    losses: list[float] = []
    stopped_early = False
    ratio = (end_lr / start_lr) ** (1.0 / (steps - 1))
    try:
        # fork_rng: dropout masks drawn during the sweep must not shift the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            model.train()
            best = math.inf
            avg = 0.0
            for step in range(steps):
                lr = start_lr * ratio**step
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss = _call(loss_fn, step)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                lrs.append(lr)
                losses.append(value)
                if not math.isfinite(value):
                    stopped_early = True
                    break
                avg = smoothing * avg + (1 - smoothing) * value
                smooth = avg / (1 - smoothing ** (step + 1))
                best = min(best, smooth)
                if step > 0 and smooth > diverge * best:
                    stopped_early = True
                    break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)

    finite = [v if math.isfinite(v) else math.nan for v in losses]
    # A non-finite last loss is a marker of divergence, not a point on the curve.
    if finite and math.isnan(finite[-1]):
        lrs, finite = lrs[:-1], finite[:-1]
    smoothed = ema_debiased(finite, smoothing) if finite else []
    suggestions = suggest_all(lrs, smoothed)
    suggestion, reason = suggestions[suggest]
    return LRFinderResult(
        lrs=lrs,
        losses=finite,
        smoothed=smoothed,
        suggestion=suggestion,
        method=suggest,
        reason=reason,
        stopped_early=stopped_early,
        suggestions={k: v for k, (v, _) in suggestions.items()},
    )


def suggest_all(lrs: list[float], smoothed: list[float]) -> dict[str, tuple[float | None, str]]:
    """Every suggestion rule applied to a curve: name -> (lr or None, how it was chosen)."""
    n = len(smoothed)
    if n < 5:
        none = (None, "too few points before the loss diverged; lower start_lr")
        return dict.fromkeys(SUGGESTIONS, none)
    log_lr = np.log10(np.asarray(lrs, dtype=float))
    loss = np.asarray(smoothed, dtype=float)
    # The very first points are dominated by the smoothing's warm-up; skip a few.
    skip = min(max(n // 20, 1), 5)
    i_min = skip + int(np.nanargmin(loss[skip:]))

    out: dict[str, tuple[float | None, str]] = {}
    lr_min = lrs[i_min]
    out["minimum"] = (
        lr_min / 10,
        f"one tenth of the lr at the minimum of the smoothed loss ({lr_min:.3g})",
    )

    # Slope over a window of about a twentieth of the sweep, not between neighbours: with
    # minibatch noise, neighbouring differences would pick a random wiggle on the flat part.
    w = max(1, n // 20)
    lo_i = np.clip(np.arange(n) - w, 0, n - 1)
    hi_i = np.clip(np.arange(n) + w, 0, n - 1)
    slope = (loss[hi_i] - loss[lo_i]) / np.maximum(log_lr[hi_i] - log_lr[lo_i], 1e-12)
    end = max(i_min, skip + 1)
    i_steep = skip + int(np.argmin(slope[skip:end]))
    out["steepest"] = (
        lrs[i_steep],
        f"steepest descent of the smoothed loss ({slope[i_steep]:.3g} per decade)",
    )

    # The descent: from where the loss has fallen by a tenth of its total fall (the flat start
    # is excluded, however long it is) down to the minimum.
    start_level = float(np.median(loss[: skip + 1]))
    threshold = start_level - 0.1 * (start_level - loss[i_min])
    start = next((i for i in range(skip, i_min + 1) if loss[i] <= threshold), i_min)
    middle = 10 ** ((log_lr[start] + log_lr[i_min]) / 2)
    out["valley"] = (
        float(middle),
        f"middle of the descent of the smoothed loss ({lrs[start]:.3g} to {lrs[i_min]:.3g})",
    )
    return out


# -- the range test on a lab problem (used by ``optimlab lr-find`` and ``compare``) ----------


def make_lr_find_config(
    problem: str,
    optimizer: str,
    hparams: dict[str, Any],
    *,
    start_lr: float,
    end_lr: float,
    steps: int,
    seed: int = 0,
    smoothing: float = 0.9,
    diverge: float = 4.0,
    suggest: str = "valley",
    engine: str = "auto",
    fingerprint: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything that determines a range test on a problem (hashed into its id)."""
    from optimlab.lab.identity import jsonable
    from optimlab.lab.runner import PROTOCOL_VERSION

    config = {
        "problem": problem,
        "optimizer": optimizer,
        "hparams": jsonable(dict(sorted((k, v) for k, v in hparams.items() if k != "lr"))),
        "start_lr": float(start_lr),
        "end_lr": float(end_lr),
        "steps": int(steps),
        "seed": int(seed),
        "smoothing": float(smoothing),
        "diverge": float(diverge),
        "suggest": suggest,
        "engine": engine,
        "protocol": PROTOCOL_VERSION,
    }
    if fingerprint:  # a user's problem (see optimlab.lab.fingerprint)
        config["problem_fingerprint"] = dict(fingerprint)
    return config


def execute_lr_find(config: dict[str, Any], threads: int | None = 1) -> dict[str, Any]:
    """Run a range test as ``config`` says and return the record the store keeps."""
    import socket
    import time

    from optimlab.lab.fingerprint import check_unchanged
    from optimlab.lab.identity import config_hash, now, versions
    from optimlab.lab.optimizers import build_optimizer
    from optimlab.lab.problem_lookup import resolve_problem
    from optimlab.lab.reproducible import seeded_globals, torch_threads
    from optimlab.lab.runner import hparams_for_torch
    from optimlab.lab.specs import OptimizerSpec

    t0 = time.perf_counter()
    problem = resolve_problem(config["problem"])
    check_unchanged(config)
    spec = OptimizerSpec(label=config["optimizer"], name=config["optimizer"])
    with torch_threads(threads), seeded_globals(config["seed"]):
        instance = problem.make(config["seed"])
        optimizer = build_optimizer(
            spec,
            instance.model,
            engine=config["engine"],
            **{**hparams_for_torch(config["hparams"]), "lr": config["start_lr"]},
        )
        result = lr_find(
            instance.model,
            optimizer,
            instance.train_loss,
            start_lr=config["start_lr"],
            end_lr=config["end_lr"],
            steps=config["steps"],
            smoothing=config["smoothing"],
            diverge=config["diverge"],
            suggest=config["suggest"],
        )
    return {
        "find_id": config_hash(config),
        "config": config,
        "result": result.to_json(),
        "wall_time": time.perf_counter() - t0,
        "finished_at": now(),
        "versions": versions(),
        "host": socket.gethostname(),
    }
