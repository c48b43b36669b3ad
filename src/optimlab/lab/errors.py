"""The one exception type the lab raises for mistakes in what the user asked for.

The CLI prints a :class:`LabError` as a single line on stderr and exits with status 2, so every
message must say what was wrong and, where it can, what would be right.
"""

from __future__ import annotations


class LabError(ValueError):
    """A bad problem, optimizer, hyperparameter, config file or output directory.

    It subclasses :class:`ValueError` so that notebook code which already catches
    ``ValueError`` around bad input keeps working.
    """
