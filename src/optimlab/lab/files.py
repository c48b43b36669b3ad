"""Files the lab writes: atomically (a reader, or a crash, never sees half a report), under
names that are safe on every file system.

Everything the lab writes besides the database goes through here: the data is written to a
temporary file in the destination's directory and moved into place with :func:`os.replace`,
which is atomic on POSIX and Windows as long as both names are on the same file system (hence
the same directory).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError


def default_file_mode() -> int:
    """The permissions a new file gets here: 0o666 minus the umask.

    ``mkstemp`` creates files readable by the owner only; a report should get the permissions
    any other new file would get. ``os.umask`` can only be read by setting it, so it is set
    back at once.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` for a writer that wants a file name (a GIF encoder).

    When the block ends without an exception the file gets :func:`default_file_mode` and is
    moved onto ``path``; otherwise it is removed. The temporary name ends with ``path``'s own
    suffix, because some writers choose the format by it. A file system that refuses the
    write (permissions, a full disk) raises a one-line :class:`LabError` naming the file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
        )
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LabError(f"cannot write '{path}': {reason}") from exc
    finally:
        # Leave no stray temporary file behind, whatever went wrong.
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


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
    if not str(path).strip():
        # `--out "$OUT"` with OUT unset: writing into the current directory is a surprise.
        raise LabError("the output directory is an empty string (give --out DIR)")
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


def slug(text: str) -> str:
    """``text`` as a file or directory name: anything but letters, digits, ``_.-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
