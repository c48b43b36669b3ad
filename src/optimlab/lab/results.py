"""Results of a sweep, read back from the store: tables, rankings and plots.

``Results`` is what :func:`optimlab.lab.compare` returns and what ``optimlab report``
rebuilds from ``lab.db``; in a notebook it shows its ranking table, converts to a list of
dicts (:meth:`Results.to_records`) or a DataFrame (:meth:`Results.to_pandas`), and draws any
of the report's figures.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError
from optimlab.lab.objective import Objective, objective_for
from optimlab.lab.storage import open_store


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; a diverged seed (inf/NaN) makes the mean inf/NaN."""
    if not values:
        return math.nan, math.nan
    if any(not math.isfinite(v) for v in values):
        bad = [v for v in values if not math.isfinite(v)]
        return (bad[0] if all(math.isinf(b) for b in bad) else math.nan), math.nan
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _finite_or(value: float | None, default: float = -math.inf) -> float:
    return value if value is not None and math.isfinite(value) else default


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


@dataclass
class CellSummary:
    """Everything the report says about one optimizer on one problem."""

    problem: str
    optimizer: str
    hparams: dict[str, Any]
    lr: float | None
    seeds: int
    diverged: int
    objective_label: str
    objective_mean: float
    objective_std: float
    train_loss_mean: float
    train_loss_std: float
    val_loss_mean: float | None
    val_loss_std: float | None
    val_metric_mean: float | None
    val_metric_std: float | None
    reached_target: int
    steps_to_target: float | None
    seconds_to_target: float | None
    ms_per_step: float | None
    state_bytes_per_param: float | None
    tuning_trials: int
    #: the grid's points beyond the problem's lr range (grown past an edge), per side
    lr_grid_added: dict[str, int] = field(default_factory=dict)
    #: "low"/"high" when the chosen lr is the smallest/largest one tried (maybe not the best)
    lr_edge: str | None = None
    #: time to target as the profile uses it: median over seeds, a miss counting as inf
    profile_seconds: float = math.inf
    profile_steps: float = math.inf
    place: int = 0
    place_text: str = ""
    decided_by: str = ""
    #: listed first on its problem (best place, fewest divergences, best mean)
    leader: bool = False
    #: this optimizer's mean minus the leader's, with its interval (None for the leader)
    vs_leader: tuple[float, float, float] | None = None
    objective_values: list[float] = field(default_factory=list, repr=False)
    sensitivity: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def rank(self) -> int:
        """The place (kept under its former name)."""
        return self.place

    def to_record(self) -> dict[str, Any]:
        record = {k: v for k, v in self.__dict__.items() if k != "sensitivity"}
        record["hparams"] = dict(self.hparams)
        record["objective_values"] = list(self.objective_values)
        record["lr_grid_added"] = dict(self.lr_grid_added)
        return record


