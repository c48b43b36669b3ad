"""The comparison protocol (after DeepOBS and AlgoPerf) and the scheduler that runs it.

For every problem × optimizer cell:

1. **Tune** with an equal budget on the first seed: ``budget`` trials of a log-spaced
   learning-rate grid over the problem's ``default_lr_range`` (default), grown by the same
   log step while the best learning rate lies at its edge (at most ``grid_extend`` points),
   or an Optuna search (``search="optuna"``) over ``lr`` and optionally other hyperparameters.
2. **Rerun** the best setting on every seed (the first seed's run is the tuning run itself:
   same configuration, same seed, so the store hands it back instead of recomputing it).
3. Optionally run a **learning-rate range test** (:mod:`optimlab.lab.lr_finder`), for the
   report.

:func:`plan_sweep` checks what was asked for and turns it into a plan (the JSON that
identifies the sweep); :func:`run_sweep` executes a plan. The commands of
:mod:`optimlab.lab.commands` (``compare``, ``tune``, ``trajectories``) are both, with their
own defaults.

All runs go to a pool of worker processes; a cell's reruns are queued as soon as its tuning is
done, so cores never wait for the slowest cell. Each finished run is written to the store at
once, in its own transaction; runs already in the store are never recomputed, which is what
makes an interrupted command resumable by running it again.

With ``--storage postgresql://…`` the store and the Optuna studies are shared: the same command
run by several processes, on one machine or many, divides each Optuna search between them
(each process waits for the others' last trials, then all rerun the same best setting) and
finds every run any of them finished (:mod:`optimlab.lab.storage`).
"""

from __future__ import annotations

import os
import socket
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError, RunFailed
from optimlab.lab.fingerprint import problem_fingerprint
from optimlab.lab.identity import config_hash
from optimlab.lab.limits import (
    MAX_BUDGET,
    MAX_SEEDS,
    MAX_STEPS,
    check_int,
    check_lr_range,
    check_seed,
)
from optimlab.lab.lr_finder import execute_lr_find, make_lr_find_config
from optimlab.lab.objective import Objective, objective_for
from optimlab.lab.optimizers import parse_optimizers
from optimlab.lab.parallel import WorkerPool
from optimlab.lab.problem_lookup import resolve_problems
from optimlab.lab.runner import DEFAULT_EVALS, PROTOCOL_VERSION, execute_run, make_run_config
from optimlab.lab.specs import OptimizerSpec
from optimlab.lab.storage import open_store
from optimlab.lab.store import RunStore
from optimlab.lab.tuning import (
    GRACE_PERIOD,
    GRID_EXTEND,
    QUICK_GRID_EXTEND,
    GridTuner,
    OptunaTuner,
    grid_lrs,
    optimizer_defaults,
    search_params,
)

#: Steps of the range test that goes with each cell (``quick``: fewer).
LR_FIND_STEPS = 100
QUICK_LR_FIND_STEPS = 30
SEARCHES = ("grid", "optuna")


class NullProgress:
    """Progress sink that ignores everything (the Python API's default)."""

    def start(self, total: int, description: str) -> None: ...
    def add_total(self, n: int) -> None: ...
    def advance(self, cached: bool = False) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Cell:
    """One problem × optimizer pair and where its tuning stands."""

    key: str  # problem key for load_problem
    problem: Any
    spec: OptimizerSpec
    steps: int
    tuner: Any
    objective: Objective
    finals_queued: bool = False
    best: dict[str, Any] | None = None

    def links(self, sweep_id: str, role: str) -> dict[str, str]:
        return {
            "sweep_id": sweep_id,
            "role": role,
            "problem": self.problem.name,
            "optimizer": self.spec.label,
        }


@dataclass
class Task:
    item_id: str
    kind: str  # "run" or "lr_find"
    config: dict[str, Any]
    links: list[dict[str, str]]
    on_done: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    #: called with a one-line reason when the run raises
    on_fail: list[Callable[[str], None]] = field(default_factory=list)


@dataclass
class SweepPlan:
    """A checked sweep: its ``plan`` (stored, and hashed into ``sweep_id``), the resolved
    problems as ``(key, problem)`` pairs and the parsed optimizer specs."""

    plan: dict[str, Any]
    sweep_id: str
    problems: list[tuple[str, Any]]
    specs: list[OptimizerSpec]

    @property
    def kind(self) -> str:
        return self.plan["kind"]


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    """A number of seeds (0..n-1) or the seeds themselves, duplicates dropped."""
    if isinstance(seeds, (int, float)):
        return list(range(check_int("seeds", seeds, 1, MAX_SEEDS)))
    out = list(dict.fromkeys(check_seed(s) for s in seeds))
    if not out:
        raise LabError("seeds must not be empty")
    if len(out) > MAX_SEEDS:
        raise LabError(f"at most {MAX_SEEDS} seeds, got {len(out)}")
    return out


