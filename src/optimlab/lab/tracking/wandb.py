"""Weights & Biases runs for a sweep (``--track wandb``), offline unless asked otherwise.

Each run of the sweep in each role becomes one W&B run:

* ``id``: the run's ``track_id`` (a hash of sweep, role, optimizer and lab run), so the
  same run logged again, or synced twice, is the same W&B run;
* ``group``: ``<problem>/<optimizer>/<role>/<kind>-<sweep>``. W&B draws a group as one line
  with a band over its runs, so the final runs of a cell read as the mean over seeds with
  their spread, one line per optimizer, which is the comparison a sweep is for; the tuning
  runs of a cell form their own group (ungroup it, or group by ``lr``, to see the grid);
* ``job_type``: the role (``tune`` or ``final``), to filter one set of runs;
* ``tags``: problem, optimizer, role and sweep; ``config``: see
  :mod:`optimlab.lab.tracking.runs` (``lr`` and the other hyperparameters at the top level);
* history: every series at its training step; summary: the final numbers (``final/...``).

Where and how: the mode is ``WANDB_MODE`` when set, else ``offline``, so nothing needs an
account or a network; the files go to ``WANDB_DIR`` when set, else the lab's output directory
(``OUT/wandb/offline-run-*``), and ``wandb sync OUT/wandb/offline-run-*`` uploads them later.
The project is ``WANDB_PROJECT`` or ``optimlab``, the entity ``WANDB_ENTITY`` or the account's
default. No system metrics, code or git state are collected: the runs are logged after they
ran, so those would describe the logging, not the training (the config carries the host and
versions that produced the numbers).

What is already logged is kept in ``OUT/wandb/optimlab-logged.json`` (per mode and project),
written after each run's ``finish``. A run that a killed command left half-written has its
local directory replaced; online, the run resumes under the same id and W&B keeps one value
per step.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError
from optimlab.lab.files import atomic_write_json
from optimlab.lab.identity import now
from optimlab.lab.tracking.base import Tracker
from optimlab.lab.tracking.runs import TrackedRun

DEFAULT_PROJECT = "optimlab"
DEFAULT_MODE = "offline"
#: WANDB_MODE values wandb accepts (``dryrun`` and ``run`` are its old names).
MODES = ("offline", "online", "disabled", "shared", "dryrun", "run")
LEDGER = "optimlab-logged.json"
#: Settings for runs logged after the fact: no system monitor, machine facts, code or git.
_SETTINGS = {
    "silent": True,
    "console": "off",
    "save_code": False,
    "disable_code": True,
    "disable_git": True,
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
}


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode: the one given, else ``WANDB_MODE``, else offline."""
    mode = mode or os.environ.get("WANDB_MODE") or DEFAULT_MODE
    if mode not in MODES:
        raise LabError(f"unknown W&B mode '{mode}' (WANDB_MODE; choose from: {', '.join(MODES)})")
    return mode


class WandbTracker(Tracker):
    name = "wandb"
    title = "W&B"
    module = "wandb"
    pip_name = "wandb"

    def __init__(self, project: str | None = None, mode: str | None = None, directory=None):
        self._project, self._mode, self._directory = project, mode, directory
        self.root: Path | None = None
        self.logged: dict[str, dict[str, str]] = {}
        self._settings: Any = None
        self._run: Any = None

    def prepare(self, out: Path) -> None:
        super().prepare(out)
        self.mode = resolve_mode(self._mode)
        self.project = self._project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity = os.environ.get("WANDB_ENTITY") or None
        base = Path(self._directory or os.environ.get("WANDB_DIR") or out)
        self.base = base
        self.root = base / "wandb"

    @property
    def offline(self) -> bool:
        return self.mode in ("offline", "dryrun")

    @property
    def target(self) -> str:
        """The ledger's key for where runs go: the mode and the project."""
        where = f"{self.entity}/{self.project}" if self.entity else self.project
        mode = {"dryrun": "offline", "run": "online"}.get(self.mode, self.mode)
        return f"{mode}:{where}"

    def start(self, runs: list[TrackedRun]) -> None:
        import wandb

        self.root.mkdir(parents=True, exist_ok=True)
        known = set(wandb.Settings.model_fields)
        self._settings = wandb.Settings(**{k: v for k, v in _SETTINGS.items() if k in known})
        ledger = self.root / LEDGER
        if ledger.exists():
            self.logged = json.loads(ledger.read_text(encoding="utf-8"))

    def log(self, run: TrackedRun) -> bool:
        import wandb

        done = self.logged.setdefault(self.target, {})
        if run.track_id in done:
            return False
        self._remove_partial(run.track_id)
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            dir=str(self.base),
            mode=self.mode,
            id=run.track_id,
            name=f"{run.problem}/{run.optimizer}/{run.name}",
            group=f"{run.problem}/{run.optimizer}/{run.role}/{run.sweep_label}",
            job_type=run.role,
            tags=run.tags,
            config=run.config,
            reinit="create_new",
            resume=None if self.offline else "allow",
            settings=self._settings,
        )
        try:
            for step, row in run.rows():
                self._run.log(row, step=step)
            self._run.summary.update(run.final)
        except BaseException:
            # Interrupted or failed: close the run now (marked failed, and not in the ledger,
            # so the next command replaces it) rather than leave it open in this process.
            self.abort()
            raise
        self._run.finish()
        self._run = None
        done[run.track_id] = now()
        atomic_write_json(self.root / LEDGER, self.logged)
        return True

    def _remove_partial(self, track_id: str) -> None:
        # A directory for this id that the ledger lists for no project was left by a command
        # killed while logging it: the lab made it (the id is the lab's), so it may replace it.
        if any(track_id in done for done in self.logged.values()):
            return
        for path in self.root.glob(f"*-{track_id}"):
            if path.is_dir() and path.name.startswith(("offline-run-", "run-")):
                shutil.rmtree(path)

    def abort(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.finish(exit_code=1)

    def where(self) -> str:
        if self.offline:
            root = self.root.resolve()
            return f"offline in {root}; upload with: wandb sync {root}/offline-run-*"
        return f"project {self.entity + '/' if self.entity else ''}{self.project} ({self.mode})"
