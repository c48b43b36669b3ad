"""Atomic file writes: a reader (or a crash) never sees half a report.

Everything the lab writes besides the database goes through here: the data is written to a
temporary file in the destination's directory and moved into place with :func:`os.replace`,
which is atomic on POSIX and Windows as long as both names are on the same file system (hence
the same directory).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError


def _default_mode() -> int:
    # mkstemp creates files readable by the owner only; a report should get the permissions
    # any other new file would get (0o666 minus the umask). os.umask can only be read by
    # setting it, so set it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _default_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Leave no stray temporary file behind, whatever went wrong.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise a one-line :class:`LabError`.

    Checking up front turns a failure deep inside a sweep (after minutes of work) into an
    immediate, clear message.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LabError(f"cannot write to output directory '{path}': {reason}") from None
    return path
