"""The lab's run store: every finished run, range test and sweep, in a database.

Two backends share one set of tables and one set of queries (:class:`RunStore`):

* :class:`Store`, the default: one SQLite file per output directory (``OUT/lab.db``);
* :class:`optimlab.lab.store_postgres.PostgresStore`: the schema ``optimlab`` of a PostgreSQL
  database, chosen with ``--storage postgresql://…`` so that the workers of one search, on
  one machine or many, share their runs (:mod:`optimlab.lab.storage` picks the backend).

Every finished run is one row of ``runs``, written in its own transaction together with its
links to the sweep that asked for it, so a crash (even ``kill -9``) loses at most the runs that
were in flight. Runs are keyed by a hash of their full configuration and seed
(:func:`optimlab.lab.runner.run_id`): re-running a command finds its finished runs here and
does not repeat them, and a row once written is never changed (a second writer of the same
run, another worker that finished it at the same time, changes nothing).

Tables:

* ``runs``: configuration (JSON), seed, final numbers (JSON), a sampled loss curve with step
  diagnostics (JSON), wall time, timestamps, versions (python, torch, optimlab), host;
* ``lr_finds``: learning-rate range tests, same idea;
* ``sweeps``: one row per command invocation's plan (``compare``, ``trajectories``, ``tune``),
  keyed by a hash of its settings so that the same command resumes the same sweep;
* ``sweep_items``: which runs and lr-range tests belong to a sweep and in which role
  (``tune`` for tuning trials, ``final`` for the seed reruns of the best setting,
  ``lr_find``);
* ``meta``: the schema version (and, in PostgreSQL, the application's name).

Optuna keeps its studies in the same database through its own RDB storage, in its own tables
(:attr:`RunStore.optuna_url`).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote

from optimlab.lab.errors import LabError
from optimlab.lab.identity import now

DB_NAME = "lab.db"
SCHEMA_VERSION = 1

#: The tables, once for every backend: ``{real}`` and ``{int}`` are the backend's types for a
#: double and a 64-bit integer (SQLite: REAL and INTEGER; PostgreSQL: DOUBLE PRECISION, BIGINT).
TABLES = {
    "meta": ("key TEXT PRIMARY KEY", "value TEXT NOT NULL"),
    "runs": (
        "run_id TEXT PRIMARY KEY",
        "problem TEXT NOT NULL",
        "optimizer TEXT NOT NULL",
        "lr {real}",
        "seed {int} NOT NULL",
        "status TEXT NOT NULL",
        "config TEXT NOT NULL",
        "final TEXT NOT NULL",
        "curve TEXT NOT NULL",
        "wall_time {real} NOT NULL",
        "started_at TEXT NOT NULL",
        "finished_at TEXT NOT NULL",
        "versions TEXT NOT NULL",
        "host TEXT NOT NULL",
    ),
    "lr_finds": (
        "find_id TEXT PRIMARY KEY",
        "problem TEXT NOT NULL",
        "optimizer TEXT NOT NULL",
        "config TEXT NOT NULL",
        "result TEXT NOT NULL",
        "wall_time {real} NOT NULL",
        "finished_at TEXT NOT NULL",
        "versions TEXT NOT NULL",
        "host TEXT NOT NULL",
    ),
    "sweeps": (
        "sweep_id TEXT PRIMARY KEY",
        "kind TEXT NOT NULL",
        "config TEXT NOT NULL",
        "created_at TEXT NOT NULL",
        "updated_at TEXT NOT NULL",
        "completed_at TEXT",
    ),
    "sweep_items": (
        "sweep_id TEXT NOT NULL",
        "item_id TEXT NOT NULL",
        "item_kind TEXT NOT NULL",
        "role TEXT NOT NULL",
        "problem TEXT NOT NULL",
        "optimizer TEXT NOT NULL",
        "PRIMARY KEY (sweep_id, item_id, role, optimizer)",
    ),
}
#: Tables every lab database has (a database made before APPLICATION_ID is recognised by them).
LAB_TABLES = frozenset(TABLES)


def schema_statements(real: str, integer: str) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` for every table, with the backend's numeric types."""
    return [
        f"CREATE TABLE IF NOT EXISTS {name} (\n    "
        + ",\n    ".join(column.format(real=real, int=integer) for column in columns)
        + "\n)"
        for name, columns in TABLES.items()
    ]


