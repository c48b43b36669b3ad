"""How the lab names what it ran: canonical JSON, configuration hashes, timestamps, versions.

A run, a range test and a sweep are each identified by the SHA-256 of the canonical JSON of
everything that can change their numbers (:func:`config_hash`), and every stored record says
when it was made (:func:`now`) and with what (:func:`versions`).
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from typing import Any


def jsonable(value: Any) -> Any:
    """Tuples become lists, recursively, so values survive a JSON round trip unchanged."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def config_hash(config: dict[str, Any]) -> str:
    """A stable id for a configuration: SHA-256 of its canonical JSON, shortened."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def now() -> str:
    """UTC timestamp with microseconds (ISO 8601), the store's one time format."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def versions() -> dict[str, str]:
    """Versions of what produced a number, stored with every run."""
    import numpy as np
    import torch

    import optimlab

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "optimlab": getattr(optimlab, "__version__", "unknown"),
    }