def _steps_for(problem, steps: int | None, quick: bool) -> int:
    if steps is not None:
        return check_int("steps", steps, 1, MAX_STEPS)
    return int(problem.quick_steps if quick else problem.steps)


def _lr_range(problem, lr_range: tuple[float, float] | None) -> tuple[float, float]:
    return check_lr_range(*(lr_range if lr_range is not None else problem.default_lr_range))


def plan_sweep(
    problems: Sequence[str],
    optimizers: Sequence[str],
    *,
    kind: str,
    budget: int,
    seeds: int | Sequence[int],
    search: str = "grid",
    hparams: str | Sequence[str] = "lr",
    steps: int | None = None,
    lr_range: tuple[float, float] | None = None,
    grid_extend: int | None = None,
    quick: bool = False,
    engine: str = "auto",
    lr_find: bool = True,
) -> SweepPlan:
    """Check a sweep's settings (names, values) and return its plan; runs nothing.

    Every mistake raises :class:`LabError` here, before any work. The arguments are those of
    :func:`optimlab.lab.compare`, with ``budget`` and ``seeds`` already resolved;
    ``grid_extend=None`` is the protocol's own default (``quick``: the smaller one).
    """
    if search not in SEARCHES:
        raise LabError(f"unknown search '{search}' (choose from: {', '.join(SEARCHES)})")
    budget = check_int("budget", budget, 1, MAX_BUDGET)
    if grid_extend is None:
        grid_extend = QUICK_GRID_EXTEND if quick else GRID_EXTEND
    grid_extend = check_int("grid extension", grid_extend, 0, MAX_BUDGET)
    seed_list = _seed_list(seeds)
    from optimlab.core.engines import ENGINES

    if engine not in ENGINES:
        raise LabError(f"unknown engine '{engine}' (choose from: {', '.join(ENGINES)})")
    resolved = resolve_problems(
        list(problems), kind="function2d" if kind == "trajectories" else None
    )
    specs = parse_optimizers(list(optimizers))
    hparams_arg = hparams if isinstance(hparams, str) else list(hparams)
    for spec in specs:  # fail on a bad name before any work
        search_params(spec.name, hparams_arg) if search == "optuna" else None

    plan = {
        "kind": kind,
        "problems": [key for key, _ in resolved],
        "optimizers": [spec.to_json() for spec in specs],
        "budget": budget,
        "search": search,
        "grid_extend": int(grid_extend) if search == "grid" else 0,
        "hparams": hparams_arg if search == "optuna" else "lr",
        "seeds": seed_list,
        "steps": {key: _steps_for(p, steps, quick) for key, p in resolved},
        "lr_ranges": {key: _lr_range(p, lr_range) for key, p in resolved},
        "engine": engine,
        "evals": DEFAULT_EVALS,
        "lr_find": bool(lr_find),
        "lr_find_steps": QUICK_LR_FIND_STEPS if quick else LR_FIND_STEPS,
        "quick": bool(quick),
        "protocol": PROTOCOL_VERSION,
    }
    fingerprints = {key: problem_fingerprint(key, p) for key, p in resolved}
    if any(fingerprints.values()):
        # Only user problems have one: plans of built-in problems keep their ids.
        plan["fingerprints"] = {key: fp for key, fp in fingerprints.items() if fp}
    return SweepPlan(plan, config_hash(plan), resolved, specs)


def run_sweep(
    sweep: SweepPlan,
    out: Path,
    *,
    storage: str | None = None,
    workers: int | None = None,
    threads: int | None = 1,
    progress: bool | Any = False,
    grace_period: int = GRACE_PERIOD,
) -> None:
    """Run every run of ``sweep`` that its store (``out/lab.db``, or the database of
    ``storage``) does not hold yet, storing each at once."""
    plan, sweep_id = sweep.plan, sweep.sweep_id
    store = open_store(out, storage)
    cells: list[Cell] = []
    try:
        store.begin_sweep(sweep_id, sweep.kind, plan)
        with WorkerPool(workers, threads) as pool:
            for key, problem in sweep.problems:
                for spec in sweep.specs:  # one at a time: those made are closed on any error
                    cells.append(
                        _make_cell(key, problem, spec, sweep, store, pool.workers, grace_period)
                    )
            _Scheduler(store, pool, sweep_id, plan, _progress(progress)).run(cells)
        store.finish_sweep(sweep_id)
    finally:
        for cell in cells:
            cell.tuner.close()
        store.close()