_RUN_JSON = ("config", "final", "curve", "versions")
_FIND_JSON = ("config", "result", "versions")


#: ``PRAGMA application_id`` of a lab database ("olab" in ASCII): SQLite's own way to mark a
#: file as belonging to one application, so the lab can tell its files from anyone else's.
#: PostgreSQL uses it as the lab's advisory-lock class.
APPLICATION_ID = 0x6F6C6162
_SQLITE_MAGIC = b"SQLite format 3\x00"


class UnreadableRow(ValueError):
    """A stored record that does not decode: damage inside a row (SQLite keeps no checksums)."""


def _guarded(method):
    """Turn the backend's database errors in a :class:`RunStore` method into a one-line
    :class:`LabError`, after retrying those the backend calls transient (every write is
    idempotent, so running one again after a lost connection changes nothing)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        for attempt in itertools.count():
            try:
                return method(self, *args, **kwargs)
            except UnreadableRow as exc:
                raise self._error(exc) from exc
            except self.database_errors as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._error(exc) from exc
                time.sleep(delay)

    return wrapper


def check_schema_version(version: Any, where: str, instead: str) -> None:
    """Refuse a store whose ``meta.schema_version`` is missing, unknown or newer than this code;
    ``where`` names the store, ``instead`` is the way out offered besides upgrading."""
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise LabError(
            f"{where} has an unknown schema version {version!r} (this optimlab writes "
            f"schema {SCHEMA_VERSION}): {instead}"
        )
    if number > SCHEMA_VERSION:
        raise LabError(
            f"{where} was written by a newer optimlab (schema {number}; this one reads "
            f"schema {SCHEMA_VERSION}): upgrade optimlab, or {instead}"
        )


class RunStore:
    """The queries every backend answers: runs, range tests, sweeps and their links.

    A backend provides :meth:`transaction` (a writer's transaction; what it yields has
    ``execute(sql, args)`` and ``executemany(sql, rows)``), :meth:`_rows` (a reader's query),
    :meth:`_error` (a database error as one line), :attr:`database_errors`, :attr:`location`
    (how messages name the store) and :attr:`optuna_url`. SQL here uses ``?`` placeholders and
    only what SQLite and PostgreSQL both understand (``INSERT … ON CONFLICT``).
    """

    #: The backend's database exceptions, caught by every query and turned into a LabError.
    database_errors: tuple[type[BaseException], ...] = ()
    #: Whether other processes, on other machines too, use the same store.
    shared = False
    location: str
    optuna_url: str

    # -- what a backend provides --------------------------------------------------------------
    def transaction(self):
        raise NotImplementedError

    def _rows(self, sql: str, args: tuple = ()) -> list[Mapping[str, Any]]:
        raise NotImplementedError

    def _error(self, exc: BaseException) -> LabError:
        raise NotImplementedError

    def _retry_delay(self, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before trying a failed query again, or ``None``: give up."""
        return None

    def search_lock(self, name: str):
        """A context in which only this process asks the search ``name`` for trials (a
        backend shared between machines serialises them; a local file needs nothing)."""
        return nullcontext()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _row(self, sql: str, args: tuple = ()) -> Mapping[str, Any] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # -- runs --------------------------------------------------------------------------------
    @_guarded
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._row("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else _decode(row, _RUN_JSON)

    @_guarded
    def put_run(self, record: dict[str, Any], links: Iterable[dict[str, str]] = ()) -> None:
        """Insert a finished run and its sweep links atomically (an existing run is kept)."""
        links = list(links)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, problem, optimizer, lr, seed, status, config,"
                " final, curve, wall_time, started_at, finished_at, versions, host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO NOTHING",
                (
                    record["run_id"],
                    record["config"]["problem"],
                    record["config"]["optimizer"],
                    record["config"]["hparams"].get("lr"),
                    record["config"]["seed"],
                    record["status"],
                    _dumps(record["config"]),
                    _dumps(record["final"]),
                    _dumps(record["curve"]),
                    record["wall_time"],
                    record["started_at"],
                    record["finished_at"],
                    _dumps(record["versions"]),
                    record["host"],
                ),
            )
            self._link(conn, record["run_id"], "run", links)

    @_guarded
    def problem_fingerprints(self, problem: str) -> list[dict[str, str] | None]:
        """The problem fingerprint of every stored run of ``problem`` (a problem key), ``None``
        for runs made without one."""
        rows = self._rows("SELECT config FROM runs WHERE problem = ?", (problem,))
        return [_decode(row, ("config",))["config"].get("problem_fingerprint") for row in rows]

    @_guarded
    def count_runs(self) -> int:
        return self._row("SELECT COUNT(*) AS n FROM runs")["n"]

    @_guarded
    def all_runs(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM runs ORDER BY finished_at")
        return [_decode(row, _RUN_JSON) for row in rows]

    # -- lr range tests ----------------------------------------------------------------------
    @_guarded
    def get_lr_find(self, find_id: str) -> dict[str, Any] | None:
        row = self._row("SELECT * FROM lr_finds WHERE find_id = ?", (find_id,))
        return None if row is None else _decode(row, _FIND_JSON)

    @_guarded
    def put_lr_find(self, record: dict[str, Any], links: Iterable[dict[str, str]] = ()) -> None:
        links = list(links)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO lr_finds (find_id, problem, optimizer, config, result,"
                " wall_time, finished_at, versions, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (find_id) DO NOTHING",
                (
                    record["find_id"],
                    record["config"]["problem"],
                    record["config"]["optimizer"],
                    _dumps(record["config"]),
                    _dumps(record["result"]),
                    record["wall_time"],
                    record["finished_at"],
                    _dumps(record["versions"]),
                    record["host"],
                ),
            )
            self._link(conn, record["find_id"], "lr_find", links)

    # -- sweeps ------------------------------------------------------------------------------
    @_guarded
    def begin_sweep(self, sweep_id: str, kind: str, config: dict[str, Any]) -> None:
        """Record a sweep (or touch it when it already exists: the command is resuming, or
        another worker runs it too)."""
        stamp = now()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sweeps (sweep_id, kind, config, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (sweep_id) DO UPDATE SET updated_at = excluded.updated_at",
                (sweep_id, kind, _dumps(config), stamp, stamp),
            )

    @_guarded
    def finish_sweep(self, sweep_id: str) -> None:
        stamp = now()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE sweeps SET completed_at = ?, updated_at = ? WHERE sweep_id = ?",
                (stamp, stamp, sweep_id),
            )

    @_guarded
    def link(self, item_id: str, item_kind: str, links: Iterable[dict[str, str]]) -> None:
        """Attach an existing run (found in the store, not recomputed) to sweeps."""
        links = list(links)
        with self.transaction() as conn:
            self._link(conn, item_id, item_kind, links)

    @staticmethod
    def _link(conn, item_id: str, item_kind: str, links: list[dict[str, str]]) -> None:
        if not links:
            return
        conn.executemany(
            "INSERT INTO sweep_items (sweep_id, item_id, item_kind, role, problem, optimizer)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (ln["sweep_id"], item_id, item_kind, ln["role"], ln["problem"], ln["optimizer"])
                for ln in links
            ],
        )

    @_guarded
    def get_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        """The sweep with this id or id prefix; a prefix that fits several raises LabError."""
        prefix = sweep_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._rows(
            "SELECT * FROM sweeps WHERE sweep_id = ? OR sweep_id LIKE ? ESCAPE '\\'"
            " ORDER BY updated_at DESC LIMIT 6",
            (sweep_id, prefix + "%"),
        )
        exact = [row for row in rows if row["sweep_id"] == sweep_id]
        if exact or len(rows) == 1:
            return _decode((exact or rows)[0], ("config",))
        if len(rows) > 1:
            ids = ", ".join(row["sweep_id"][:12] for row in rows[:5])
            raise LabError(f"sweep id '{sweep_id}' is ambiguous: it starts {ids}; give more of it")
        return None

    @_guarded
    def sweeps(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All sweeps, most recently updated first."""
        query, args = "SELECT * FROM sweeps", ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        rows = self._rows(query + " ORDER BY updated_at DESC", args)
        return [_decode(row, ("config",)) for row in rows]

    @_guarded
    def sweep_runs(self, sweep_id: str) -> list[dict[str, Any]]:
        """Runs of a sweep, each with its ``role`` and optimizer ``label`` from the link."""
        rows = self._rows(
            "SELECT runs.*, sweep_items.role AS role, sweep_items.optimizer AS label,"
            " sweep_items.problem AS problem_name"
            " FROM sweep_items JOIN runs ON runs.run_id = sweep_items.item_id"
            " WHERE sweep_items.sweep_id = ? AND sweep_items.item_kind = 'run'"
            " ORDER BY runs.finished_at, runs.run_id, sweep_items.role",
            (sweep_id,),
        )
        return [_decode(row, _RUN_JSON) for row in rows]

    @_guarded
    def sweep_lr_finds(self, sweep_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT lr_finds.*, sweep_items.optimizer AS label,"
            " sweep_items.problem AS problem_name"
            " FROM sweep_items JOIN lr_finds ON lr_finds.find_id = sweep_items.item_id"
            " WHERE sweep_items.sweep_id = ? AND sweep_items.item_kind = 'lr_find'"
            " ORDER BY lr_finds.finished_at, lr_finds.find_id",
            (sweep_id,),
        )
        return [_decode(row, _FIND_JSON) for row in rows]


class Store(RunStore):
    """A connection to ``<out_dir>/lab.db``. Cheap to open; one per process.

    All writes happen in ``BEGIN IMMEDIATE`` transactions. The database runs in WAL mode so
    ``optimlab report`` (a reader) never blocks a running sweep (the writer), and so that a
    killed writer leaves the file consistent.

    Opening checks the file before anything is written to it: a file of another application
    (or not SQLite at all), a damaged database (``PRAGMA quick_check``) or one written by a newer
    optimlab (``meta.schema_version``) raises :class:`LabError` saying what to do, and the file
    is left exactly as it was. ``read_only=True`` opens an existing database without writing
    anything to it (not even the schema), which also works in a directory the user cannot
    write.
    """

    database_errors = (sqlite3.DatabaseError,)

    def __init__(
        self, out_dir: str | Path, *, read_only: bool = False, optuna_url: str | None = None
    ) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        self.location = str(self.path)
        self.read_only = read_only
        #: Optuna's RDB storage URL: this same file unless a ``sqlite://`` URL says otherwise.
        self.optuna_url = optuna_url or f"sqlite:///{self.path.resolve()}"
        conn = None
        try:
            conn = self._open_read_only() if read_only else self._open_for_writing()
            self._check(conn)
            if read_only and os.access(self.out_dir, os.W_OK) and os.access(self.path, os.W_OK):
                # A lab database where we may write: an ordinary connection, that writes
                # nothing but, closing last, tidies the WAL files away as the writers' do.
                conn.close()
                conn = None
                conn = self._connect(str(self.path))
            elif not read_only:
                conn.execute("PRAGMA journal_mode=WAL")
            self._conn = conn
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._error(exc) from exc
            if isinstance(exc, OSError):
                reason = exc.strerror or type(exc).__name__
                raise LabError(f"cannot open the lab database '{self.path}': {reason}") from None
            raise

    # -- opening and checking ----------------------------------------------------------------
    @staticmethod
    def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(target, timeout=60.0, isolation_level=None, uri=uri)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    def _read_header(self) -> bytes | None:
        """The first bytes of the file, or ``None`` when there is no file or it is empty."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as handle:
            return handle.read(len(_SQLITE_MAGIC)) or None

    def _refuse_non_sqlite(self, header: bytes | None) -> None:
        if header is not None and header != _SQLITE_MAGIC:
            raise LabError(
                f"'{self.path}' is not a lab database (not even an SQLite file); the lab leaves "
                "it alone: move it aside or use another --out"
            )

    def _open_for_writing(self) -> sqlite3.Connection:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        header = self._read_header()
        self._refuse_non_sqlite(header)
        conn = self._connect(str(self.path))
        if header is None:
            self._create_schema(conn)
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise LabError(f"no lab database in '{self.out_dir}' (run `optimlab compare` first)")
        self._refuse_non_sqlite(self._read_header())
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = self._connect(uri, uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # A WAL database needs its -shm file, which a read-only directory cannot hold;
            # nobody can be writing there, so reading the file as it is is safe.
            conn.close()
            conn = self._connect(uri + "&immutable=1", uri=True)
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Mark a new, empty file as a lab database and create the tables, in one transaction
        (a crash leaves either an empty file or a complete schema)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it meanwhile (two commands started together).
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables == 0 and self._application_id(conn) == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                for statement in schema_statements(real="REAL", integer="INTEGER"):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _application_id(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA application_id").fetchone()[0])

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuse a database that is not the lab's, is damaged, or is newer than this code."""
        app = self._application_id(conn)
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if app != APPLICATION_ID and (app != 0 or not tables >= LAB_TABLES):
            others = ", ".join(sorted(tables - LAB_TABLES)[:5]) or "no tables"
            raise LabError(
                f"'{self.path}' is not a lab database (it holds {others}); the lab leaves it "
                "alone: use another --out, or move the file aside"
            )
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            lines = [ln for p in problems for ln in p.splitlines() if not ln.startswith("***")]
            raise self._damaged("; ".join(lines) or "quick_check failed")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        check_schema_version(
            row[0] if row is not None else None, f"'{self.path}'", "use another --out"
        )
        if app == 0 and not self.read_only:
            # A lab database from before the application id existed: mark it now.
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _damaged(self, detail: str) -> LabError:
        return LabError(
            f"the lab database '{self.path}' is damaged ({detail}): move it aside "
            f"(mv {self.path} {self.path}.damaged) and run the command again, which recomputes "
            f"its runs; `sqlite3 {self.path}.damaged .recover` may salvage them"
        )

    def _error(self, exc: BaseException) -> LabError:
        """A one-line message for an SQLite error, saying what to do about it."""
        text = str(exc)
        lowered = text.lower()
        if isinstance(exc, UnreadableRow) or any(
            w in lowered for w in ("malformed", "not a database", "corrupt", "decode")
        ):
            return self._damaged(text)
        if "locked" in lowered or "busy" in lowered:
            return LabError(
                f"the lab database '{self.path}' stayed locked by another process for a minute "
                f"({text}); try again when that command has finished"
            )
        if "readonly" in lowered or "read-only" in lowered:
            return LabError(f"cannot write to the lab database '{self.path}': {text}")
        return LabError(f"cannot use the lab database '{self.path}': {text}")

    # -- plumbing ----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        self._conn.close()


def _dumps(value: Any) -> str:
    # NaN and inf are legal here (Python's json reads them back); a diverged run has them.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _decode(row: Mapping[str, Any], json_columns: tuple[str, ...]) -> dict[str, Any]:
    record = dict(row)
    for column in json_columns:
        if column in record and record[column] is not None:
            try:
                record[column] = json.loads(record[column])
            except ValueError as exc:
                # SQLite keeps no checksums: garbage inside a row shows up here.
                raise UnreadableRow(f"database corrupt: unreadable {column}: {exc}") from exc
    return record
