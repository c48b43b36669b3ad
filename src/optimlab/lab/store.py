"""The lab's SQLite store: one database file per output directory (``lab.db``).

Every finished run is one row of ``runs``, written in its own transaction together with its
links to the sweep that asked for it, so a crash (even ``kill -9``) loses at most the runs that
were in flight. Runs are keyed by a hash of their full configuration and seed
(:func:`optimlab.lab.runner.run_id`): re-running a command finds its finished runs here and
does not repeat them.

Tables:

* ``runs``: configuration (JSON), seed, final numbers (JSON), a sampled loss curve with step
  diagnostics (JSON), wall time, timestamps, versions (python, torch, optimlab), host;
* ``lr_finds``: learning-rate range tests, same idea;
* ``sweeps``: one row per command invocation's plan (``compare``, ``trajectories``, ``tune``),
  keyed by a hash of its settings so that the same command resumes the same sweep;
* ``sweep_items``: which runs and lr-range tests belong to a sweep and in which role
  (``tune`` for tuning trials, ``final`` for the seed reruns of the best setting,
  ``lr_find``).

Optuna keeps its studies in the same file through its own RDB storage (``sqlite:///…``), in
its own tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError
from optimlab.lab.identity import now

DB_NAME = "lab.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    lr REAL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    final TEXT NOT NULL,
    curve TEXT NOT NULL,
    wall_time REAL NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    versions TEXT NOT NULL,
    host TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lr_finds (
    find_id TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT NOT NULL,
    wall_time REAL NOT NULL,
    finished_at TEXT NOT NULL,
    versions TEXT NOT NULL,
    host TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE TABLE IF NOT EXISTS sweep_items (
    sweep_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    item_kind TEXT NOT NULL,
    role TEXT NOT NULL,
    problem TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    PRIMARY KEY (sweep_id, item_id, role, optimizer)
);
"""

_RUN_JSON = ("config", "final", "curve", "versions")
_FIND_JSON = ("config", "result", "versions")


class Store:
    """A connection to ``<out_dir>/lab.db``. Cheap to open; one per process.

    All writes happen in ``BEGIN IMMEDIATE`` transactions. The database runs in WAL mode so
    ``optimlab report`` (a reader) never blocks a running sweep (the writer), and so that a
    killed writer leaves the file consistent.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=60000")
        except sqlite3.DatabaseError as exc:
            raise LabError(f"cannot open the lab database '{self.path}': {exc}") from None
        except OSError as exc:
            raise LabError(f"cannot open the lab database '{self.path}': {exc.strerror}") from None
        self._create_schema()

    # -- plumbing ----------------------------------------------------------------------------
    def _create_schema(self) -> None:
        try:
            # executescript commits on its own; CREATE ... IF NOT EXISTS is idempotent, so two
            # processes creating the schema at once is harmless.
            self._conn.executescript(_SCHEMA)
            with self.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except sqlite3.DatabaseError as exc:
            raise LabError(f"cannot use the lab database '{self.path}': {exc}") from None

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

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def optuna_url(self) -> str:
        """Optuna's RDB storage URL for this same file."""
        return f"sqlite:///{self.path.resolve()}"

    # -- runs --------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _decode(row, _RUN_JSON)

    def put_run(self, record: dict[str, Any], links: Iterable[dict[str, str]] = ()) -> None:
        """Insert a finished run and its sweep links atomically (an existing run is kept)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, problem, optimizer, lr, seed, status, config,"
                " final, curve, wall_time, started_at, finished_at, versions, host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    def count_runs(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def all_runs(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM runs ORDER BY finished_at").fetchall()
        return [_decode(row, _RUN_JSON) for row in rows]

    # -- lr range tests ----------------------------------------------------------------------
    def get_lr_find(self, find_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM lr_finds WHERE find_id = ?", (find_id,)).fetchone()
        return None if row is None else _decode(row, _FIND_JSON)

    def put_lr_find(self, record: dict[str, Any], links: Iterable[dict[str, str]] = ()) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO lr_finds (find_id, problem, optimizer, config, result,"
                " wall_time, finished_at, versions, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    def begin_sweep(self, sweep_id: str, kind: str, config: dict[str, Any]) -> None:
        """Record a sweep (or touch it when it already exists: the command is resuming)."""
        stamp = now()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sweeps (sweep_id, kind, config, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(sweep_id) DO UPDATE SET updated_at = excluded.updated_at",
                (sweep_id, kind, _dumps(config), stamp, stamp),
            )

    def finish_sweep(self, sweep_id: str) -> None:
        stamp = now()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE sweeps SET completed_at = ?, updated_at = ? WHERE sweep_id = ?",
                (stamp, stamp, sweep_id),
            )

    def link(self, item_id: str, item_kind: str, links: Iterable[dict[str, str]]) -> None:
        """Attach an existing run (found in the store, not recomputed) to sweeps."""
        with self.transaction() as conn:
            self._link(conn, item_id, item_kind, links)

    @staticmethod
    def _link(conn, item_id: str, item_kind: str, links: Iterable[dict[str, str]]) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO sweep_items (sweep_id, item_id, item_kind, role, problem,"
            " optimizer) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (ln["sweep_id"], item_id, item_kind, ln["role"], ln["problem"], ln["optimizer"])
                for ln in links
            ],
        )

    def get_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT * FROM sweeps WHERE sweep_id = ? OR sweep_id LIKE ?", (sweep_id, sweep_id + "%")
        ).fetchone()
        return None if row is None else _decode(row, ("config",))

    def sweeps(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All sweeps, most recently updated first."""
        query, args = "SELECT * FROM sweeps", ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        rows = self._conn.execute(query + " ORDER BY updated_at DESC", args).fetchall()
        return [_decode(row, ("config",)) for row in rows]

    def sweep_runs(self, sweep_id: str) -> list[dict[str, Any]]:
        """Runs of a sweep, each with its ``role`` and optimizer ``label`` from the link."""
        rows = self._conn.execute(
            "SELECT runs.*, sweep_items.role AS role, sweep_items.optimizer AS label,"
            " sweep_items.problem AS problem_name"
            " FROM sweep_items JOIN runs ON runs.run_id = sweep_items.item_id"
            " WHERE sweep_items.sweep_id = ? AND sweep_items.item_kind = 'run'"
            " ORDER BY runs.finished_at",
            (sweep_id,),
        ).fetchall()
        return [_decode(row, _RUN_JSON) for row in rows]

    def sweep_lr_finds(self, sweep_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT lr_finds.*, sweep_items.optimizer AS label,"
            " sweep_items.problem AS problem_name"
            " FROM sweep_items JOIN lr_finds ON lr_finds.find_id = sweep_items.item_id"
            " WHERE sweep_items.sweep_id = ? AND sweep_items.item_kind = 'lr_find'"
            " ORDER BY lr_finds.finished_at",
            (sweep_id,),
        ).fetchall()
        return [_decode(row, _FIND_JSON) for row in rows]


def _dumps(value: Any) -> str:
    # NaN and inf are legal here (Python's json reads them back); a diverged run has them.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _decode(row: sqlite3.Row, json_columns: tuple[str, ...]) -> dict[str, Any]:
    record = dict(row)
    for column in json_columns:
        if column in record and record[column] is not None:
            record[column] = json.loads(record[column])
    return record
