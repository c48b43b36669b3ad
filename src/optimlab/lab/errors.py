"""The exceptions the lab raises: :class:`LabError` for mistakes in what the user asked for,
:class:`RunFailed` for a run that broke.

The CLI prints a :class:`LabError` as a single line on stderr and exits with status 2, so every
message must say what was wrong and, where it can, what would be right. A :class:`RunFailed`
is one line too, with status 1: finished runs are kept, and ``--debug`` shows the traceback.
"""

from __future__ import annotations


class LabError(ValueError):
    """A bad problem, optimizer, hyperparameter, config file or output directory.

    It subclasses :class:`ValueError` so that notebook code which already catches
    ``ValueError`` around bad input keeps working.
    """


class RunFailed(RuntimeError):
    """A run raised an exception (a bug in a problem or optimizer, not bad user input)."""


def first_line(exc: BaseException) -> str:
    """An exception's message in one line: the first of its own, or of the driver's beneath
    SQLAlchemy's wrapper (``exc.orig``), without SQLAlchemy's additions; its type's name if
    it has none."""
    original = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(original).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(original).__name__
