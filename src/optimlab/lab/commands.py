"""The other lab commands as Python functions: ``tune``, ``trajectories`` and ``find_lr``.

``tune`` and ``trajectories`` are the comparison protocol with different settings (one cell
searched with Optuna; 2-D functions with paths and animations), so they share its store,
resumability and report. ``find_lr`` runs the learning-rate range test on a problem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError
from optimlab.lab.protocol import DEFAULT_OPTIMIZERS, DEFAULT_OUT, compare

#: All bundled 2-D test functions.
FUNCTIONS_2D = ("rosenbrock", "rastrigin", "beale", "himmelblau", "ill_conditioned", "saddle")
TRAJECTORY_BUDGET = 8
TUNE_BUDGET = 20
QUICK_TUNE_BUDGET = 4


def tune(
    problem: str,
    optimizer: str,
    *,
    budget: int | None = None,
    hparams: str | Sequence[str] = "lr",
    seeds: int | Sequence[int] = 1,
    storage: str | None = None,
    out_dir: str | os.PathLike = DEFAULT_OUT,
    **kwargs: Any,
):
    """An Optuna search for one optimizer on one problem; returns :class:`Results`.

    ``lr`` is searched log-uniformly over the problem's range; ``hparams="all"`` (or a list
    of names from :data:`optimlab.lab.tuning.SEARCH_SPACES`) adds other hyperparameters.
    ``storage`` is any Optuna storage URL; machines running the same ``tune`` against the same
    URL share one study. The best setting is rerun on ``seeds`` seeds. Other keyword arguments
    are those of :func:`optimlab.lab.compare`.
    """
    if budget is None:
        budget = QUICK_TUNE_BUDGET if kwargs.get("quick") else TUNE_BUDGET
    kwargs.setdefault("lr_find", False)
    return compare(
        [problem],
        [optimizer],
        budget=budget,
        seeds=seeds,
        search="optuna",
        hparams=hparams,
        storage=storage,
        out_dir=out_dir,
        kind="tune",
        **kwargs,
    )


def trajectories(
    functions: Sequence[str] = FUNCTIONS_2D,
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS,
    *,
    budget: int | None = None,
    out_dir: str | os.PathLike = DEFAULT_OUT,
    **kwargs: Any,
):
    """Tune each optimizer's lr on 2-D functions and draw their paths.

    Writes one contour PNG per function and an animated GIF per function
    (``figures/trajectories-<function>.gif``) besides ``trajectories.html``.
    """
    if budget is None:
        budget = 3 if kwargs.get("quick") else TRAJECTORY_BUDGET
    kwargs.setdefault("lr_find", False)
    kwargs.setdefault("seeds", 1)
    return compare(
        list(functions),
        list(optimizers),
        budget=budget,
        out_dir=out_dir,
        kind="trajectories",
        **kwargs,
    )


def find_lr(
    problem: str,
    optimizers: Sequence[str] = ("adam",),
    *,
    start_lr: float | None = None,
    end_lr: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    suggest: str = "valley",
    quick: bool = False,
    out_dir: str | os.PathLike = DEFAULT_OUT,
    threads: int | None = 1,
    engine: str = "auto",
    write: bool = True,
) -> list[tuple[str, Any]]:
    """Range-test each optimizer on a problem; returns ``[(label, LRFinderResult)]``.

    The default sweep runs from a tenth of the problem's ``default_lr_range`` low end to ten
    times its high end. Results are stored in ``lab.db`` (a repeated call is answered from
    there) and, with ``write``, plotted to ``figures/lr-find-<problem>.png`` with the curves in
    ``lr-find-<problem>.json``.
    """
    from optimlab.lab.files import atomic_write_bytes, atomic_write_json, ensure_writable_dir
    from optimlab.lab.lr_finder import (
        SUGGESTIONS,
        LRFinderResult,
        execute_lr_find,
        make_lr_find_config,
    )
    from optimlab.lab.optimizers import parse_optimizers
    from optimlab.lab.problem_lookup import resolve_problems
    from optimlab.lab.runner import config_hash
    from optimlab.lab.store import Store

    if suggest not in SUGGESTIONS:
        raise LabError(
            f"unknown suggestion rule '{suggest}' (choose from: {', '.join(SUGGESTIONS)})"
        )
    [(key, prob)] = resolve_problems([problem])
    specs = parse_optimizers(list(optimizers))
    lo, hi = prob.default_lr_range
    start = start_lr if start_lr is not None else lo / 10
    end = end_lr if end_lr is not None else hi * 10
    if not (0 < start < end):
        raise LabError(f"bad lr range: start {start} must be positive and below end {end}")
    n_steps = steps if steps is not None else (30 if quick else 100)
    if n_steps < 5:
        raise LabError(f"steps must be at least 5 for a range test, got {n_steps}")
    out = ensure_writable_dir(out_dir)

    found: list[tuple[str, LRFinderResult]] = []
    with Store(out) as store:
        for spec in specs:
            config = make_lr_find_config(
                key,
                spec.name,
                spec.hparams,
                start_lr=start,
                end_lr=end,
                steps=n_steps,
                seed=seed,
                suggest=suggest,
                engine=engine,
            )
            record = store.get_lr_find(config_hash(config))
            if record is None:
                record = execute_lr_find(config, threads)
                store.put_lr_find(record)
            found.append((spec.label, LRFinderResult.from_json(record["result"])))

    if write:
        from optimlab.lab.plots import plot_lr_finder, png_bytes

        stem = f"lr-find-{prob.name}"
        atomic_write_bytes(
            Path(out) / "figures" / f"{stem}.png",
            png_bytes(plot_lr_finder(found, title=prob.name)),
        )
        atomic_write_json(
            Path(out) / f"{stem}.json",
            {label: res.to_json() for label, res in found},
        )
    return found
