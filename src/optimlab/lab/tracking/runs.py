"""One lab run as every tracking backend sees it: identity, configuration, curves, results.

The backends (TensorBoard, Weights & Biases, MLflow) log the same things under the same
names, built here once from a stored run of a sweep:

* **identity**: ``track_id``, a hash of (sweep, role, optimizer label, lab run id). It names
  the W&B run and tags the MLflow run, so logging the same sweep again (a resumed or
  repeated command) finds what is already there instead of adding a copy. A run that serves
  two roles (the first seed's final run *is* the best tuning trial) is tracked once per role,
  as TensorBoard always did, so each role's set of runs is complete on its own;
* **config**: the optimizer's hyperparameters (``lr``, ``betas``, ...) at the top level,
  then the problem, optimizer, seed, steps (the training budget), engine, role, the sweep's
  id, kind, search and tuning budget, and the versions and host that produced the numbers;
* **series**: ``loss/train`` and ``loss/train_smoothed`` at every stored step, the
  evaluations as ``eval/<metric>`` with the training seconds spent up to them as
  ``time/train_seconds``, and the step diagnostics of
  :class:`optimlab.guards.StepDiagnostics` (gradient and update norms, learning rate, the
  optimizer's own ``step_info``) as ``diag/<name>`` at the sampled steps;
* **final**: the run's final numbers as ``final/<name>`` (``final/train_loss``,
  ``final/val_loss``, ``final/sec_per_step`` (the median time of a step), ``final/diverged``
  as 0 or 1, ...), and ``final/wall_time``.

Non-finite values are left out of the series and of the final numbers (a diverged run says
so in ``final/diverged``), since not every backend can store them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

#: Config keys the lab sets itself; a hyperparameter of the same name goes under ``hparams.``.
_LAB_KEYS = (
    "problem",
    "problem_spec",
    "optimizer",
    "optimizer_name",
    "seed",
    "steps",
    "engine",
    "evals",
    "protocol",
    "role",
    "sweep_id",
    "sweep_kind",
    "search",
    "tuning_budget",
    "lab_run_id",
    "n_params",
    "target",
    "host",
    "python",
    "torch",
    "optimlab",
)


@dataclass(frozen=True)
class TrackedRun:
    """A stored run of a sweep in one role, ready for any backend."""

    track_id: str
    sweep_id: str
    kind: str
    problem: str
    optimizer: str
    role: str
    lab_run_id: str
    seed: int
    lr: float | None
    config: dict[str, Any]
    series: dict[str, list[tuple[int, float]]]
    final: dict[str, float]
    started_at: str
    finished_at: str

    @property
    def name(self) -> str:
        """``<role>-lr=<lr>-seed=<seed>``, the leaf of TensorBoard's directory layout."""
        if self.lr is None:
            return f"{self.role}-{self.lab_run_id[:12]}"
        return f"{self.role}-lr={self.lr:.4g}-seed={self.seed}"

    @property
    def sweep_label(self) -> str:
        """``compare-3fa9c2d1``: the command and the start of the sweep id."""
        return f"{self.kind}-{self.sweep_id[:8]}"

    @property
    def tags(self) -> list[str]:
        return [self.problem, self.optimizer, self.role, self.sweep_label]

    @property
    def last_step(self) -> int:
        return max((points[-1][0] for points in self.series.values() if points), default=0)

    def rows(self) -> list[tuple[int, dict[str, float]]]:
        """The series merged by step, in step order (one row per step, as W&B logs them)."""
        by_step: dict[int, dict[str, float]] = {}
        for key, points in self.series.items():
            for step, value in points:
                by_step.setdefault(step, {})[key] = value
        return sorted(by_step.items())


def track_id(sweep_id: str, role: str, optimizer: str, lab_run_id: str) -> str:
    """A stable id for a run of a sweep in one role (20 hex digits, valid for W&B and MLflow)."""
    canonical = json.dumps([sweep_id, role, optimizer, lab_run_id], separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def tracked_runs(results) -> list[TrackedRun]:
    """Every run of a :class:`~optimlab.lab.results.Results` in each of its roles."""
    return [_tracked(run, results.sweep_id, results.kind, results.plan) for run in results.runs]


def _tracked(run: dict[str, Any], sweep_id: str, kind: str, plan: dict[str, Any]) -> TrackedRun:
    config = run["config"]
    lr = config["hparams"].get("lr")
    return TrackedRun(
        track_id=track_id(sweep_id, run["role"], run["label"], run["run_id"]),
        sweep_id=sweep_id,
        kind=kind,
        problem=run["problem_name"],
        optimizer=run["label"],
        role=run["role"],
        lab_run_id=run["run_id"],
        seed=int(run["seed"]),
        lr=float(lr) if isinstance(lr, (int, float)) else None,
        config=_config(run, sweep_id, kind, plan),
        series=_series(run["curve"]),
        final=_final(run),
        started_at=run["started_at"],
        finished_at=run["finished_at"],
    )


def _config(run: dict[str, Any], sweep_id: str, kind: str, plan: dict[str, Any]) -> dict:
    config = run["config"]
    versions = run.get("versions") or {}
    lab: dict[str, Any] = {
        "problem": run["problem_name"],
        "problem_spec": config["problem"],
        "optimizer": run["label"],
        "optimizer_name": config["optimizer"],
        "seed": run["seed"],
        "steps": config["steps"],
        "engine": config.get("engine"),
        "evals": config.get("evals"),
        "protocol": config.get("protocol"),
        "role": run["role"],
        "sweep_id": sweep_id,
        "sweep_kind": kind,
        "search": plan.get("search"),
        "tuning_budget": plan.get("budget"),
        "lab_run_id": run["run_id"],
        "n_params": run["final"].get("n_params"),
        "target": run["final"].get("target"),
        "host": run.get("host"),
        "python": versions.get("python"),
        "torch": versions.get("torch"),
        "optimlab": versions.get("optimlab"),
    }
    # Anything else a run's configuration carries (a problem's fingerprint, say) goes too.
    for key, value in config.items():
        if key not in ("problem", "optimizer", "hparams") and key not in lab:
            lab[key] = value
    out = {(k if k not in _LAB_KEYS else f"hparams.{k}"): v for k, v in config["hparams"].items()}
    out.update({k: v for k, v in lab.items() if v is not None})
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _points(steps, values) -> list[tuple[int, float]]:
    return [(int(s), float(v)) for s, v in zip(steps, values, strict=False) if _finite(v)]


def _series(curve: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    series = {
        "loss/train": _points(curve["step"], curve["loss"]),
        "loss/train_smoothed": _points(curve["step"], curve["smooth"]),
    }
    evals = curve.get("evals", {})
    for key, values in evals.items():
        if key == "step":
            continue
        name = "time/train_seconds" if key == "seconds" else f"eval/{key}"
        series[name] = _points(evals["step"], values)
    for row in curve.get("diag", []):
        for key, value in row.items():
            if key != "step" and _finite(value):
                series.setdefault(f"diag/{key}", []).append((int(row["step"]), float(value)))
    return {key: points for key, points in series.items() if points}


def _final(run: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in run["final"].items():
        if isinstance(value, bool) or _finite(value):  # diverged: 0 or 1
            out[f"final/{key}"] = float(value)
    if _finite(run.get("wall_time")):
        out["final/wall_time"] = float(run["wall_time"])
    return out
