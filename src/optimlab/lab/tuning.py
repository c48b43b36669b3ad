"""Tuning within an equal budget: a log-spaced learning-rate grid, or an Optuna search.

Both tuners speak the same small protocol, so the scheduler in :mod:`optimlab.lab.protocol`
treats them alike:

* ``pending()`` returns hyperparameter settings to run now (``[(token, hparams)]``);
* ``record(token, record)`` feeds back a finished run;
* ``done()`` says the budget is spent; ``best()`` returns the best hyperparameters.

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
The study lives in the lab's SQLite file (``sqlite:///…/lab.db``) or any Optuna storage
URL, e.g. ``postgresql://user@host/db``: machines that run the same command against the same
URL share one study (same name), each asking for trials until the study holds ``budget`` of them. A
trial interrupted by a crash is picked up again by the next run on the same host.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any

import numpy as np

from optimlab.lab.errors import LabError
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


class OptunaTuner:
    """TPE over ``lr`` and ``params`` in a named study that may be shared between machines."""

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
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.objective = objective
        self.base, self.lr_range, self.params, self.defaults = base, lr_range, params, defaults
        self.budget, self.parallel = budget, max(1, parallel)
        self.host = socket.gethostname()
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(2, min(10, budget // 3)), constant_liar=True
        )
        from optimlab.lab.storage import optuna_engine_options

        try:
            self.study = optuna.create_study(
                study_name=study_name,
                storage=optuna.storages.RDBStorage(
                    storage, engine_kwargs=optuna_engine_options(storage)
                ),
                sampler=sampler,
                direction=objective.direction,
                load_if_exists=True,
            )
        except Exception as exc:  # bad URL, missing driver, unreachable server
            from optimlab.lab.storage import redact

            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LabError(f"cannot open the Optuna storage {redact(storage)}: {reason}") from None
        self._states = optuna.trial.TrialState
        self._inflight: dict[int, dict[str, Any]] = {}
        self._adopted: list[tuple[int, dict[str, Any]]] = []
        # Trials this host started in a process that no longer exists (killed mid-sweep):
        # run their parameters again and report them, so no trial of the budget is lost.
        for trial in self.study.get_trials(deepcopy=False, states=(self._states.RUNNING,)):
            attrs = trial.user_attrs
            if attrs.get("host") == self.host and not _pid_alive(attrs.get("pid")):
                self._adopted.append((trial.number, self._hparams(trial.params)))

    @property
    def size(self) -> int:
        return self.budget

    def _hparams(self, values: dict[str, float]) -> dict[str, Any]:
        kwargs = dict(self.base)
        if "lr" in values:
            kwargs["lr"] = values["lr"]
        for param in self.params:
            if param.name in values:
                apply_hyper(param, values[param.name], kwargs, self.defaults)
        return kwargs

    def _count(self, *states) -> int:
        return len(self.study.get_trials(deepcopy=False, states=states))

    def pending(self) -> list[tuple[Any, dict[str, Any]]]:
        out = []
        while self._adopted:
            number, hparams = self._adopted.pop()
            self._inflight[number] = hparams
            out.append((number, hparams))
        S = self._states
        while (
            len(self._inflight) < self.parallel
            and self._count(S.COMPLETE, S.FAIL, S.RUNNING, S.PRUNED) < self.budget
        ):
            trial = self.study.ask()
            trial.set_user_attr("host", self.host)
            trial.set_user_attr("pid", os.getpid())
            values = {}
            if self.lr_range is not None:
                values["lr"] = trial.suggest_float("lr", *self.lr_range, log=True)
            for param in self.params:
                values[param.name] = trial.suggest_float(
                    param.name, param.low, param.high, log=param.log
                )
            hparams = self._hparams(values)
            self._inflight[trial.number] = hparams
            out.append((trial.number, hparams))
        return out

    def record(self, token: int, hparams: dict[str, Any], record: dict[str, Any]) -> None:
        self._inflight.pop(token, None)
        self.study.tell(token, self.objective.value(record["final"]), skip_if_finished=True)

    def done(self) -> bool:
        S = self._states
        if self._inflight or self._adopted:
            return False
        return self._count(S.COMPLETE, S.FAIL, S.RUNNING, S.PRUNED) >= self.budget

    def best(self) -> dict[str, Any]:
        try:
            return self._hparams(self.study.best_trial.params)
        except ValueError:  # no completed trial (all failed elsewhere)
            raise LabError(f"study '{self.study.study_name}' has no completed trial") from None