class Results:
    """The runs of one sweep and everything derived from them."""

    def __init__(
        self,
        sweep: dict[str, Any],
        runs: list[dict],
        lr_finds: list[dict],
        out_dir,
        replaced: dict[str, int] | None = None,
    ):
        self.sweep = sweep
        self.sweep_id: str = sweep["sweep_id"]
        self.kind: str = sweep["kind"]
        self.plan: dict[str, Any] = sweep["config"]
        self.runs = runs
        self.lr_finds = lr_finds
        self.out_dir = Path(out_dir) if out_dir is not None else None
        #: user problem key -> how many stored runs were made from another version of it
        #: (another source, data or initial model) and so were not used here.
        self.replaced: dict[str, int] = dict(replaced or {})
        self._problems: dict[str, Any] = {}
        self._models: dict[str, Any] = {}
        self._summaries: list[CellSummary] | None = None
        #: what each tracking backend did with this sweep (:mod:`optimlab.lab.tracking`)
        self.tracking: list = []
        #: how messages name the store the runs were read from (set by :meth:`load`)
        self.store_location: str | None = None

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        out_dir,
        sweep_id: str | None = None,
        kind: str | None = None,
        *,
        storage: str | None = None,
    ) -> Results:
        """Read a sweep from ``out_dir/lab.db``, or from the database of ``storage`` (a
        ``--storage`` URL), default: the most recently updated sweep."""
        with open_store(out_dir, storage, read_only=True) as store:
            db = store.location
            if sweep_id is None:
                sweeps = store.sweeps(kind)
                if not sweeps:
                    raise LabError(f"no sweeps stored in '{db}'")
                sweep = sweeps[0]
            else:
                sweep = store.get_sweep(sweep_id)
                if sweep is None:
                    raise LabError(
                        f"no sweep '{sweep_id}' in '{db}' (see `optimlab report --list`)"
                    )
            runs = store.sweep_runs(sweep["sweep_id"])
            finds = store.sweep_lr_finds(sweep["sweep_id"])
            replaced = {}
            for key, fingerprint in sweep["config"].get("fingerprints", {}).items():
                others = [fp for fp in store.problem_fingerprints(key) if fp != fingerprint]
                if others:
                    replaced[key] = len(others)
        results = cls(sweep, runs, finds, out_dir, replaced)
        results.store_location = db
        return results

    # -- structure ---------------------------------------------------------------------------
    @property
    def problem_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for run in self.runs:
            seen.setdefault(run["problem_name"], None)
        return list(seen)

    @property
    def optimizer_labels(self) -> list[str]:
        order = [o["label"] for o in self.plan.get("optimizers", [])]
        present = {run["label"] for run in self.runs}
        return [label for label in order if label in present] + sorted(present - set(order))

    def problem(self, name: str):
        """The :class:`~optimlab.lab.problems.Problem` behind a name in this sweep."""
        if name not in self._problems:
            from optimlab.lab.problem_lookup import resolve_problem

            keys = {run["problem_name"]: run["problem"] for run in self.runs}
            self._problems[name] = resolve_problem(keys.get(name, name), require_available=False)
        return self._problems[name]

    def model(self, problem: str):
        """The model of a problem in this sweep as its seed 0 makes it, built once; ``None``
        for a problem without one (a 2-D function) or not at hand on this machine."""
        if problem not in self._models:
            try:
                self._models[problem] = self.problem(problem).make(0).model
            except Exception:  # noqa: BLE001 - whatever a user's problem raises: no model
                self._models[problem] = None
        return self._models[problem]

    def objective(self, problem: str) -> Objective:
        return objective_for(self.problem(problem))

    def select(self, problem: str | None = None, optimizer: str | None = None, role=None):
        """Runs filtered by problem name, optimizer label and role (``tune``/``final``)."""
        return [
            run
            for run in self.runs
            if (problem is None or run["problem_name"] == problem)
            and (optimizer is None or run["label"] == optimizer)
            and (role is None or run["role"] == role)
        ]

    def lr_find_results(self, problem: str):
        """``[(optimizer label, LRFinderResult)]`` for a problem."""
        from optimlab.lab.lr_finder import LRFinderResult

        return [
            (find["label"], LRFinderResult.from_json(find["result"]))
            for find in self.lr_finds
            if find["problem_name"] == problem
        ]

    # -- numbers -----------------------------------------------------------------------------
    def summaries(self) -> list[CellSummary]:
        if self._summaries is None:
            self._summaries = self._summarise()
        return self._summaries

    def _summarise(self) -> list[CellSummary]:
        from optimlab.lab.stats import place_optimizers

        out: list[CellSummary] = []
        for problem in self.problem_names:
            objective = self.objective(problem)
            lr_range = self.plan.get("lr_ranges", {}).get(self.problem_key(problem))
            cells = {}
            for label in self.optimizer_labels:
                finals = sorted(self.select(problem, label, "final"), key=lambda r: r["seed"])
                tunes = self.select(problem, label, "tune")
                if not finals:
                    continue
                cells[label] = self._cell(problem, label, objective, finals, tunes, lr_range)
            placed = place_optimizers(
                {label: cell.objective_values for label, cell in cells.items()},
                higher_is_better=objective.higher_is_better,
                deterministic=self.problem(problem).deterministic,
            )
            for verdict in placed:
                cell = cells[verdict.label]
                cell.place, cell.place_text = verdict.place, verdict.place_text
                cell.decided_by = verdict.decided_by()
                cell.leader = verdict.order == 1
                v = verdict.vs_leader
                cell.vs_leader = None if v is None else (v.estimate, v.low, v.high)
                out.append(cell)
        return out

    def problem_key(self, name: str) -> str:
        """The key a problem was asked for by (registry name or ``module:function``)."""
        for run in self.runs:
            if run["problem_name"] == name:
                return run["problem"]
        return name

    def _cell(self, problem, label, objective: Objective, finals, tunes, lr_range) -> CellSummary:
        from optimlab.lab.stats import median_time
        from optimlab.lab.tuning import lr_edge

        finals_f = [run["final"] for run in finals]
        values = [objective.raw(f) for f in finals_f]
        obj = _mean_std(
            [objective.raw(f) if not f["diverged"] else objective.value(f) for f in finals_f]
        )

        def stat(key):
            values = [f.get(key) for f in finals_f]
            if all(v is None for v in values):
                return None, None
            return _mean_std([math.nan if v is None else float(v) for v in values])

        train = stat("train_loss")
        val_loss, val_metric = stat("val_loss"), stat("val_metric")
        reached = [f for f in finals_f if f.get("steps_to_target") is not None]
        hparams = dict(finals[0]["config"]["hparams"])
        tuned_lrs = [float(run["config"]["hparams"].get("lr", math.nan)) for run in tunes]
        sensitivity = sorted(
            (float(run["config"]["hparams"].get("lr", math.nan)), objective.raw(run["final"]))
            for run in tunes
        )
        added = {"low": 0, "high": 0}
        if lr_range is not None and self.plan.get("search") == "grid":
            lo, hi = lr_range
            # Grid points carry six significant digits: allow for their rounding.
            added["low"] = len({lr for lr in tuned_lrs if lr < lo * (1 - 1e-5)})
            added["high"] = len({lr for lr in tuned_lrs if lr > hi * (1 + 1e-5)})
        sec = _median([f.get("sec_per_step") for f in finals_f])
        return CellSummary(
            problem=problem,
            optimizer=label,
            hparams=hparams,
            lr=hparams.get("lr"),
            seeds=len(finals),
            diverged=sum(bool(f["diverged"]) for f in finals_f),
            objective_label=objective.label(finals_f[0]),
            objective_mean=obj[0],
            objective_std=obj[1],
            train_loss_mean=train[0],
            train_loss_std=train[1],
            val_loss_mean=val_loss[0],
            val_loss_std=val_loss[1],
            val_metric_mean=val_metric[0],
            val_metric_std=val_metric[1],
            reached_target=len(reached),
            steps_to_target=_median([f["steps_to_target"] for f in reached]),
            seconds_to_target=_median([f["seconds_to_target"] for f in reached]),
            ms_per_step=None if sec is None else 1000 * sec,
            state_bytes_per_param=_median([f.get("state_bytes_per_param") for f in finals_f]),
            tuning_trials=len(tunes),
            lr_grid_added=added,
            # Only a grid has edges: Optuna's samples are where TPE happened to look.
            lr_edge=lr_edge(tuned_lrs, hparams.get("lr"))
            if self.plan.get("search") == "grid"
            else None,
            profile_seconds=median_time([f.get("seconds_to_target") for f in finals_f]),
            profile_steps=median_time([f.get("steps_to_target") for f in finals_f]),
            objective_values=values,
            sensitivity=sensitivity,
        )

    def ranking(self) -> list[dict[str, Any]]:
        """Overall ranking: by the mean of the per-problem places (1 is best; equal means
        share a place), with the AlgoPerf performance-profile score beside it (by seconds,
        AlgoPerf's measure, and by steps, which does not vary with the machine's load)."""
        per: dict[str, dict[str, int]] = {}
        texts: dict[str, dict[str, str]] = {}
        for cell in self.summaries():
            per.setdefault(cell.optimizer, {})[cell.problem] = cell.place
            texts.setdefault(cell.optimizer, {})[cell.problem] = cell.place_text
        problems = self.problem_names
        scores = self.profile_scores()
        by_steps = self.profile_scores("steps")
        rows = []
        for label, places in per.items():
            # A problem on which the optimizer has no result counts as last place.
            full = [places.get(p, len(per)) for p in problems]
            rows.append(
                {
                    "optimizer": label,
                    "mean_rank": statistics.fmean(full),
                    "profile_score": scores.get(label, math.nan),
                    "profile_score_steps": by_steps.get(label, math.nan),
                    "ranks": dict(places),
                    "places": dict(texts[label]),
                    "_sum": sum(full),
                }
            )
        rows.sort(key=lambda r: (r["_sum"], -_finite_or(r["profile_score"]), r["optimizer"]))
        for row in rows:
            # Sums of integer places over the same problems: equal sums are equal means.
            row["place"] = 1 + sum(other["_sum"] < row["_sum"] for other in rows)
            row["shared"] = sum(other["_sum"] == row["_sum"] for other in rows) > 1
        for row in rows:
            del row["_sum"]
        return rows

    # -- across problems ---------------------------------------------------------------------
    def profile_times(self, measure: str = "seconds") -> dict[str, dict[str, float]]:
        """``{optimizer: {problem: time to target}}`` as the profile uses it (median over
        seeds, a seed that missed the target counting as inf); ``measure``: ``"seconds"``
        (AlgoPerf's, the default) or ``"steps"``."""
        if measure not in ("seconds", "steps"):
            raise ValueError(f"measure must be 'seconds' or 'steps', got {measure!r}")
        times: dict[str, dict[str, float]] = {label: {} for label in self.optimizer_labels}
        for cell in self.summaries():
            value = cell.profile_seconds if measure == "seconds" else cell.profile_steps
            times.setdefault(cell.optimizer, {})[cell.problem] = value
        for label in times:
            for problem in self.problem_names:
                times[label].setdefault(problem, math.inf)
        return times

    def profile_scores(self, measure: str = "seconds") -> dict[str, float]:
        """AlgoPerf's score per optimizer: its performance profile integrated over τ ∈ [1, 4],
        normalised to [0, 1] (see :mod:`optimlab.lab.stats`)."""
        from optimlab.lab.stats import performance_ratios, profile_score

        ratios = performance_ratios(self.profile_times(measure))
        n = len(self.problem_names)
        return {label: profile_score(r, n) for label, r in ratios.items()}

    def best(self, problem: str, optimizer: str) -> CellSummary:
        for cell in self.summaries():
            if cell.problem == problem and cell.optimizer == optimizer:
                return cell
        raise KeyError((problem, optimizer))

    # -- conversions -------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per problem × optimizer (the table of the report)."""
        return [cell.to_record() for cell in self.summaries()]

    def run_records(self) -> list[dict[str, Any]]:
        """One flat dict per run (tuning trials and seed reruns), without curves."""
        rows = []
        for run in self.runs:
            row = {
                "run_id": run["run_id"],
                "problem": run["problem_name"],
                "optimizer": run["label"],
                "role": run["role"],
                "seed": run["seed"],
                "status": run["status"],
                "wall_time": run["wall_time"],
                "finished_at": run["finished_at"],
            }
            row.update({f"hp_{k}": v for k, v in run["config"]["hparams"].items()})
            row.update(run["final"])
            rows.append(row)
        return rows

    def to_pandas(self, runs: bool = False):
        """A ``pandas.DataFrame`` of :meth:`to_records` (or of every run with ``runs=True``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.run_records() if runs else self.to_records())

    # -- plots and report --------------------------------------------------------------------
    def plot_loss_curves(self, problem: str):
        from optimlab.lab import plots

        return plots.plot_loss_curves(self, problem)

    def plot_validation_curves(self, problem: str):
        from optimlab.lab import plots

        return plots.plot_validation_curves(self, problem)

    def plot_final_results(self, problem: str):
        from optimlab.lab import plots

        return plots.plot_final_results(self, problem)

    def plot_lr_sensitivity(self, problem: str):
        from optimlab.lab import plots

        return plots.plot_lr_sensitivity(self, problem)

    def plot_lr_finder(self, problem: str):
        from optimlab.lab import plots

        return plots.plot_lr_finder(self.lr_find_results(problem), title=problem)

    def plot_profiles(self):
        from optimlab.lab import plots

        return plots.plot_performance_profiles(self)

    def plot_trajectories(self, problem: str):
        from optimlab.lab import plots

        return plots.plot_trajectories(self, problem)

    def write_report(self, out_dir=None) -> Path:
        """Write the HTML report, Markdown summary and PNGs into this sweep's folder under
        ``out_dir`` (default: where it was loaded from); returns the HTML path."""
        from optimlab.lab.report import write_report

        return write_report(self, Path(out_dir) if out_dir is not None else self.out_dir)

    @property
    def report_path(self) -> Path | None:
        """This sweep's own report (``OUT/reports/<kind>-<id>/report.html``)."""
        from optimlab.lab.report import sweep_report_paths

        if self.out_dir is None:
            return None
        return sweep_report_paths(self.out_dir, self.kind, self.sweep_id)["html"]

    # -- display -----------------------------------------------------------------------------
    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and formatted rows of the summary table (for console, HTML and Markdown)."""
        from optimlab.lab.formatting import summary_table

        return summary_table(self)

    def __repr__(self) -> str:
        header, rows = self.table_rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines = [
            f"Results(sweep={self.sweep_id[:8]}, kind={self.kind}, "
            f"runs={len({r['run_id'] for r in self.runs})})",
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from optimlab.lab.formatting import html_table

        header, rows = self.table_rows()
        return html_table(header, rows)
