"""Everything the CLI shows on the terminal: the progress bar, the tables, where files went,
and error lines.

rich is imported here only, when the CLI (or ``progress=True``) asks for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def stdout_console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        # Logs and pipes have no width; rich would assume 80 columns and fold every cell.
        # A width the user gives in COLUMNS wins (rich reads it itself).
        console = Console(width=160)
    return console


class RichProgress:
    """Progress bar for a sweep: runs done / planned, with how many came from the store."""

    def __init__(self, console=None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._console = console or stderr_console()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[cached]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
            # Without a terminal (CI logs, pipes) a live bar would only add noise.
            disable=not self._console.is_terminal,
        )
        self._task = None
        self._cached = 0

    def start(self, total: int, description: str) -> None:
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, cached="")

    def add_total(self, n: int) -> None:
        task = self._progress.tasks[0]
        self._progress.update(self._task, total=(task.total or 0) + n)

    def advance(self, cached: bool = False) -> None:
        if cached:
            self._cached += 1
        text = f"({self._cached} from store)" if self._cached else ""
        self._progress.update(self._task, advance=1, cached=text)

    def stop(self) -> None:
        self._progress.stop()


def print_summary(results, console=None) -> None:
    """The ranking and summary tables, as rich tables on stdout."""
    from rich.table import Table

    from optimlab.lab.formatting import (
        RANKING_NOTE,
        VERDICT_COLUMNS,
        cell_notes,
        ranking_table,
        summary_table,
    )

    console = console or stdout_console()
    header, rows = ranking_table(results)
    table = Table(
        title="Ranking", caption=RANKING_NOTE, title_justify="left", caption_justify="left"
    )
    for name in header:
        numeric = name in ("place", "mean place", "AlgoPerf score", "by steps")
        table.add_column(name, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)

    header, rows = summary_table(results)
    # The columns that answer "which optimizer, which lr, and how sure": the report has the
    # rest, which a terminal gets only when it is wide enough to show them unfolded.
    wanted = list(VERDICT_COLUMNS)
    if console.width >= 200:
        wanted = header
    elif console.width >= 150:
        wanted += ["steps to target", "trials"]
    keep = [header.index(name) for name in wanted]
    table = Table(title="Per problem (best setting, mean ± std over seeds)", title_justify="left")
    for i in keep:
        table.add_column(header[i], overflow="fold")
    previous = None
    for row in rows:
        first = row[0] != previous
        if previous is not None and first:
            table.add_section()
        previous = row[0]
        # The problem's name once per section: the rows below belong to it.
        table.add_row(*(row[i] if i or first else "" for i in keep))
    console.print(table)
    for line in cell_notes(results):
        console.print(line, markup=False, highlight=False)


def print_outcome(
    results, out_dir, *, report: bool, console=None, store: str | None = None
) -> None:
    """After a sweep: its tables, then where the report, the tracked runs and the runs are
    (``store``: how to name the store, default ``out_dir/lab.db``)."""
    if results.summaries():
        print_summary(results, console)
    print_banners(results)
    if report:
        print_report_path(results)
    print_tracking(results)
    db = store or (Path(out_dir) / "lab.db").resolve()
    print(f"Runs stored in {db} (sweep {results.sweep_id[:12]})")


def print_tracking(results) -> None:
    """Where each tracking backend put the sweep's runs (one that failed said so already)."""
    for outcome in results.tracking:
        if outcome.error is None:
            print(outcome.line())


def print_banners(results) -> None:
    """The report's warnings (a partial sweep, a smoke run), one line each."""
    from optimlab.lab.report import banner_lines

    for head, text in banner_lines(results):
        print(f"{head} {text}")


def print_elapsed(seconds: float) -> None:
    """The command's wall time, as its last line."""
    from optimlab.lab.formatting import duration

    print(f"Finished in {duration(seconds)}.")


def print_report_path(results) -> None:
    """Where this sweep's own report is, and the index of every report beside it."""
    from optimlab.lab.report_index import INDEX

    print(f"Report: {results.report_path.resolve()}")
    print(f"All reports: {(results.out_dir / INDEX).resolve()}")