def _progress(progress: bool | Any):
    if progress is True:
        from optimlab.lab.console import RichProgress

        return RichProgress()
    if progress is False or progress is None:
        return NullProgress()
    return progress


def _sampler_seed(sweep_id: str, store: RunStore) -> int:
    """The TPE sampler's seed: the sweep's own, so that a search on one machine draws the same
    points every time; mixed with the host and process when the store is shared, because
    workers of one study that draw the same "random" start points would run them twice."""
    seed = int(sweep_id[:8], 16)
    if store.shared:
        seed ^= zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return seed


def _make_cell(key, problem, spec, sweep: SweepPlan, store, workers, grace_period) -> Cell:
    plan, sweep_id, specs = sweep.plan, sweep.sweep_id, sweep.specs
    objective = objective_for(problem)
    lo, hi = plan["lr_ranges"][key]
    base = {k: v for k, v in spec.hparams.items() if k != "lr"}
    budget = plan["budget"]
    if plan["search"] == "optuna":
        params = search_params(spec.name, plan["hparams"])
        lr_fixed = spec.fixed_lr is not None
        if lr_fixed:
            base["lr"] = spec.fixed_lr
        if params or not lr_fixed:
            tuner = OptunaTuner(
                study_name=f"optimlab:{plan['kind']}:{problem.name}:{spec.label}:{sweep_id[:8]}",
                storage=store.optuna_url,
                objective=objective,
                base=base,
                lr_range=None if lr_fixed else (lo, hi),
                params=params,
                defaults=optimizer_defaults(spec.name, base) if params else {},
                budget=budget,
                parallel=max(1, workers // max(1, len(plan["problems"]) * len(specs))),
                seed=_sampler_seed(sweep_id, store),
                grace_period=grace_period,
                lock=store.search_lock,
            )
            return Cell(key, problem, spec, plan["steps"][key], tuner, objective)
    if spec.fixed_lr is not None:
        tuner = GridTuner([spec.fixed_lr], base, objective)
    else:
        tuner = GridTuner(grid_lrs(lo, hi, budget), base, objective, extend=plan["grid_extend"])
    return Cell(key, problem, spec, plan["steps"][key], tuner, objective)


class _Scheduler:
    """Feeds tasks to the pool, stores results as they arrive, and queues follow-up work."""

    def __init__(self, store: RunStore, pool: WorkerPool, sweep_id: str, plan, progress) -> None:
        self.store, self.pool, self.sweep_id, self.plan = store, pool, sweep_id, plan
        self.progress = progress
        self.queue: deque[Task] = deque()
        self.inflight: dict[Any, Task] = {}
        self.by_id: dict[str, Task] = {}
        self.cells: list[Cell] = []

    def run(self, cells: list[Cell]) -> None:
        self.cells = cells
        total = 0
        for cell in cells:
            # Every final run counts, also the first seed's, which comes from the store.
            total += cell.tuner.size + len(self._seeds(cell))
            self._queue_tuning(cell)
            if self.plan["lr_find"]:
                total += 1
                self._queue_lr_find(cell)
        self.progress.start(total, f"{self.plan['kind']}: {len(cells)} problem × optimizer cells")
        try:
            self._loop()
        finally:
            self.progress.stop()

    # -- queueing ----------------------------------------------------------------------------
    def _seeds(self, cell: Cell) -> list[int]:
        seeds = self.plan["seeds"]
        return seeds[:1] if cell.problem.deterministic else seeds

    def _run_task(self, cell: Cell, hparams, seed: int, role: str, on_done, on_fail=None):
        config = make_run_config(
            cell.key,
            cell.spec.name,
            hparams,
            steps=cell.steps,
            seed=seed,
            engine=self.plan["engine"],
            evals=self.plan["evals"],
            fingerprint=self.plan.get("fingerprints", {}).get(cell.key),
        )
        links = [cell.links(self.sweep_id, role)]
        task = Task(config_hash(config), "run", config, links, [on_done])
        if on_fail is not None:
            task.on_fail.append(on_fail)
        self.queue.append(task)

    def _queue_tuning(self, cell: Cell) -> None:
        for token, hparams in cell.tuner.pending():
            self._run_task(
                cell,
                hparams,
                self.plan["seeds"][0],
                "tune",
                lambda record, t=token, h=hparams: self._tuned(cell, t, h, record),
                lambda reason, t=token: cell.tuner.abandon(t, reason),
            )

    def _tuned(self, cell: Cell, token, hparams, record) -> None:
        planned = cell.tuner.size
        cell.tuner.record(token, hparams, record)
        if cell.tuner.size > planned:  # the grid grew past an edge
            self.progress.add_total(cell.tuner.size - planned)
        self._advance(cell)

    def _advance(self, cell: Cell) -> None:
        """More tuning while the budget lasts; once it is spent, the reruns of the best."""
        if not cell.tuner.done():
            self._queue_tuning(cell)
        elif not cell.finals_queued:
            cell.finals_queued = True
            for _ in range(cell.tuner.done_elsewhere):  # trials other processes ran
                self.progress.advance(cached=True)
            cell.best = cell.tuner.best()
            for seed in self._seeds(cell):
                self._run_task(cell, cell.best, seed, "final", lambda record: None)

    def _queue_lr_find(self, cell: Cell) -> None:
        lo, hi = self.plan["lr_ranges"][cell.key]
        config = make_lr_find_config(
            cell.key,
            cell.spec.name,
            cell.spec.hparams,
            # A decade beyond the tuning range on each side, so its edges show on the curve.
            start_lr=lo / 10,
            end_lr=hi * 10,
            steps=min(self.plan["lr_find_steps"], max(cell.steps, 5)),
            seed=self.plan["seeds"][0],
            engine=self.plan["engine"],
            fingerprint=self.plan.get("fingerprints", {}).get(cell.key),
        )
        links = [cell.links(self.sweep_id, "lr_find")]
        self.queue.append(Task(config_hash(config), "lr_find", config, links, []))

    # -- execution ---------------------------------------------------------------------------
    def _cached(self, task: Task) -> dict[str, Any] | None:
        if task.kind == "run":
            return self.store.get_run(task.item_id)
        return self.store.get_lr_find(task.item_id)

    def _dispatch(self) -> None:
        while self.queue:
            task = self.queue.popleft()
            in_flight = self.by_id.get(task.item_id)
            if in_flight is not None:
                # The same configuration is already running (two specs that build the same
                # optimizer, or the seed-0 rerun of a tuning run): wait for that one.
                in_flight.links += task.links
                in_flight.on_done += task.on_done
                in_flight.on_fail += task.on_fail
                continue
            record = self._cached(task)
            if record is not None:
                # Finished earlier, by this command or another (a worker of a shared search).
                self.store.link(task.item_id, task.kind, task.links)
                self.progress.advance(cached=True)
                for callback in task.on_done:
                    callback(record)
                continue
            fn = execute_run if task.kind == "run" else execute_lr_find
            future = self.pool.submit(fn, task.config)
            self.inflight[future] = task
            self.by_id[task.item_id] = task

    def _waiting(self) -> list[Cell]:
        """Cells whose search waits for trials that run in other processes."""
        return [cell for cell in self.cells if not cell.finals_queued and cell.tuner.waiting()]

    def _loop(self) -> None:
        while True:
            self._dispatch()
            waiting = self._waiting()
            if not self.inflight and not waiting:
                return
            # While others run a search's last trials, look at it again every few seconds.
            timeout = min((c.tuner.poll_interval for c in waiting), default=None)
            if self.inflight:
                done, _ = wait(list(self.inflight), timeout=timeout, return_when=FIRST_COMPLETED)
            else:
                time.sleep(timeout)
                done = set()
            for future in done:
                self._finished(future)
            for cell in waiting:
                if not cell.finals_queued:
                    self._advance(cell)

    def _finished(self, future) -> None:
        task = self.inflight.pop(future)
        del self.by_id[task.item_id]
        try:
            record = future.result()
        except Exception as exc:
            cfg = task.config
            lr = cfg.get("hparams", {}).get("lr", cfg.get("start_lr"))
            what = f"{task.kind} {cfg['problem']}/{cfg['optimizer']} lr={lr} seed={cfg['seed']}"
            for callback in task.on_fail:
                callback(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, LabError):
                raise
            raise RunFailed(f"{what} failed: {type(exc).__name__}: {exc}") from exc
        if task.kind == "run":
            self.store.put_run(record, task.links)
        else:
            self.store.put_lr_find(record, task.links)
        self.progress.advance()
        for callback in task.on_done:
            callback(record)
