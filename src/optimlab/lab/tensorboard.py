"""TensorBoard event files for a sweep (``--tensorboard``), written from the store.

Writing from the stored runs rather than live from the workers means a resumed sweep gets
complete logs too (runs that came from the store are logged like fresh ones), and worker
processes never touch files. One directory per run::

    tensorboard/<problem>/<optimizer>/<role>-lr=<lr>-seed=<seed>/

with ``loss/train`` (every stored step), ``loss/train_smoothed``, the evaluations
(``eval/...``) and the step diagnostics of :class:`optimlab.guards.StepDiagnostics`
(``diag/group0/grad_norm``, ``update_norm``, ``update_ratio``, ``lr``, ...) at the sampled
steps. ``SummaryWriter`` comes from ``torch.utils.tensorboard``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from optimlab.lab.files import slug


def run_dir(root: Path, run: dict) -> Path:
    lr = run["config"]["hparams"].get("lr")
    name = f"{run['role']}-lr={lr:.4g}-seed={run['seed']}" if lr is not None else run["run_id"]
    return Path(root) / slug(run["problem_name"]) / slug(run["label"]) / slug(name)


def write_event_files(results, root: Path) -> Path:
    """Write one event file per run of ``results`` under ``root``; returns ``root``."""
    from torch.utils.tensorboard import SummaryWriter

    root = Path(root)
    for run in results.runs:
        directory = run_dir(root, run)
        # Rewriting a run's directory keeps one event file per run (no duplicated points when
        # the command is run again).
        if directory.exists():
            shutil.rmtree(directory)
        writer = SummaryWriter(log_dir=str(directory))
        try:
            curve = run["curve"]
            for step, loss, smooth in zip(
                curve["step"], curve["loss"], curve["smooth"], strict=True
            ):
                if math.isfinite(loss):
                    writer.add_scalar("loss/train", loss, step)
                    writer.add_scalar("loss/train_smoothed", smooth, step)
            evals = curve["evals"]
            for key, values in evals.items():
                if key in ("step", "seconds"):
                    continue
                for step, value in zip(evals["step"], values, strict=False):
                    if value is not None and math.isfinite(value):
                        writer.add_scalar(f"eval/{key}", value, step)
            for row in curve.get("diag", []):
                step = row["step"]
                for key, value in row.items():
                    if key != "step" and value is not None and math.isfinite(value):
                        writer.add_scalar(f"diag/{key}", value, step)
            hparams = {
                k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                for k, v in run["config"]["hparams"].items()
            }
            writer.add_text("config", f"```\n{run['config']}\n```", 0)
            final = run["final"]
            metrics = {
                f"final/{k}": float(v)
                for k, v in final.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            }
            writer.add_hparams(hparams, metrics, run_name=".")
        finally:
            writer.close()
    return root
