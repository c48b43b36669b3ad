"""Tuning within an equal budget: a log-spaced learning-rate grid, or an Optuna search.

Both tuners speak the same small protocol, so the scheduler in :mod:`optimlab.lab.protocol`
treats them alike:

* ``pending()`` returns hyperparameter settings to run now (``[(token, hparams)]``);
* ``record(token, hparams, record)`` feeds back a finished run, ``abandon(token, reason)`` one
  that raised;
* ``done()`` says the budget is spent; ``best()`` returns the best hyperparameters;
* ``waiting()`` says that nothing of this process runs but the budget is not spent (other
  processes run the last trials of a shared search): ask again in ``poll_interval`` seconds;
* ``close()`` releases what the tuner holds.

The budget is the number of trials (runs), the same for every optimizer, so an optimizer
with more knobs gets no more tries than one with fewer (DeepOBS's rule).

**Grid** (default): ``budget`` learning rates spaced evenly in log space over the problem's
``default_lr_range``. Deterministic and embarrassingly parallel. When the best learning rate
is the smallest or the largest one tried, the optimum may lie outside the range: the grid then
grows on that side by the same log step, one point at a time, until the best lies inside or
``extend`` points were added (:data:`GRID_EXTEND`). A best still at the edge is flagged in the
report. Every added point is a run like any other, stored and found again on resume, and the
decision to add it depends only on stored results, so a resumed sweep makes the same ones.

**Optuna** (``search="optuna"``): TPE over ``lr`` (log-uniform over the same range) plus,
on request, the other hyperparameters the optimizer's class declares (:func:`search_space`).
The study lives in the lab's SQLite file (``sqlite:///…/lab.db``) or in the PostgreSQL
database of ``--storage`` (:mod:`optimlab.lab.storage`): processes, on one machine or many,
that run the same command against the same storage share one study (same name), together
create exactly ``budget`` trials, and each finishes when the study has ``budget`` finished
trials. A trial whose worker died is run again (:class:`OptunaTuner`).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

import numpy as np

from optimlab.lab.errors import LabError, first_line
from optimlab.lab.limits import MAX_GRACE_PERIOD, check_int
from optimlab.lab.objective import Objective
from optimlab.optim.spec import Hyper

#: Points a grid may grow by, in all, when its best learning rate lies at an edge. Three steps
#: of the default 8-point grids reach 1.7 to 2.1 decades beyond the range.
GRID_EXTEND = 3
QUICK_GRID_EXTEND = 1


def _round_lr(value: float) -> float:
    # Six significant digits: readable in tables, and the same float on every machine.
    return float(f"{value:.6g}")


def grid_lrs(lo: float, hi: float, budget: int) -> list[float]:
    """``budget`` learning rates evenly spaced in log space over ``[lo, hi]``."""
    if budget < 1:
        raise LabError(f"budget must be at least 1, got {budget}")
    if budget == 1:
        return [float(math.sqrt(lo * hi))]
    return [_round_lr(v) for v in np.geomspace(lo, hi, budget)]


# -- search spaces ---------------------------------------------------------------------------


def apply_hyper(
    hyper: Hyper, value: float, kwargs: dict[str, Any], defaults: dict[str, Any]
) -> None:
    """Put a sampled ``value`` of ``hyper`` into the optimizer's keyword arguments: ``beta1``
    and ``one_minus_beta2`` live inside ``betas``, ``one_minus_alpha`` is ``1 − alpha``."""
    if hyper.name in ("beta1", "one_minus_beta2"):
        betas = list(kwargs.get("betas", defaults.get("betas", (0.9, 0.999))))
        if hyper.name == "beta1":
            betas[0] = value
        else:
            betas[1] = 1.0 - value
        kwargs["betas"] = tuple(betas)
    elif hyper.name == "one_minus_alpha":
        kwargs["alpha"] = 1.0 - value
    else:
        kwargs[hyper.name] = value


def search_space(optimizer: str) -> tuple[Hyper, ...]:
    """The extra hyperparameters ``search="optuna"`` can tune for ``optimizer`` (beyond
    ``lr``): what its class declares as ``search_space``."""
    from optimlab import get_optimizer_class

    return tuple(get_optimizer_class(optimizer).search_space)


def search_params(optimizer: str, which: str | list[str]) -> list[Hyper]:
    """The extra hyperparameters to tune: ``"lr"`` (none), ``"all"`` or a list of names."""
    space = search_space(optimizer)
    if which == "lr" or which == ["lr"]:
        return []
    if which == "all":
        return list(space)
    names = [n.strip() for n in (which.split(",") if isinstance(which, str) else which)]
    by_name = {p.name: p for p in space}
    chosen = []
    for name in names:
        if name in ("", "lr"):
            continue
        if name not in by_name:
            choices = ", ".join(["lr", *by_name]) or "lr"
            raise LabError(f"cannot tune '{name}' for {optimizer} (choose from: {choices}, all)")
        chosen.append(by_name[name])
    return chosen


def optimizer_defaults(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's default hyperparameters (for the half of ``betas`` not being tuned)."""
    import torch

    from optimlab.lab.optimizers import build_optimizer
    from optimlab.lab.specs import OptimizerSpec

    opt = build_optimizer(OptimizerSpec(name, name, dict(hparams)), [torch.zeros(2, 2)], lr=1e-3)
    return dict(opt.defaults)


