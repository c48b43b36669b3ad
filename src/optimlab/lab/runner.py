"""One training run: a problem, an optimizer setting, a seed → numbers and a curve.

:func:`execute_run` is what every worker process executes. It is a plain function of a
JSON-able configuration, deterministic given that configuration: the problem draws its data
and minibatches from the seed alone, global RNGs are seeded from it (and restored after), and
torch runs with a fixed number of threads (a different thread count can change the order of
floating-point sums, hence the last bits).

What a run measures, and why:

* the minibatch train loss at every step, plus a debiased running average of it (β = 0.9,
  roughly the last ten steps) used for "steps to target", so that one lucky minibatch does
  not count as reaching the target;
* ``evals`` evaluations spread evenly over the run (train loss on the problem's evaluation
  set, validation loss and metric where the problem has them);
* step diagnostics at about a hundred sampled steps, from
  :class:`optimlab.guards.StepDiagnostics`: gradient norm, update norm ``‖θ_{t+1} − θ_t‖``,
  parameter norm, update ratio, effective per-element learning rate, the learning rate and
  the optimizer's own ``step_info`` (these feed TensorBoard);
* the wall time of each step (zero_grad + forward + backward + step; diagnostics and
  evaluations excluded), reported as a median because a shared machine makes the mean noisy;
* optimizer-state bytes per parameter after training;
* for 2-D problems, the path of the parameter (for trajectory plots).

A run whose loss becomes non-finite or grows a thousandfold past its start is stopped and
marked ``diverged``: its final loss is ``inf`` and it ranks last.
"""

from __future__ import annotations

import math
import socket
import statistics
import time
from typing import Any

import numpy as np
import torch

from optimlab.lab.identity import config_hash, jsonable, now, versions
from optimlab.lab.reproducible import seeded_globals, torch_threads

#: Bump when what a run measures changes, so that old rows are not mistaken for new ones.
PROTOCOL_VERSION = 1
#: Evaluations per run (plus one at step 0).
DEFAULT_EVALS = 10
#: Smoothing of the train loss for time-to-target.
TARGET_EMA = 0.9
#: Diagnostics (grad/update norms) are taken at about this many evenly spaced steps.
DIAG_POINTS = 100
#: Curves longer than this are stored subsampled.
MAX_CURVE_POINTS = 2000
#: A loss this many times larger than the first loss (plus one) counts as divergence.
DIVERGENCE_FACTOR = 1e3


