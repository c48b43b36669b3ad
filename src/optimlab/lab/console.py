"""Terminal output for the CLI: a rich progress bar and the summary table.

rich is imported here only, when the CLI (or ``progress=True``) asks for it.
"""

from __future__ import annotations

import sys


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def stdout_console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Logs and pipes have no width; rich would assume 80 columns and fold every cell.
        console = Console(width=max(console.width, 160))
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
        edge_notes,
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
    for line in edge_notes(results):
        console.print(line, markup=False, highlight=False)


def error_line(message: str) -> None:
    """One line on stderr, plain text (no rich markup surprises in error messages)."""
    sys.stderr.write(f"optimlab: error: {message}\n")
    sys.stderr.flush()