# -- tuners ----------------------------------------------------------------------------------


def _better(objective: Objective, a: float, b: float) -> bool:
    return objective.sort_key(a) < objective.sort_key(b)


def lr_edge(lrs, best_lr: float | None) -> str | None:
    """``"low"`` or ``"high"`` when ``best_lr`` is the smallest or largest of two or more tried
    learning rates, else ``None``."""
    tried = sorted({float(lr) for lr in lrs if lr is not None and math.isfinite(lr)})
    if best_lr is None or len(tried) < 2:
        return None
    if best_lr <= tried[0]:
        return "low"
    if best_lr >= tried[-1]:
        return "high"
    return None


class GridTuner:
    """Every point of a learning-rate grid, all at once; then, while the best learning rate is
    at an edge, one more point beyond it (at most ``extend`` in all)."""

    def __init__(
        self, lrs: list[float], base: dict[str, Any], objective: Objective, extend: int = 0
    ) -> None:
        if extend < 0:
            raise LabError(f"grid extension must be at least 0, got {extend}")
        self.objective = objective
        self.base = dict(base)
        self._todo = [{**base, "lr": lr} for lr in lrs]
        self._expected = len(self._todo)
        self._results: list[tuple[dict[str, Any], tuple[float, float]]] = []
        lrs = sorted(lrs)
        self._lo, self._hi = (lrs[0], lrs[-1]) if lrs else (None, None)
        # The grid's own log step, from its ends (robust to the rounding of its points).
        self._ratio = (lrs[-1] / lrs[0]) ** (1 / (len(lrs) - 1)) if len(lrs) > 1 else None
        self._extend_left = extend if self._ratio is not None else 0
        self._added = {"low": 0, "high": 0}

    @property
    def size(self) -> int:
        return self._expected

    @property
    def added(self) -> dict[str, int]:
        """How many points the grid grew by on each side."""
        return dict(self._added)

    def pending(self) -> list[tuple[Any, dict[str, Any]]]:
        todo, self._todo = self._todo, []
        return [(None, hp) for hp in todo]

    def record(self, token: Any, hparams: dict[str, Any], record: dict[str, Any]) -> None:
        final = record["final"]
        self._results.append(
            (hparams, (self.objective.value(final), self.objective.tiebreak(final)))
        )
        if len(self._results) >= self._expected:
            self._maybe_extend()

    def _maybe_extend(self) -> None:
        if self._extend_left <= 0:
            return
        edge = lr_edge([hp["lr"] for hp, _ in self._results], self.best()["lr"])
        if edge is None:
            return
        self._added[edge] += 1
        k = self._added[edge]
        lr = self._lo / self._ratio**k if edge == "low" else self._hi * self._ratio**k
        self._todo.append({**self.base, "lr": _round_lr(lr)})
        self._expected += 1
        self._extend_left -= 1

    def done(self) -> bool:
        return len(self._results) >= self._expected

    #: Every point of a grid runs in this process.
    done_elsewhere = 0
    poll_interval = None

    def waiting(self) -> bool:
        return False

    def abandon(self, token: Any, reason: str) -> None:
        """A grid point whose run raised stops the sweep; nothing to undo."""

    def close(self) -> None:
        """A grid holds nothing."""

    def best(self) -> dict[str, Any]:
        # Ties on the objective go to the lower loss, then to the smaller learning rate (the
        # more conservative choice).
        ranked = sorted(
            self._results,
            key=lambda r: (self.objective.sort_key(r[1][0]), r[1][1], r[0].get("lr", 0.0)),
        )
        return ranked[0][0]


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: A worker whose trials send no heartbeat for this many seconds is taken for dead: its trials
#: are failed and run again by the next worker that asks for one. Heartbeats go out every
#: quarter of it, from a thread, whatever the run is doing.
GRACE_PERIOD = 120
#: How many times a trial is run again after its worker died, before the search leaves it
#: failed and samples another point (a setting that kills every worker must not kill them all).
MAX_RETRY = 3
#: Longest wait, in seconds, between two looks at a study whose last trials run elsewhere.
POLL_INTERVAL = 2.0


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna marks its heartbeat experimental and meant for ``study.optimize``; the lab drives
    it with ask and tell and a heartbeat thread of its own, so those warnings tell a user
    nothing."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        yield


