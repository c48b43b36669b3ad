"""Where a command keeps its runs and its Optuna studies: ``--storage``.

* No ``--storage`` (the default): everything in ``OUT/lab.db``, a SQLite file on this machine
  (:class:`~optimlab.lab.store.Store`); Optuna's studies in the same file.
* ``--storage postgresql://user:password@host:port/database``: the runs *and* the studies in
  that PostgreSQL database (:class:`~optimlab.lab.store_postgres.PostgresStore`), so that
  several processes, on one machine or many, share one search and one run store, and any of
  them can build the report. ``OUT`` then holds only reports. ``postgres://`` is accepted as
  the same thing, and a URL without a driver uses psycopg (version 3), which the lab's extra
  installs; ``postgresql+psycopg2://`` and other SQLAlchemy drivers work when installed.
  libpq's parameters go in the query string (``?host=/var/run/postgresql`` for a Unix
  socket, ``?sslmode=require``, ``?connect_timeout=5``).
* ``--storage sqlite:///path.db``: the study in that file, the runs in ``OUT/lab.db`` (both
  on this machine).

Other databases (MySQL and the rest of what Optuna reaches through SQLAlchemy) are refused:
the lab would share the study there but not the runs, which is the half that matters.
"""

from __future__ import annotations

import os
from urllib.parse import unquote

from optimlab.lab.errors import LabError
from optimlab.lab.store import RunStore, Store

#: What a PostgreSQL URL without a driver is given: psycopg 3, the maintained driver.
POSTGRES_DRIVER = "psycopg"
EXAMPLE = "postgresql://user:password@host/database"


def _url(storage: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage)
    except (ArgumentError, ValueError):
        raise LabError(
            f"--storage {storage!r} is not a database URL (expected {EXAMPLE}, or sqlite:///PATH)"
        ) from None


def redact(storage: str) -> str:
    """The URL as messages show it: the password (also one in the query string) as ``***``."""
    try:
        url = _url(storage)
    except LabError:
        return "<an unreadable URL>"
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    # Readable: ?host=/var/run/postgresql rather than ?host=%2Fvar%2Frun%2Fpostgresql.
    return unquote(url.render_as_string(hide_password=True))


def parse_storage(storage: str | None) -> str | None:
    """Check a ``--storage`` URL and return it as the lab uses it (a PostgreSQL URL with its
    driver named), or ``None`` for the default; anything else raises a one-line LabError."""
    if storage is None:
        return None
    if not isinstance(storage, str) or not storage.strip():
        raise LabError(f"--storage must be a database URL such as {EXAMPLE}, got {storage!r}")
    url = _url(storage.strip())
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if not url.database:
            raise LabError(f"--storage {redact(storage)} names no database (expected {EXAMPLE})")
        url = url.set(drivername=f"postgresql+{driver or POSTGRES_DRIVER}")
        return url.render_as_string(hide_password=False)
    if backend == "sqlite":
        return storage.strip()
    raise LabError(
        f"--storage {redact(storage)}: the lab shares its runs only through PostgreSQL "
        f"({EXAMPLE}); with {backend} the study would be shared but not the runs "
        "(without --storage everything stays in OUT/lab.db)"
    )


def is_postgres(storage: str | None) -> bool:
    return storage is not None and storage.startswith("postgresql+")


def optuna_engine_options(storage: str) -> dict:
    """``engine_kwargs`` for Optuna's RDB storage on ``storage`` (a parsed URL)."""
    if is_postgres(storage):
        from optimlab.lab.store_postgres import engine_options

        return engine_options(storage)
    return {}


def open_store(
    out_dir: str | os.PathLike, storage: str | None = None, *, read_only: bool = False
) -> RunStore:
    """The run store for ``out_dir`` and ``storage`` (a ``--storage`` URL, checked here)."""
    url = parse_storage(storage)
    if is_postgres(url):
        from optimlab.lab.store_postgres import PostgresStore

        return PostgresStore(url, display=redact(storage), read_only=read_only)
    return Store(out_dir, read_only=read_only, optuna_url=url)
