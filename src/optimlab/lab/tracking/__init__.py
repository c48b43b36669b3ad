"""Experiment tracking: a sweep's runs in TensorBoard, Weights & Biases and MLflow.

``optimlab compare --track tensorboard wandb mlflow`` (any subset; ``--tensorboard`` is
``--track tensorboard``) logs every run of the sweep to each backend once the sweep's runs are
stored, and ``optimlab report --track ...`` logs a stored sweep after the fact. From Python::

    compare(..., track=["wandb", "mlflow"], mlflow_uri="http://localhost:5000")
    track(Results.load("optimlab-out"), ["mlflow"])

Every backend gets the same view of a run (:mod:`optimlab.lab.tracking.runs`) through the
same small interface (:class:`~optimlab.lab.tracking.base.Tracker`); each module says how it
lays the runs out in its tool: :mod:`~optimlab.lab.tracking.tensorboard`,
:mod:`~optimlab.lab.tracking.wandb`, :mod:`~optimlab.lab.tracking.mlflow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from optimlab.lab.errors import LabError
from optimlab.lab.tracking.base import Tracker, TrackingOutcome, track_sweep
from optimlab.lab.tracking.runs import TrackedRun, tracked_runs

#: What ``--track`` accepts, in the order the backends are logged to.
BACKENDS = ("tensorboard", "wandb", "mlflow")

__all__ = [
    "BACKENDS",
    "TrackedRun",
    "Tracker",
    "TrackingOutcome",
    "make_trackers",
    "prepare_trackers",
    "track",
    "track_sweep",
    "tracked_runs",
]


def make_trackers(
    track: Sequence[str | Tracker] | str | None = (),
    *,
    tensorboard: bool = False,
    mlflow_uri: str | None = None,
) -> list[Tracker]:
    """Trackers for backend names (or ready :class:`Tracker` objects), one per backend.

    ``tensorboard=True`` adds TensorBoard (the older spelling), and ``mlflow_uri`` adds
    MLflow logging to that URI.
    """
    from optimlab.lab.tracking.mlflow import MlflowTracker
    from optimlab.lab.tracking.tensorboard import TensorBoardTracker
    from optimlab.lab.tracking.wandb import WandbTracker

    items = [track] if isinstance(track, str) else list(track or ())
    if tensorboard:
        items.append("tensorboard")
    if mlflow_uri is not None:
        items.append("mlflow")
    chosen: dict[str, Tracker] = {}
    for item in items:
        if isinstance(item, Tracker):
            chosen[item.name] = item
            continue
        name = str(item).strip().lower()
        if name not in BACKENDS:
            choices = ", ".join(BACKENDS)
            raise LabError(f"unknown tracking backend '{item}' (choose from: {choices})")
        if name in chosen:
            continue
        if name == "tensorboard":
            chosen[name] = TensorBoardTracker()
        elif name == "wandb":
            chosen[name] = WandbTracker()
        else:
            chosen[name] = MlflowTracker(mlflow_uri)
    order = {name: i for i, name in enumerate(BACKENDS)}
    return sorted(chosen.values(), key=lambda t: order.get(t.name, len(order)))


def prepare_trackers(trackers: list[Tracker], out: str | Path) -> list[Tracker]:
    """Check each tracker before any work (one :class:`LabError` line when one cannot run)."""
    for tracker in trackers:
        tracker.prepare(Path(out))
    return trackers


def track(
    results,
    backends: Sequence[str | Tracker] | str,
    *,
    mlflow_uri: str | None = None,
) -> list[TrackingOutcome]:
    """Log a stored sweep (a :class:`~optimlab.lab.results.Results`) to ``backends``."""
    trackers = prepare_trackers(make_trackers(backends, mlflow_uri=mlflow_uri), results.out_dir)
    return track_sweep(results, trackers)
