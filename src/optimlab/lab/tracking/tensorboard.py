"""TensorBoard event files for a sweep (``--track tensorboard``, or ``--tensorboard``).

One directory per run and role::

    OUT/tensorboard/<problem>/<optimizer>/<role>-lr=<lr>-seed=<seed>/

with the series of :mod:`optimlab.lab.tracking.runs` as scalars (``loss/train``,
``eval/...``, ``time/train_seconds``, ``diag/group0/grad_norm``, ...), the run's
configuration as text, and its hyperparameters with its final numbers in the HParams
dashboard. A run's directory is rewritten whole each time, so logging a sweep again leaves one
event file per run (no doubled points). ``SummaryWriter`` comes from
``torch.utils.tensorboard``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from optimlab.lab.files import slug
from optimlab.lab.tracking.base import Tracker
from optimlab.lab.tracking.runs import TrackedRun


def run_dir(root: Path, run: TrackedRun) -> Path:
    return Path(root) / slug(run.problem) / slug(run.optimizer) / slug(run.name)


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    title = "TensorBoard"
    module = "tensorboard"
    pip_name = "tensorboard"

    def __init__(self) -> None:
        self.root: Path | None = None

    def prepare(self, out: Path) -> None:
        super().prepare(out)
        self.root = Path(out) / "tensorboard"

    def log(self, run: TrackedRun) -> bool:
        from torch.utils.tensorboard import SummaryWriter

        directory = run_dir(self.root, run)
        if directory.exists():
            shutil.rmtree(directory)
        writer = SummaryWriter(log_dir=str(directory))
        try:
            for key, points in run.series.items():
                for step, value in points:
                    writer.add_scalar(key, value, step)
            config = json.dumps(run.config, indent=2, sort_keys=True, default=str)
            writer.add_text("config", f"```\n{config}\n```", 0)
            hparams = {
                k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                for k, v in run.config.items()
            }
            writer.add_hparams(hparams, run.final, run_name=".")
        finally:
            writer.close()
        return True

    def where(self) -> str:
        return f"tensorboard --logdir {self.root.resolve()}"