def print_best_settings(results) -> None:
    """``tune``'s answer: the best hyperparameters of each cell, one line each."""
    from optimlab.lab.formatting import hparams_text

    for cell in results.summaries():
        params = hparams_text(cell.hparams, skip=(), sep=", ")
        print(f"Best for {cell.optimizer} on {cell.problem}: {params}")


def print_lr_find(outcome) -> None:
    """The range tests of ``optimlab lr-find``: one row per optimizer, then the files."""
    from rich.table import Table

    from optimlab.lab.formatting import num

    table = Table(title=f"lr range test on {outcome.name}", title_justify="left")
    for name in ("optimizer", "suggested lr", "rule", "how", "points", "stopped early"):
        table.add_column(name)
    for label, res in outcome:
        table.add_row(
            label,
            num(res.suggestion, 3),
            res.method,
            res.reason,
            str(len(res.lrs)),
            "yes" if res.stopped_early else "no",
        )
    stdout_console().print(table)
    print(f"Plot: {outcome.files['png'].resolve()}")
    print(f"Curves: {outcome.files['json'].resolve()}")


def print_sweeps(db: str | Path, sweeps: list[dict[str, Any]], out_dir=None) -> None:
    """``optimlab report --list``: one row per stored sweep of the store ``db``, with its
    report in ``out_dir`` (default: the store's directory) if written there."""
    from rich.table import Table

    from optimlab.lab.report_index import report_dir

    out_dir = Path(db).parent if out_dir is None else Path(out_dir)
    table = Table(title=f"sweeps in {db}", title_justify="left")
    for name in ("sweep", "kind", "problems", "optimizers", "updated", "complete", "report"):
        table.add_column(name, overflow="fold")
    for sweep in sweeps:
        cfg = sweep["config"]
        report = report_dir(out_dir, sweep["kind"], sweep["sweep_id"]) / "report.html"
        table.add_row(
            sweep["sweep_id"][:12],
            sweep["kind"],
            " ".join(cfg.get("problems", [])),
            " ".join(o["label"] for o in cfg.get("optimizers", [])),
            sweep["updated_at"][:19],
            "yes" if sweep["completed_at"] else "no",
            str(report.relative_to(out_dir)) if report.exists() else "—",
        )
    stdout_console().print(table)


def print_optimizers(console=None) -> None:
    """``optimlab list optimizers``: registry names, then the lab's presets."""
    from rich.table import Table

    from optimlab.lab.optimizers import describe_optimizer
    from optimlab.lab.specs import PRESETS, registry_names

    console = console or stdout_console()
    table = Table(
        title="optimizers (use as -o NAME or -o NAME:key=value,...)", title_justify="left"
    )
    table.add_column("name")
    table.add_column("what", overflow="fold")
    for name in registry_names():
        table.add_row(name, describe_optimizer(name))
    for name, (base, hparams, desc) in PRESETS.items():
        settings = ", ".join(f"{k}={v}" for k, v in hparams.items())
        table.add_row(name, f"preset: {desc} ({base} {settings})")
    console.print(table)


def print_problems(console=None) -> None:
    """``optimlab list problems``: every registered problem, and whether it can run here."""
    from rich.table import Table

    from optimlab.lab.problems import available_problems, get_problem

    console = console or stdout_console()
    table = Table(
        title="problems (use as -p NAME, or -p package.module:function)", title_justify="left"
    )
    for name in ("name", "kind", "steps", "metric", "lr range", "available", "description"):
        table.add_column(name, overflow="fold")
    for name in available_problems():
        prob = get_problem(name)
        reason = prob.unavailable_reason() if hasattr(prob, "unavailable_reason") else None
        lo, hi = prob.default_lr_range
        table.add_row(
            name,
            prob.kind,
            str(prob.steps),
            prob.metric or "—",
            f"{lo:g}–{hi:g}",
            "yes" if reason is None else f"no: {reason}",
            prob.description,
        )
    console.print(table)


def error_line(message: str) -> None:
    """One line on stderr, plain text (no rich markup surprises in error messages)."""
    # One line whatever the message holds (an SQLite report, a user's exception text).
    sys.stderr.write(f"optimlab: error: {' '.join(message.splitlines())}\n")
    sys.stderr.flush()