def _retry_callback() -> dict[str, Any]:
    """The RDB storage's keyword and callback that re-queue a trial whose worker died (named
    ``heartbeat_stale_trial_callback`` since Optuna 4.9, ``failed_trial_callback`` before)."""
    from optuna import storages

    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry is not None:
        return {"heartbeat_stale_trial_callback": retry(max_retry=MAX_RETRY)}
    return {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)}


def _trial_id(trial: Any) -> int:
    # A storage addresses trials by id, which Trial and FrozenTrial keep as `_trial_id` (the
    # attribute Optuna's own heartbeat thread uses).
    return trial._trial_id


class OptunaTuner:
    """TPE over ``lr`` and ``params`` in a named study that may be shared between processes
    and machines.

    Every process that runs the same command against the same storage joins the same study
    and asks it for trials while the study holds fewer than ``budget`` of them (finished,
    running or queued; ``lock`` makes the asking of all workers one at a time, so that
    together they create exactly ``budget``). A process is done when the study has
    ``budget`` finished trials, whoever ran them: until then it waits for the others' last
    trials, so that every worker ends with the same best setting.

    A worker may die at any time. Each worker sends a heartbeat for its running trials every
    ``grace_period / 4`` seconds; a trial whose heartbeat is older than ``grace_period`` is
    failed by the next worker that looks and queued again with the same parameters (at most
    :data:`MAX_RETRY` times), and the next worker to ask runs it. A command restarted on the
    same host takes its dead predecessor's trials back at once. A failed trial does not count
    towards the budget; its re-run does.
    """

    def __init__(
        self,
        *,
        study_name: str,
        storage: str,
        objective: Objective,
        base: dict[str, Any],
        lr_range: tuple[float, float] | None,
        params: list[Hyper],
        defaults: dict[str, Any],
        budget: int,
        parallel: int,
        seed: int,
        grace_period: int = GRACE_PERIOD,
        lock: Callable[[str], AbstractContextManager] | None = None,
    ) -> None:
        import optuna

        from optimlab.lab.storage import optuna_engine_options, redact

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.objective = objective
        self.base, self.lr_range, self.params, self.defaults = base, lr_range, params, defaults
        self.budget, self.parallel = budget, max(1, parallel)
        self.host = socket.gethostname()
        self.grace_period = check_int("grace period", grace_period, 1, MAX_GRACE_PERIOD)
        self.heartbeat = max(1, self.grace_period // 4)
        self.poll_interval = min(POLL_INTERVAL, float(self.heartbeat))
        self.display = redact(storage)
        self._name = study_name
        self._lock = lock or (lambda name: nullcontext())
        self._states = optuna.trial.TrialState
        with _quiet():
            retry = _retry_callback()
        self._requeue = next(iter(retry.values()))
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(2, min(10, budget // 3)), constant_liar=True
        )
        try:
            # Workers that start together on an empty database would race to create Optuna's
            # tables; the lock makes one of them do it.
            with self._lock("optuna storage"), _quiet():
                self._rdb = optuna.storages.RDBStorage(
                    storage,
                    engine_kwargs=optuna_engine_options(storage),
                    heartbeat_interval=self.heartbeat,
                    grace_period=self.grace_period,
                    **retry,
                )
                self.study = optuna.create_study(
                    study_name=study_name,
                    storage=self._rdb,
                    sampler=sampler,
                    direction=objective.direction,
                    load_if_exists=True,
                )
        except LabError:
            raise
        except Exception as exc:  # bad URL, missing driver, unreachable server
            raise LabError(
                f"cannot open the Optuna storage {self.display}: {first_line(exc)}"
            ) from None
        self._inflight: dict[int, Any] = {}  # trial number -> optuna.Trial
        self._guard = threading.Lock()  # _inflight, shared with the heartbeat thread
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None
        self._adopted = False
        self._suspects: dict[int, float] = {}  # trial number -> when first seen without owner
        self._told = 0

    @property
    def size(self) -> int:
        return self.budget

    @property
    def done_elsewhere(self) -> int:
        """Finished trials of the budget that other processes ran (known once done)."""
        return max(0, self.budget - self._told)

    def _hparams(self, values: dict[str, float]) -> dict[str, Any]:
        kwargs = dict(self.base)
        if "lr" in values:
            kwargs["lr"] = values["lr"]
        for param in self.params:
            if param.name in values:
                apply_hyper(param, values[param.name], kwargs, self.defaults)
        return kwargs

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """A storage that fails mid-search (a server gone, a network down) is one line."""
        try:
            yield
        except LabError:
            raise
        except Exception as exc:
            from optuna.exceptions import StorageInternalError
            from sqlalchemy.exc import SQLAlchemyError

            if not isinstance(exc, (StorageInternalError, SQLAlchemyError)):
                raise
            raise LabError(
                f"lost the Optuna storage {self.display} ({first_line(exc)}); finished runs "
                "are kept: run the same command again to resume"
            ) from None

    def _tally(self, trials=None) -> dict[Any, int]:
        if trials is None:
            trials = self.study.get_trials(deepcopy=False)
        counts = dict.fromkeys(self._states, 0)
        for trial in trials:
            counts[trial.state] += 1
        return counts

    # -- the tuner protocol ------------------------------------------------------------------
    def pending(self) -> list[tuple[Any, dict[str, Any]]]:
        import optuna

        S = self._states
        out = []
        with self._storage_errors(), self._lock(self._name), _quiet():
            optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            self._fail_orphans(trials)
            if not self._adopted:
                self._adopted = True
                out += self._adopt(trials)
            while len(self._inflight) < self.parallel:
                counts = self._tally()
                slots = sum(counts[s] for s in (S.COMPLETE, S.PRUNED, S.RUNNING, S.WAITING))
                if not counts[S.WAITING] and slots >= self.budget:
                    break
                trial = self.study.ask()  # a queued re-run first, else a new trial
                self._begin(trial)
                out.append((trial.number, self._suggest(trial)))
        return out

    def _suggest(self, trial) -> dict[str, Any]:
        """The trial's hyperparameters: those it has (a re-run keeps its parameters), the
        others drawn now."""
        values = {}
        if self.lr_range is not None:
            values["lr"] = trial.suggest_float("lr", *self.lr_range, log=True)
        for param in self.params:
            values[param.name] = trial.suggest_float(
                param.name, param.low, param.high, log=param.log
            )
        return self._hparams(values)

    def record(self, token: int, hparams: dict[str, Any], record: dict[str, Any]) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        with self._guard:
            trial = self._inflight.pop(token)
        with self._storage_errors(), _quiet():
            # The run behind the trial, for anyone who reads the study (a trial another
            # worker already failed as stale keeps its state: its re-run has the same run).
            if "run_id" in record:
                with suppress(UpdateFinishedTrialError):
                    trial.set_user_attr("run_id", record["run_id"])
            self.study.tell(trial, self.objective.value(record["final"]), skip_if_finished=True)
        self._told += 1

    def abandon(self, token: int, reason: str) -> None:
        """Fail a trial whose run raised (a bug, not a dead worker: it is not run again)."""
        from optuna.exceptions import UpdateFinishedTrialError

        with self._guard:
            trial = self._inflight.pop(token, None)
        if trial is None:
            return
        with self._storage_errors(), _quiet(), suppress(UpdateFinishedTrialError):
            trial.set_user_attr("error", reason[:500])
            self.study.tell(trial, state=self._states.FAIL, skip_if_finished=True)

    def done(self) -> bool:
        if self._inflight:
            return False
        S = self._states
        with self._storage_errors():
            counts = self._tally()
        return counts[S.COMPLETE] + counts[S.PRUNED] >= self.budget

    def waiting(self) -> bool:
        """Nothing of this process runs, but the study is not finished: other workers' trials
        run (or died and will be queued again); look again in :attr:`poll_interval` seconds."""
        return not self._inflight and not self.done()

    def best(self) -> dict[str, Any]:
        try:
            with self._storage_errors():
                return self._hparams(self.study.best_trial.params)
        except ValueError:  # no completed trial (all failed elsewhere)
            raise LabError(f"study '{self.study.study_name}' has no completed trial") from None

    def close(self) -> None:
        """Stop the heartbeats and close the storage's connections."""
        self._stop.set()
        if self._beats is not None:
            self._beats.join()
        self._rdb.engine.dispose()

    # -- workers that die --------------------------------------------------------------------
    def _begin(self, trial) -> None:
        """Own a running trial: its first heartbeat at once (a trial without one is never
        found stale), then whose it is, then heartbeats every :attr:`heartbeat` seconds."""
        self._rdb.record_heartbeat(_trial_id(trial))
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", os.getpid())
        with self._guard:
            self._inflight[trial.number] = trial
        if self._beats is None:
            self._beats = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
            self._beats.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._guard:
                ids = [_trial_id(trial) for trial in self._inflight.values()]
            for trial_id in ids:
                # A missed beat costs nothing: the grace period spans four of them, and a
                # storage that stays away stops the main thread with its own message.
                with suppress(Exception):
                    self._rdb.record_heartbeat(trial_id)

    def _adopt(self, trials) -> list[tuple[Any, dict[str, Any]]]:
        """Trials this host started in a process that no longer exists (killed mid-sweep):
        run their parameters again under their own numbers, without waiting for the grace
        period."""
        import optuna

        out = []
        for frozen in trials:
            attrs = frozen.user_attrs
            if (
                frozen.state == self._states.RUNNING
                and attrs.get("host") == self.host
                and not _pid_alive(attrs.get("pid"))
            ):
                trial = optuna.trial.Trial(self.study, _trial_id(frozen))
                self._begin(trial)
                out.append((frozen.number, self._suggest(trial)))
        return out

    def _fail_orphans(self, trials) -> None:
        """Fail and queue again a running trial that never got an owner (its worker died
        between creating it and its first heartbeat), once this process has seen it ownerless
        for a whole grace period (its own clock: machines' clocks may differ)."""
        from optuna.exceptions import UpdateFinishedTrialError

        clock = time.monotonic()
        ownerless = {
            t.number: t
            for t in trials
            if t.state == self._states.RUNNING
            and "pid" not in t.user_attrs
            and t.number not in self._inflight
        }
        self._suspects = {n: self._suspects.get(n, clock) for n in ownerless}
        for number, seen in self._suspects.items():
            if clock - seen <= self.grace_period:
                continue
            frozen = ownerless[number]
            with suppress(UpdateFinishedTrialError):
                if self._rdb.set_trial_state_values(_trial_id(frozen), state=self._states.FAIL):
                    self._requeue(self.study, frozen)
