"""MLflow runs for a sweep (``--track mlflow``), in a local store unless told otherwise.

Layout: **one experiment per problem** (``optimlab/<problem>``) holding **one flat run per
lab run and role**, named ``<optimizer>/<role>-lr=<lr>-seed=<seed>``. Per problem, because
MLflow's runs table and charts compare the runs of an experiment side by side, and that is
only meaningful when they share a loss and a metric (a sort by ``final/val_loss`` then reads
as a ranking); a later sweep on the same problem lands beside the earlier one, told apart by
its ``sweep_id`` parameter and ``optimlab.sweep`` tag. Flat rather than nested under a parent
per sweep or per optimizer, because MLflow hides child runs behind a collapsed parent row,
charts included, while its "group by" on a parameter (``optimizer``, ``role``, ``lr``) gives
any grouping on the fly, with the seeds of a setting drawn as a mean and a band.

Each run has its configuration as parameters (``lr`` and the other hyperparameters, problem,
optimizer, seed, steps, role, sweep, ...), every series as a metric with its training step
(``loss/train``, ``eval/val_loss``, ``diag/group0/grad_norm``, ...), the final numbers as
``final/...`` at the last step, the start and end times of the lab run itself, and the tags
``optimlab.track_id`` (its identity), ``optimlab.sweep_id`` and ``optimlab.lab_run_id``.

Where: ``--mlflow-uri`` (any tracking URI: ``http://host:5000``, ``sqlite:///path.db``,
``databricks``, ...), else ``MLFLOW_TRACKING_URI``, else ``sqlite:///OUT/mlflow.db``. A local
SQLite file rather than a ``./mlruns`` directory because MLflow 3 keeps the directory store in
maintenance mode and refuses to open one unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set;
SQLite is the local store it recommends. ``mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db``
shows it (the UI needs the full ``mlflow`` package; ``mlflow-skinny`` logs and reads).

Before logging, the runs of the sweep already in the store are looked up by their tag: a
finished one is kept as it is, an unfinished one (a killed or failed command) is deleted and
logged again, so a sweep is never there twice, whatever the URI.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from optimlab.lab.errors import LabError
from optimlab.lab.tracking.base import Tracker
from optimlab.lab.tracking.runs import TrackedRun

EXPERIMENT_PREFIX = "optimlab/"
DB_NAME = "mlflow.db"
#: MLflow's limits per ``log_batch`` call.
MAX_PARAMS, MAX_METRICS = 100, 1000
#: Parameter values longer than this are cut (old MLflow servers refuse more).
MAX_PARAM_LENGTH = 500


def experiment_name(problem: str) -> str:
    return f"{EXPERIMENT_PREFIX}{problem}"


@contextmanager
def _quiet():
    """Silence MLflow's and Alembic's chatter (database set-up notes) while the lab logs."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for module in ("mlflow", "sqlalchemy", "alembic"):
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
                warnings.filterwarnings("ignore", category=FutureWarning, module=module)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowTracker(Tracker):
    name = "mlflow"
    title = "MLflow"
    module = "mlflow"
    pip_name = "mlflow"

    def __init__(self, uri: str | None = None) -> None:
        self._uri = uri
        self.uri = ""
        self.client: Any = None
        self.experiments: dict[str, str] = {}
        self.existing: dict[str, tuple[str, str]] = {}
        self._open: str | None = None

    def prepare(self, out: Path) -> None:
        super().prepare(out)
        self.out = Path(out)
        given = self._uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.local = not given
        self.uri = given or f"sqlite:///{(self.out / DB_NAME).resolve()}"
        if given:
            # A URI from the user is checked now, not after the sweep. (MLflow only resolves
            # the store here; a server is not contacted until the first request.)
            self.client = self._connect()

    def _connect(self):
        from mlflow import MlflowClient

        with _quiet():
            try:
                return MlflowClient(tracking_uri=self.uri)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise LabError(
                    f"cannot use the MLflow tracking URI '{self.uri}': {first}"
                ) from None

    def start(self, runs: list[TrackedRun]) -> None:
        from mlflow.entities import ViewType

        if self.client is None:
            self.client = self._connect()
        with _quiet():
            for problem in dict.fromkeys(run.problem for run in runs):
                self.experiments[problem] = self._experiment(problem)
            for sweep_id in {run.sweep_id for run in runs}:
                token = None
                while True:
                    page = self.client.search_runs(
                        list(self.experiments.values()),
                        filter_string=f"tags.`optimlab.sweep_id` = '{sweep_id}'",
                        run_view_type=ViewType.ACTIVE_ONLY,
                        max_results=1000,
                        page_token=token,
                    )
                    for found in page:
                        key = found.data.tags.get("optimlab.track_id")
                        self.existing[key] = (found.info.run_id, found.info.status)
                    token = page.token
                    if not token:
                        break

    def _experiment(self, problem: str) -> str:
        from mlflow.exceptions import MlflowException

        name = experiment_name(problem)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            # The local store keeps artifacts (none today) beside the database, not in the
            # working directory, one folder per experiment as MLflow lays them out.
            folder = self.out / "mlartifacts" / quote(problem, safe="")
            location = folder.resolve().as_uri() if self.local else None
            try:
                return self.client.create_experiment(
                    name, artifact_location=location, tags={"optimlab.problem": problem}
                )
            except MlflowException:
                experiment = self.client.get_experiment_by_name(name)  # made at the same time
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise LabError(
                f"the MLflow experiment '{name}' is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                "or remove it for good (mlflow gc)"
            )
        return experiment.experiment_id

    def log(self, run: TrackedRun) -> bool:
        from mlflow.entities import Metric, Param

        found = self.existing.get(run.track_id)
        if found is not None and found[1] == "FINISHED":
            return False
        with _quiet():
            if found is not None:
                self.client.delete_run(found[0])  # left unfinished by a killed command
            created = self.client.create_run(
                self.experiments[run.problem],
                start_time=_ms(run.started_at),
                tags={
                    "optimlab.track_id": run.track_id,
                    "optimlab.sweep_id": run.sweep_id,
                    "optimlab.sweep": run.sweep_label,
                    "optimlab.lab_run_id": run.lab_run_id,
                    "mlflow.source.name": f"optimlab {run.kind}",
                },
                run_name=f"{run.optimizer}/{run.name}",
            )
            run_id = self._open = created.info.run_id
            params = [Param(key, _param(value)) for key, value in run.config.items()]
            for chunk in _chunks(params, MAX_PARAMS):
                self.client.log_batch(run_id, params=chunk)
            stamp = _ms(run.finished_at)
            metrics = [
                Metric(key, value, stamp, step)
                for key, points in run.series.items()
                for step, value in points
            ]
            last = run.last_step
            metrics += [Metric(key, value, stamp, last) for key, value in run.final.items()]
            for chunk in _chunks(metrics, MAX_METRICS):
                self.client.log_batch(run_id, metrics=chunk)
            self.client.set_terminated(run_id, "FINISHED", end_time=stamp)
            self._open = None
        self.existing[run.track_id] = (run_id, "FINISHED")
        return True

    def abort(self) -> None:
        if self._open is not None:
            run_id, self._open = self._open, None
            with _quiet():
                self.client.set_terminated(run_id, "FAILED")

    def where(self) -> str:
        names = ", ".join(experiment_name(p) for p in self.experiments) or "none"
        served = self.uri.split(":", 1)[0] in ("http", "https", "databricks")
        look = f"open {self.uri}" if served else f"mlflow ui --backend-store-uri {self.uri}"
        return f"experiments {names} in {self.uri}; look with: {look}"
