"""The run store in PostgreSQL: the lab's tables in the schema ``optimlab`` of the database a
``--storage postgresql://…`` URL names, beside the Optuna studies of the same URL.

Every worker of a shared search, on any machine, writes its finished runs here, each in its
own transaction, and finds the runs the others finished; a report can be built from any
machine. The queries are those of :class:`~optimlab.lab.store.RunStore`, so the rules are
the SQLite store's: a row once written is never changed, a run is keyed by the hash of its
configuration, and a second worker that finishes the same run changes nothing.

What differs from a file:

* **The schema ``optimlab`` is the lab's "file".** The first writer creates it, its tables and
  its ``meta`` rows (``application = optimlab``, ``schema_version``) in one transaction,
  under an advisory lock so that workers starting together do not race. A schema of that
  name without those rows belongs to someone else: it is refused and left untouched, as is
  a store written by a newer optimlab. Nothing outside the schema is ever touched (Optuna
  keeps its own tables in the database's default schema).
* **Connections come and go.** Each query is a short transaction on a pooled connection that
  is checked before use, so a worker survives a restarted server or a dropped idle
  connection; a query cut off by a lost connection is tried again (every write is
  idempotent), and only a server gone for good stops the command, with one line.
* **Readers write nothing**: ``optimlab report --storage URL`` reads in read-only
  transactions and never creates the schema.
* **Asking for trials is serialised** between the workers of one search by a
  transaction-level advisory lock (:meth:`PostgresStore.search_lock`), released by the
  server when the transaction ends or the worker's connection dies.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from optimlab.lab.errors import LabError, first_line
from optimlab.lab.store import (
    APPLICATION_ID,
    LAB_TABLES,
    SCHEMA_VERSION,
    RunStore,
    UnreadableRow,
    check_schema_version,
    schema_statements,
)

#: The PostgreSQL schema (namespace) that holds the lab's tables.
SCHEMA = "optimlab"
#: What ``meta.application`` says in a schema the lab created.
APPLICATION = "optimlab"
#: Tries of a query cut off by a lost connection, and the wait before the first retry
#: (doubled each time: 1 + 2 + 4 + 8 s, while a server restarts).
RETRIES = 4
FIRST_RETRY_DELAY = 1.0
#: Seconds to wait for a connection before giving up (libpq waits for ever by default).
CONNECT_TIMEOUT = 15


def _lock_key(name: str) -> int:
    """``name`` as the second key of a two-key advisory lock (a signed 32-bit integer)."""
    key = zlib.crc32(name.encode("utf-8"))
    return key - (1 << 32) if key >= 1 << 31 else key


def engine_options(url: str) -> dict[str, Any]:
    """``create_engine`` keywords for a long-lived worker on a PostgreSQL URL (the lab's store
    and Optuna's alike): a pooled connection is checked before each use, so a restarted server
    or a dropped idle connection costs a reconnect, not the command; and a server that does not
    answer is given up after :data:`CONNECT_TIMEOUT` seconds unless the URL sets its own
    ``connect_timeout``."""
    from sqlalchemy.engine import make_url

    options: dict[str, Any] = {"pool_pre_ping": True}
    if "connect_timeout" not in make_url(url).query:
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    return options


class _Transaction:
    """What :meth:`PostgresStore.transaction` yields: the SQLite cursor's two methods, with
    SQLite's ``?`` placeholders turned into the driver's ``%s``."""

    def __init__(self, conn) -> None:
        self._conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        # No statement of the lab has a literal % (a LIKE pattern is passed as an argument).
        assert "%" not in sql, sql
        return sql.replace("?", "%s")

    def execute(self, sql: str, args: tuple = ()):
        return self._conn.exec_driver_sql(self._sql(sql), tuple(args))

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        self._conn.exec_driver_sql(self._sql(sql), [tuple(row) for row in rows])


class PostgresStore(RunStore):
    """The lab's tables in the schema ``optimlab`` of a PostgreSQL database.

    ``url`` is a SQLAlchemy URL with a driver (``postgresql+psycopg://…``, as
    :func:`optimlab.lab.storage.parse_storage` makes it); ``display`` is how messages name the
    database (the URL without its password). ``read_only=True`` opens an existing store and
    never writes.
    """

    shared = True

    def __init__(self, url: str, *, display: str, read_only: bool = False) -> None:
        import sqlalchemy

        self.url = url
        self.location = display
        self.optuna_url = url
        self.read_only = read_only
        self.database_errors = (sqlalchemy.exc.DBAPIError,)
        try:
            self._engine = sqlalchemy.create_engine(url, **engine_options(url))
        except ImportError as exc:  # the URL names a driver that is not installed
            raise LabError(f"cannot use the PostgreSQL database {display}: {exc}") from None
        except sqlalchemy.exc.ArgumentError as exc:
            raise LabError(f"--storage {display} is not a database URL: {exc}") from None
        try:
            if not read_only:
                self._create_schema()
            self._check()
        except sqlalchemy.exc.DBAPIError as exc:
            self._engine.dispose()
            raise self._error(exc, opening=True) from None
        except BaseException:
            self._engine.dispose()
            raise

    # -- opening and checking ----------------------------------------------------------------
    def _create_schema(self) -> None:
        """Create the schema, its tables and its ``meta`` rows in one transaction, unless it
        exists (another worker made it, or this is a later command)."""
        with self._engine.begin() as conn:
            if self._schema_exists(conn):
                return
            # Two workers starting together: the second waits here, then finds the schema.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, 0)", (APPLICATION_ID,))
            if self._schema_exists(conn):
                return
            conn.exec_driver_sql(f"CREATE SCHEMA {SCHEMA}")
            conn.exec_driver_sql(f"SET LOCAL search_path TO {SCHEMA}")
            for statement in schema_statements(real="DOUBLE PRECISION", integer="BIGINT"):
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(
                "INSERT INTO meta (key, value) VALUES ('application', %s), ('schema_version', %s)",
                (APPLICATION, str(SCHEMA_VERSION)),
            )

    @staticmethod
    def _schema_exists(conn) -> bool:
        found = conn.exec_driver_sql(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (SCHEMA,)
        )
        return found.first() is not None

    def _check(self) -> None:
        """Refuse a schema that is not the lab's, or a store newer than this code."""
        with self._engine.connect() as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            if not self._schema_exists(conn):
                raise LabError(
                    f"no lab store in {self.location} (its schema '{SCHEMA}' does not exist): "
                    "run a command with this --storage first"
                )
            tables = {
                row[0]
                for row in conn.exec_driver_sql(
                    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
                    " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN"
                    " ('r', 'p', 'v', 'm', 'f')",
                    (SCHEMA,),
                )
            }
            meta: dict[str, str] = {}
            if "meta" in tables:
                conn.exec_driver_sql(f"SET LOCAL search_path TO {SCHEMA}")
                meta = dict(conn.exec_driver_sql("SELECT key, value FROM meta").all())
        if meta.get("application") != APPLICATION or not tables >= LAB_TABLES:
            others = ", ".join(sorted(tables - LAB_TABLES)[:5]) or "no tables"
            raise LabError(
                f"the schema '{SCHEMA}' in {self.location} is not the lab's (it holds "
                f"{others}); the lab leaves it alone: use another database"
            )
        check_schema_version(
            meta.get("schema_version"), f"the lab store in {self.location}", "use another database"
        )

    # -- errors ------------------------------------------------------------------------------
    def _error(self, exc: BaseException, opening: bool = False) -> LabError:
        """A one-line message for a database error, saying what to do about it."""
        if isinstance(exc, UnreadableRow):
            return LabError(
                f"the lab store in {self.location} is damaged ({exc}): restore the database "
                "from a backup, or delete the damaged rows and run the command again, which "
                "recomputes them"
            )
        import sqlalchemy

        text = first_line(exc)
        code = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
        if code == "42501":  # insufficient_privilege
            return LabError(
                f"cannot use the lab store in {self.location}: {text} (the lab's role must own "
                f"the database, to make the schema '{SCHEMA}' and Optuna's tables; see "
                "docs/lab.md)"
            )
        if opening and isinstance(exc, sqlalchemy.exc.OperationalError):
            return LabError(f"cannot connect to the PostgreSQL database {self.location}: {text}")
        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return LabError(
                f"lost the PostgreSQL database {self.location} ({text}); finished runs are "
                "kept there: run the same command again to resume"
            )
        return LabError(f"cannot use the lab store in {self.location}: {text}")

    def _retry_delay(self, exc: BaseException, attempt: int) -> float | None:
        if getattr(exc, "connection_invalidated", False) and attempt < RETRIES:
            return FIRST_RETRY_DELAY * 2**attempt
        return None

    # -- plumbing ----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """A read-write transaction on the lab's schema, committed when the block ends and
        rolled back on any exception."""
        with self._engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL search_path TO {SCHEMA}")
            yield _Transaction(conn)

    def _rows(self, sql: str, args: tuple = ()) -> list[Mapping[str, Any]]:
        with self._engine.connect() as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f"SET LOCAL search_path TO {SCHEMA}")
            rows = _Transaction(conn).execute(sql, args).mappings().all()
            conn.rollback()
        return rows

    @contextmanager
    def search_lock(self, name: str) -> Iterator[None]:
        """Hold a transaction-level advisory lock on the search ``name`` for the block: the
        workers of one search ask for trials one at a time, so that together they create
        exactly the budget. The server drops the lock if this process dies."""
        import sqlalchemy

        conn = None
        try:
            conn = self._engine.connect()
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(%s, %s)", (APPLICATION_ID, _lock_key(name))
            )
        except sqlalchemy.exc.DBAPIError as exc:
            if conn is not None:
                conn.close()
            raise self._error(exc) from None
        try:
            yield
        finally:
            # The transaction wrote nothing; ending it releases the lock.
            conn.close()

    def close(self) -> None:
        self._engine.dispose()
