"""What every tracking backend does, and the loop that feeds it a sweep's runs.

A backend is a :class:`Tracker`. :meth:`Tracker.prepare` runs before any training, so a
missing package or an unusable destination is one :class:`~optimlab.lab.errors.LabError`
line at once rather than after an hour of runs. :func:`track_sweep` then hands each backend
every run of the finished sweep, read back from the store (so a resumed sweep is logged
completely, runs that came from the store included, and tracking never competes with timed
training steps for the cores).

A backend that fails part-way (a server that went away, a full disk) is reported once, on
one line, and skipped for the rest of the command: the sweep's results are already stored,
the other backends and the report carry on, and running the command again logs what is
missing, since a backend recognises the runs it already holds by their ``track_id``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from optimlab.lab.errors import LabError
from optimlab.lab.tracking.runs import TrackedRun, tracked_runs


class Tracker(ABC):
    """One place runs are logged to (TensorBoard event files, a W&B project, an MLflow store)."""

    #: the name ``--track`` takes
    name: ClassVar[str]
    #: how messages spell it
    title: ClassVar[str]
    #: the module it imports, and what to ``pip install`` when that is missing
    module: ClassVar[str]
    pip_name: ClassVar[str]

    def prepare(self, out: Path) -> None:
        """Check that this backend can work and settle where it writes, before any training.

        Raises :class:`LabError` (one line) when it cannot. ``out`` is the lab's output
        directory, where local logs go unless told otherwise.
        """
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a package that is half there counts as missing
            found = False
        if not found:
            raise LabError(
                f"--track {self.name} needs the {self.pip_name} package: "
                f"pip install {self.pip_name}"
            )

    def start(self, runs: list[TrackedRun]) -> None:  # noqa: B027 (optional step)
        """Open the destination and learn which of ``runs`` it already holds."""

    @abstractmethod
    def log(self, run: TrackedRun) -> bool:
        """Log one run; ``False`` when the destination already held it (nothing written)."""

    def finish(self) -> None:  # noqa: B027 (optional step)
        """Flush and close after the last run."""

    def abort(self) -> None:  # noqa: B027 (optional step)
        """Close after a failure, keeping whatever was logged (best effort)."""

    @abstractmethod
    def where(self) -> str:
        """One line: where the runs are and how to look at them."""


@dataclass
class TrackingOutcome:
    """What one backend did with a sweep."""

    title: str
    total: int
    logged: int = 0
    already: int = 0
    error: str | None = None
    where: str = ""

    def line(self) -> str:
        if self.error is not None:
            return (
                f"{self.title}: stopped after {self.logged} of {self.total} runs "
                f"({self.error}); run the command again to log the rest"
            )
        held = f", {self.already} already there" if self.already else ""
        return f"{self.title}: {self.logged} runs logged{held}; {self.where}"


def warning_line(message: str) -> None:
    """One line on stderr: something went wrong that does not stop the command."""
    sys.stderr.write(f"optimlab: warning: {message}\n")
    sys.stderr.flush()


def track_sweep(results, trackers: list[Tracker]) -> list[TrackingOutcome]:
    """Log every run of ``results`` to each of ``trackers``; a failing one is reported once."""
    if not trackers:
        return []
    runs = tracked_runs(results)
    return [_track(tracker, runs) for tracker in trackers]


def _track(tracker: Tracker, runs: list[TrackedRun]) -> TrackingOutcome:
    outcome = TrackingOutcome(tracker.title, total=len(runs))
    try:
        tracker.start(runs)
        for run in runs:
            if tracker.log(run):
                outcome.logged += 1
            else:
                outcome.already += 1
        tracker.finish()
    except Exception as exc:  # a tracking failure never fails the sweep: report and go on
        outcome.error = _one_line(exc)
        warning_line(outcome.line())
        # Closing a broken connection may fail too; there is nothing left to save then.
        with contextlib.suppress(Exception):
            tracker.abort()
    outcome.where = tracker.where()
    return outcome


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
