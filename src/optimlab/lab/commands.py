"""The lab's commands as Python functions: ``compare``, ``tune``, ``trajectories``,
``find_lr`` (``optimlab lr-find``) and ``rebuild_report`` / ``list_sweeps``
(``optimlab report``).

``compare`` is the comparison protocol of :mod:`optimlab.lab.protocol` with the lab's default
problems, optimizers and budgets; ``tune`` and ``trajectories`` are the same protocol with
different settings (one cell searched with Optuna; 2-D functions with paths and animations),
so they share its store, resumability and report. ``find_lr`` runs the learning-rate range
test on a problem. The CLI (:mod:`optimlab.lab.cli`) is a thin layer over these functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError
from optimlab.lab.files import ensure_writable_dir
from optimlab.lab.limits import (
    MAX_GRACE_PERIOD,
    MAX_STEPS,
    check_int,
    check_lr_range,
    check_seed,
    max_processes,
)
from optimlab.lab.protocol import LR_FIND_STEPS, QUICK_LR_FIND_STEPS, plan_sweep, run_sweep
from optimlab.lab.storage import open_store, parse_storage, redact
from optimlab.lab.tracking import make_trackers, prepare_trackers, track_sweep
from optimlab.lab.tuning import GRACE_PERIOD

#: Where every command writes (``lab.db``, reports, figures) unless told otherwise.
DEFAULT_OUT = "optimlab-out"
#: ``python -m optimlab compare`` with no arguments: the classic optimizers of the tutorials
#: on one network, one convex problem and one 2-D function, all bundled (no download).
DEFAULT_PROBLEMS = ("digits_mlp", "logistic_regression", "rosenbrock")
DEFAULT_OPTIMIZERS = (
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamw",
    "amsgrad",
    "radam",
)
#: Sized so that the default comparison stays under five minutes on two cores
#: (measured by benchmarks/demo_time.py).
DEFAULT_BUDGET = 8
DEFAULT_SEEDS = 3
#: ``quick=True`` budgets: enough to exercise every code path, not to conclude anything.
QUICK_BUDGET = 3
QUICK_SEEDS = 2
#: All bundled 2-D test functions.
FUNCTIONS_2D = ("rosenbrock", "rastrigin", "beale", "himmelblau", "ill_conditioned", "saddle")
TRAJECTORY_BUDGET = 8
QUICK_TRAJECTORY_BUDGET = 3
TUNE_BUDGET = 20
QUICK_TUNE_BUDGET = 4


def compare(
    problems: Sequence[str] = DEFAULT_PROBLEMS,
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS,
    *,
    budget: int | None = None,
    seeds: int | Sequence[int] | None = None,
    search: str = "grid",
    hparams: str | Sequence[str] = "lr",
    steps: int | None = None,
    lr_range: tuple[float, float] | None = None,
    grid_extend: int | None = None,
    quick: bool = False,
    out_dir: str | os.PathLike = DEFAULT_OUT,
    storage: str | None = None,
    grace_period: int = GRACE_PERIOD,
    workers: int | None = None,
    threads: int | None = 1,
    engine: str = "auto",
    lr_find: bool = True,
    tensorboard: bool = False,
    track: Sequence[str] | str | None = (),
    mlflow_uri: str | None = None,
    report: bool = True,
    progress: bool | Any = False,
    kind: str = "compare",
):
    """Compare optimizers on problems with an equal tuning budget; returns :class:`Results`.

    Args:
        problems: registry names or ``"module:function"`` specs.
        optimizers: specs such as ``"adam"``, ``"momentum"``, ``"adam:eps=1e-6"``.
        budget: trials per optimizer and problem (grid points, or Optuna trials).
        seeds: number of seeds (0..n-1) or explicit seeds for the reruns of the best setting.
        search: ``"grid"`` or ``"optuna"``.
        hparams: with Optuna, what to tune besides ``lr``: ``"lr"``, ``"all"`` or names.
        steps: steps per run for every problem (default: each problem's own).
        lr_range: override the problems' ``default_lr_range``.
        grid_extend: with the grid search, how many points (in all) the grid may grow by,
            one log step at a time, while the best learning rate lies at its edge (default
            3; ``quick``: 1; 0 keeps the grid as it is).
        quick: tiny budgets for smoke tests.
        out_dir: where ``lab.db`` (without ``storage``), the report and figures go.
        storage: where the runs and the Optuna studies live instead of ``out_dir/lab.db``:
            ``postgresql://user:password@host/database`` shares both with every process, on
            any machine, that runs the same sweep against the same URL (see
            :mod:`optimlab.lab.storage`); ``sqlite:///path`` moves only the studies.
        grace_period: with a shared storage, seconds without a heartbeat after which a
            worker's running trials are taken for dead and run again by another worker.
        workers: processes (default: all cores; 1 runs in this process).
        threads: torch threads per worker (``None``: torch's default).
        engine: optimizer engine (``"auto"``, ``"loop"``, ``"foreach"``, ``"fused"``).
        lr_find: also run a learning-rate range test per cell for the report.
        tensorboard: the same as ``"tensorboard"`` in ``track``.
        track: log every run to these backends once the runs are stored: any of
            ``"tensorboard"`` (``out_dir/tensorboard``), ``"wandb"`` (offline under
            ``out_dir/wandb`` unless ``WANDB_MODE`` says otherwise), ``"mlflow"``
            (``out_dir/mlflow.db`` unless ``mlflow_uri`` or ``MLFLOW_TRACKING_URI``); see
            :mod:`optimlab.lab.tracking`. What each did is in ``results.tracking``.
        mlflow_uri: MLflow tracking URI (implies ``"mlflow"``).
        report: write ``report.html``/``report.md`` and figures.
        progress: ``True`` for a rich progress bar, or an object with the
            :class:`~optimlab.lab.protocol.NullProgress` methods.
    """
    # A single name is a common slip in a notebook: list("adam") would be four optimizers.
    problems = [problems] if isinstance(problems, str) else list(problems)
    optimizers = [optimizers] if isinstance(optimizers, str) else list(optimizers)
    if workers is not None:
        workers = check_int("workers", workers, 1, max_processes())
    if threads is not None:
        threads = check_int("threads", threads, 1, max_processes())
    parse_storage(storage)
    grace_period = check_int("grace period", grace_period, 1, MAX_GRACE_PERIOD)
    sweep = plan_sweep(
        problems,
        optimizers,
        kind=kind,
        budget=budget if budget is not None else (QUICK_BUDGET if quick else DEFAULT_BUDGET),
        seeds=seeds if seeds is not None else (QUICK_SEEDS if quick else DEFAULT_SEEDS),
        search=search,
        hparams=hparams,
        steps=steps,
        lr_range=lr_range,
        grid_extend=grid_extend,
        quick=quick,
        engine=engine,
        lr_find=lr_find,
    )
    out = ensure_writable_dir(out_dir)
    trackers = prepare_trackers(
        make_trackers(track, tensorboard=tensorboard, mlflow_uri=mlflow_uri), out
    )
    run_sweep(
        sweep,
        out,
        storage=storage,
        workers=workers,
        threads=threads,
        progress=progress,
        grace_period=grace_period,
    )

    from optimlab.lab.results import Results

    results = Results.load(out, sweep.sweep_id, storage=storage)
    if report:
        results.write_report(out)
    results.tracking = track_sweep(results, trackers)
    return results


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
    of names from :func:`optimlab.lab.tuning.search_space`) adds other hyperparameters.
    ``storage`` is a PostgreSQL URL (``postgresql://user:password@host/database``): processes
    running the same ``tune`` against the same URL, on one machine or many, share one study
    and one run store. The best setting is rerun on ``seeds`` seeds. Other keyword arguments
    are those of :func:`compare`.
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
        budget = QUICK_TRAJECTORY_BUDGET if kwargs.get("quick") else TRAJECTORY_BUDGET
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


class RangeTests(list):
    """``[(label, LRFinderResult)]``, one per optimizer, as :func:`find_lr` returns it, with
    the problem's ``name`` and the ``files`` written in the call's own folder (``png`` and
    ``json``; empty when nothing was written)."""

    def __init__(self, found, name: str, files: dict[str, Path] | None = None) -> None:
        super().__init__(found)
        self.name = name
        self.files = dict(files or {})


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
) -> RangeTests:
    """Range-test each optimizer on a problem; returns ``[(label, LRFinderResult)]`` (a
    :class:`RangeTests`, which also says where its files went).

    The default sweep runs from a tenth of the problem's ``default_lr_range`` low end to ten
    times its high end. Results are stored in ``lab.db`` (a repeated call is answered from
    there) and, with ``write``, plotted to ``lr-find-<problem>.png`` with the curves in
    ``lr-find-<problem>.json``, in the call's own folder ``reports/lr-find-<id>/`` and, as the
    latest, at ``figures/lr-find-<problem>.png`` and ``lr-find-<problem>.json``.
    """
    from optimlab.lab.files import atomic_write_bytes, atomic_write_json
    from optimlab.lab.fingerprint import problem_fingerprint
    from optimlab.lab.identity import config_hash, now
    from optimlab.lab.lr_finder import (
        SUGGESTIONS,
        LRFinderResult,
        execute_lr_find,
        make_lr_find_config,
    )
    from optimlab.lab.optimizers import parse_optimizers
    from optimlab.lab.problem_lookup import resolve_problems
    from optimlab.lab.report_index import copy_latest, report_dir, write_index
    from optimlab.lab.store import Store

    if suggest not in SUGGESTIONS:
        raise LabError(
            f"unknown suggestion rule '{suggest}' (choose from: {', '.join(SUGGESTIONS)})"
        )
    seed = check_seed(seed)
    if threads is not None:
        threads = check_int("threads", threads, 1, max_processes())
    [(key, prob)] = resolve_problems([problem])
    specs = parse_optimizers(list(optimizers))
    lo, hi = prob.default_lr_range
    start, end = check_lr_range(
        start_lr if start_lr is not None else lo / 10, end_lr if end_lr is not None else hi * 10
    )
    n_steps = steps if steps is not None else (QUICK_LR_FIND_STEPS if quick else LR_FIND_STEPS)
    n_steps = check_int("steps of a range test", n_steps, 5, MAX_STEPS)
    out = ensure_writable_dir(out_dir)

    fingerprint = problem_fingerprint(key, prob)
    found: list[tuple[str, LRFinderResult]] = []
    configs = []
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
                fingerprint=fingerprint,
            )
            configs.append(config)
            record = store.get_lr_find(config_hash(config))
            if record is None:
                record = execute_lr_find(config, threads)
                store.put_lr_find(record)
            found.append((spec.label, LRFinderResult.from_json(record["result"])))
    outcome = RangeTests(found, prob.name)
    if not write:
        return outcome

    from optimlab.lab.plots import plot_lr_finder, png_bytes

    # One folder per set of range tests: two lr-find commands into one --out never share files.
    labels = [label for label, _ in found]
    own = report_dir(out, "lr-find", config_hash({"labels": labels, "configs": configs}))
    stem = f"lr-find-{prob.name}"
    outcome.files = {"png": own / f"{stem}.png", "json": own / f"{stem}.json"}
    atomic_write_bytes(outcome.files["png"], png_bytes(plot_lr_finder(found, title=prob.name)))
    atomic_write_json(outcome.files["json"], {label: res.to_json() for label, res in found})
    plan = {"problems": [key], "optimizers": labels, "start_lr": start, "end_lr": end}
    plan.update({"steps": n_steps, "seed": seed, "suggest": suggest, "quick": quick})
    summary = {"kind": "lr-find", "updated_at": now(), "completed_at": now(), "plan": plan}
    atomic_write_json(own / "report.json", {**summary, "page": outcome.files["png"].name})
    copy_latest(
        [
            (outcome.files["png"], out / "figures" / f"{stem}.png"),
            (outcome.files["json"], out / f"{stem}.json"),
        ]
    )
    write_index(out)
    return outcome


def db_path(out_dir: str | os.PathLike) -> Path:
    """The lab database of an output directory."""
    from optimlab.lab.store import DB_NAME

    return Path(out_dir) / DB_NAME


def list_sweeps(
    out_dir: str | os.PathLike = DEFAULT_OUT, storage: str | None = None
) -> list[dict[str, Any]]:
    """The sweeps stored in ``out_dir/lab.db`` (or in ``storage``), most recently updated
    first."""
    with open_store(out_dir, storage, read_only=True) as store:
        return store.sweeps()


def store_location(out_dir: str | os.PathLike = DEFAULT_OUT, storage: str | None = None) -> str:
    """How messages name the store of ``out_dir`` and ``storage`` (a password never shows)."""
    return redact(storage) if storage is not None else str(db_path(out_dir).resolve())


def rebuild_report(
    out_dir: str | os.PathLike = DEFAULT_OUT,
    sweep: str | None = None,
    kind: str | None = None,
    gif: bool | None = None,
    *,
    track: Sequence[str] | str | None = (),
    tensorboard: bool = False,
    mlflow_uri: str | None = None,
    storage: str | None = None,
):
    """Rewrite the report of a stored sweep (default: the latest) without running anything;
    returns its :class:`Results` (``results.report_path`` is the HTML file). ``track``,
    ``tensorboard`` and ``mlflow_uri`` log the stored sweep as :func:`compare` does.
    ``storage`` reads the runs from that database (any machine can build the report of a
    shared search) and writes the report into ``out_dir``."""
    from optimlab.lab.report import write_report
    from optimlab.lab.results import Results

    results = Results.load(out_dir, sweep, kind, storage=storage)
    out = ensure_writable_dir(out_dir)
    trackers = prepare_trackers(
        make_trackers(track, tensorboard=tensorboard, mlflow_uri=mlflow_uri), out
    )
    write_report(results, out, gif=gif)
    results.tracking = track_sweep(results, trackers)
    return results
