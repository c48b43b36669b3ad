"""The scripts in docs/ that compute docs pages, imported for tests.

They import their sibling ``pageblocks.py`` as they do when run as ``python docs/NAME.py``,
so docs/ is on ``sys.path`` while a test module uses them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).parents[1] / "docs"


@contextmanager
def docs_script(name: str) -> Iterator[ModuleType]:
    """``docs/NAME.py`` as a module, with docs/ on ``sys.path`` until the block ends."""
    sys.path.insert(0, str(DOCS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(DOCS))