def make_run_config(
    problem: str,
    optimizer: str,
    hparams: dict[str, Any],
    *,
    steps: int,
    seed: int,
    engine: str = "auto",
    evals: int = DEFAULT_EVALS,
    fingerprint: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The full configuration of a run: everything that can change its numbers.

    ``problem`` is a key that :func:`optimlab.lab.problems.load_problem` accepts, ``optimizer``
    a registry name and ``hparams`` all of its hyperparameters, ``lr`` included.
    ``fingerprint`` is a user problem's :func:`~optimlab.lab.fingerprint.problem_fingerprint`
    (built-in problems have none: the protocol version stands for their code).
    """
    config = {
        "problem": problem,
        "optimizer": optimizer,
        "hparams": jsonable(dict(sorted(hparams.items()))),
        "steps": int(steps),
        "seed": int(seed),
        "engine": engine,
        "evals": int(evals),
        "protocol": PROTOCOL_VERSION,
    }
    if fingerprint:
        config["problem_fingerprint"] = dict(fingerprint)
    return config


def run_id(config: dict[str, Any]) -> str:
    """A run's id: the hash of its full configuration (which includes the seed)."""
    return config_hash(config)


def hparams_for_torch(hparams: dict[str, Any]) -> dict[str, Any]:
    """JSON turned tuples into lists; optimizers expect ``betas`` and friends as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items()}


def ema_debiased(values: list[float], beta: float) -> list[float]:
    """Exponential moving average ``a_i = β·a_{i-1} + (1−β)·x_i`` from ``a = 0``, divided by
    ``1 − β^(i+1)`` so early values are not pulled toward 0 (Adam's bias correction)."""
    out, avg = [], 0.0
    for i, value in enumerate(values):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def _subsample(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def _clean(value: Any) -> Any:
    """Python floats for JSON (NumPy and 0-d tensors are not serialisable)."""
    if torch.is_tensor(value):
        value = value.item()
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return value


def execute_run(config: dict[str, Any], threads: int | None = 1) -> dict[str, Any]:
    """Train once as ``config`` says and return the record the store keeps.

    Runs in a worker process (or in-process with ``workers=1``); touches no files.
    """
    from optimlab.lab.fingerprint import check_unchanged
    from optimlab.lab.optimizers import build_optimizer
    from optimlab.lab.problem_lookup import resolve_problem
    from optimlab.lab.specs import OptimizerSpec

    started_at, t_start = now(), time.perf_counter()
    problem = resolve_problem(config["problem"])
    check_unchanged(config)
    steps, seed = config["steps"], config["seed"]
    spec = OptimizerSpec(label=config["optimizer"], name=config["optimizer"])
    with torch_threads(threads), seeded_globals(seed):
        instance = problem.make(seed)
        params = [p for p in instance.model.parameters() if p.requires_grad]
        optimizer = build_optimizer(
            spec, instance.model, engine=config["engine"], **hparams_for_torch(config["hparams"])
        )
        result = _train(problem, instance, optimizer, params, steps, config["evals"])
    record = {
        "run_id": run_id(config),
        "config": config,
        "status": "diverged" if result["final"]["diverged"] else "finished",
        "final": result["final"],
        "curve": result["curve"],
        "wall_time": time.perf_counter() - t_start,
        "started_at": started_at,
        "finished_at": now(),
        "versions": versions(),
        "host": socket.gethostname(),
    }
    return record


def _evaluate(instance) -> dict[str, float]:
    with torch.no_grad():
        values = instance.evaluate()
    return {k: float(_clean(v)) for k, v in values.items() if v is not None}


def _train(problem, instance, optimizer, params, steps: int, evals: int) -> dict[str, Any]:
    from optimlab.guards import StepDiagnostics

    n_params = sum(p.numel() for p in params)
    eval_at = set(np.linspace(0, steps, max(evals, 1) + 1).round().astype(int).tolist())
    track_path = problem.kind == "function2d"

    losses: list[float] = []
    step_times: list[float] = []
    evals_log: dict[str, list[float]] = {"step": [], "seconds": []}
    diag: list[dict[str, float]] = []
    path: list[list[float]] = []
    train_seconds = 0.0
    diverged_at: int | None = None
    limit: float | None = None
    clock = {"t": 0.0, "step": 0.0}

    def record_eval(step: int) -> None:
        values = _evaluate(instance)
        evals_log["step"].append(step)
        evals_log["seconds"].append(train_seconds)
        for key, value in values.items():
            evals_log.setdefault(key, []).append(value)

    def on_record(record) -> None:
        diag.append({"step": record.step - 1, **record.scalars()})

    # Hook order decides what the step timer sees. Post-hooks run in registration order, so
    # ours goes first, before StepDiagnostics'; our pre-hook is registered after its pre-hook.
    # The timer then spans exactly optimizer.step()'s own work, never the diagnostics' copies.
    def start_timer(*_):
        clock["t"] = time.perf_counter()

    def stop_timer(*_):
        clock["step"] = time.perf_counter() - clock["t"]

    handles = [optimizer.register_step_post_hook(stop_timer)]
    diagnostics = StepDiagnostics(optimizer, callback=on_record, every=max(1, steps // DIAG_POINTS))
    handles.append(optimizer.register_step_pre_hook(start_timer))
    try:
        for step in range(steps):
            if step in eval_at:
                record_eval(step)
            if track_path:
                path.append(_point(params))
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = instance.train_loss(step)
            loss.backward()
            t1 = time.perf_counter()
            optimizer.step()
            step_times.append((t1 - t0) + clock["step"])
            train_seconds += step_times[-1]

            value = float(loss.detach())
            losses.append(value)
            if limit is None:
                limit = DIVERGENCE_FACTOR * (abs(value) + 1.0)
            if not math.isfinite(value) or value > limit:
                diverged_at = step
                break
    finally:
        diagnostics.close()
        for handle in handles:
            handle.remove()

    steps_done = len(losses)
    if track_path and diverged_at is None:
        path.append(_point(params))

    smooth = ema_debiased(losses, TARGET_EMA)
    target = float(problem.target)
    reached = next((i for i, v in enumerate(smooth) if v <= target), None)
    cumulative = np.cumsum(step_times) if step_times else np.zeros(0)

    final: dict[str, Any] = {
        "steps": steps,
        "steps_done": steps_done,
        "diverged": diverged_at is not None,
        "diverged_at": diverged_at,
        "target": target,
        "steps_to_target": None if reached is None else reached + 1,
        "seconds_to_target": None if reached is None else float(cumulative[reached]),
        "sec_per_step": statistics.median(step_times) if step_times else None,
        "train_seconds": train_seconds,
        "state_bytes_per_param": state_bytes(optimizer),
        "n_params": n_params,
    }
    if diverged_at is None:
        record_eval(steps)
        for key in evals_log:
            if key not in ("step", "seconds"):
                final[key] = evals_log[key][-1]
    else:
        final["train_loss"] = math.inf
        # Keep the metric keys the problem would have had, so tables stay rectangular.
        for key in evals_log:
            if key not in ("step", "seconds", "train_loss"):
                final[key] = math.nan

    keep = _subsample(steps_done, MAX_CURVE_POINTS)
    curve: dict[str, Any] = {
        "step": keep,
        "loss": [losses[i] for i in keep],
        "smooth": [smooth[i] for i in keep],
        "evals": evals_log,
        "diag": diag,
    }
    if track_path:
        curve["path"] = path
    return {"final": final, "curve": curve}


def _point(params: list[torch.Tensor]) -> list[float]:
    return [float(v) for v in params[0].detach().reshape(-1).tolist()]


def state_bytes(optimizer: torch.optim.Optimizer) -> float:
    from optimlab.lab.optimizers import state_bytes_per_param

    return state_bytes_per_param(optimizer)
