"""The lab's search and run store shared through a real PostgreSQL server.

Two ``optimlab tune`` processes against one ``--storage postgresql://…`` URL (two machines, as
far as the lab can tell: each has its own --out), one killed with SIGKILL in the middle of a
trial: the search still ends with exactly its budget of finished trials, every finished trial
has its run in the shared store, the killed trial is run again, and a third process builds
the report of all of it. Then the store's own rules, as for lab.db: writes are idempotent,
a schema the lab did not create is left alone, a newer store is refused, bad URLs and
passwords are one line.

The server is a throwaway one per test session (tests/postgres_server.py); these tests skip,
saying why, only where PostgreSQL's programs are not installed and could not be.
"""

import datetime
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from optimlab.lab.cli import main
from optimlab.lab.errors import LabError
from optimlab.lab.storage import open_store, parse_storage, redact

from postgres_server import LAB_PASSWORD

BUDGET = 5
#: Runs of a second or more, so that a worker can be killed well inside one.
STEPS = "3000"
TUNE = ["tune", "-p", "linear_regression", "-o", "adam", "--steps", STEPS, "--budget", str(BUDGET)]
FAST = ["--workers", "1", "--no-progress", "--grace-period", "2", "--no-report"]


def _cli(argv, out):
    return [sys.executable, "-m", "optimlab", *argv, "--out", str(out)]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _trials(postgres, db):
    """``{number: (state, params, user attrs, system attrs)}`` of every trial in ``db``,
    read with SQL (no Optuna cache in the way); empty before Optuna made its tables."""
    import json

    import psycopg

    try:
        rows = postgres.admin(
            "SELECT t.number, t.state, "
            " (SELECT json_object_agg(p.param_name, p.param_value) FROM trial_params p"
            "  WHERE p.trial_id = t.trial_id),"
            " (SELECT json_object_agg(u.key, u.value_json) FROM trial_user_attributes u"
            "  WHERE u.trial_id = t.trial_id),"
            " (SELECT json_object_agg(s.key, s.value_json) FROM trial_system_attributes s"
            "  WHERE s.trial_id = t.trial_id)"
            " FROM trials t ORDER BY t.number",
            dbname=db,
        )
    except psycopg.errors.UndefinedTable:
        return {}

    def attrs(values):
        return {k: json.loads(v) for k, v in (values or {}).items()}

    return {
        n: (state, params or {}, attrs(user), attrs(system))
        for n, state, params, user, system in rows
    }


def _age(postgres, db, number):
    """Seconds since trial ``number`` started (Optuna writes the local time of the worker,
    which runs on this machine)."""
    [(start,)] = postgres.admin(
        "SELECT datetime_start FROM trials WHERE number = %s", number, dbname=db
    )
    return (datetime.datetime.now() - start).total_seconds()


def _stored_runs(postgres, db):
    """``(run_id, finished_at, wall_time)`` of every stored run; empty before the store exists."""
    import psycopg

    try:
        return postgres.admin(
            "SELECT run_id, finished_at, wall_time FROM optimlab.runs ORDER BY run_id", dbname=db
        )
    except psycopg.errors.UndefinedTable:
        return []


@pytest.mark.slow
def test_two_workers_one_killed_mid_trial_finish_the_budget_and_lose_nothing(postgres, tmp_path):
    db = postgres.create_database()
    url = postgres.url(db)
    cmd_a = _cli([*TUNE, *FAST, "--storage", url], tmp_path / "machine-a")
    cmd_b = _cli([*TUNE, *FAST, "--storage", url], tmp_path / "machine-b")
    a = subprocess.Popen(cmd_a, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    b = subprocess.Popen(cmd_b, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Kill A while it runs a trial (its parameters drawn, its run started a moment ago),
        # once the search is under way (a trial has finished).
        deadline = time.monotonic() + 120
        killed = None
        while time.monotonic() < deadline and a.poll() is None:
            trials = _trials(postgres, db)
            fresh = [
                n
                for n, (state, params, user, _) in trials.items()
                if state == "RUNNING"
                and user.get("pid") == a.pid
                and "lr" in params
                and _age(postgres, db, n) < 0.3
            ]
            if fresh and any(state == "COMPLETE" for state, *_ in trials.values()):
                a.send_signal(signal.SIGKILL)
                killed = fresh[0]
                break
            time.sleep(0.01)
        a.wait(timeout=30)
        assert killed is not None and a.returncode == -signal.SIGKILL, a.stderr.read().decode()
        kept = _stored_runs(postgres, db)
        out, err = b.communicate(timeout=180)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert b.returncode == 0, err.decode()

    trials = _trials(postgres, db)
    states = [state for state, *_ in trials.values()]
    assert states.count("COMPLETE") == BUDGET
    assert "RUNNING" not in states and "WAITING" not in states
    # The killed trial was failed for its silence and run again, with its parameters, to the end.
    state, params, _, _ = trials[killed]
    assert state == "FAIL", (killed, trials, err.decode())
    [rerun] = [n for n, (_, _, _, system) in trials.items() if system.get("failed_trial") == killed]
    assert trials[rerun][0] == "COMPLETE" and trials[rerun][1] == params
    # Every other failed trial (a worker taken for dead) was run again too.
    for number, (state, *_) in trials.items():
        if state == "FAIL":
            assert any(s.get("failed_trial") == number for *_, s in trials.values())

    # Every finished trial has its run in the shared store, linked to the sweep as tuning run.
    completed = {user["run_id"] for state, _, user, _ in trials.values() if state == "COMPLETE"}
    tuned = postgres.admin(
        "SELECT DISTINCT item_id FROM optimlab.sweep_items WHERE role = 'tune'", dbname=db
    )
    assert {row[0] for row in tuned} == completed and len(completed) == BUDGET
    # What had finished before the kill is there, unchanged (same timestamps: not recomputed).
    assert set(kept) <= set(_stored_runs(postgres, db))
    # The runs went to PostgreSQL, not to a lab.db on either "machine".
    assert not (tmp_path / "machine-a" / "lab.db").exists()
    assert not (tmp_path / "machine-b" / "lab.db").exists()
    assert "Runs stored in postgresql://lab:***@/" in out.decode()
    assert LAB_PASSWORD not in out.decode() + err.decode()

    # A third machine builds the report of the whole search from the shared store.
    report = tmp_path / "machine-c"
    assert main(["report", "--storage", url, "--kind", "tune", "--out", str(report)]) == 0
    assert (report / "tune.html").stat().st_size > 1000
    from optimlab.lab import Results

    [cell] = Results.load(report, storage=url).summaries()
    assert cell.tuning_trials == BUDGET

    # The killed worker, started again, finds the search done: no new trial, no new run.
    before = _stored_runs(postgres, db)
    assert main([*TUNE, *FAST, "--storage", url, "--out", str(tmp_path / "machine-a")]) == 0
    assert _trials(postgres, db) == trials and _stored_runs(postgres, db) == before


def test_compare_with_optuna_shares_runs_and_range_tests_between_machines(postgres, tmp_path):
    from optimlab.lab import compare

    url = postgres.url(postgres.create_database())
    kwargs = dict(
        search="optuna",
        budget=3,
        seeds=2,
        steps=20,
        storage=url,
        workers=1,
        grace_period=2,
        report=False,
    )
    first = compare(["rosenbrock"], ["sgd", "adam"], out_dir=tmp_path / "a", **kwargs)
    assert [c.tuning_trials for c in first.summaries()] == [3, 3]
    with open_store(tmp_path / "unused", url, read_only=True) as store:
        stored = store.all_runs()
        assert len(store.sweep_lr_finds(first.sweep_id)) == 2
    # The same command on another machine finds every run and range test: nothing to do.
    second = compare(["rosenbrock"], ["sgd", "adam"], out_dir=tmp_path / "b", **kwargs)
    assert second.sweep_id == first.sweep_id
    with open_store(tmp_path / "unused", url, read_only=True) as store:
        assert store.all_runs() == stored
    assert [c.hparams for c in second.summaries()] == [c.hparams for c in first.summaries()]
    assert not (tmp_path / "a" / "lab.db").exists() and not (tmp_path / "unused").exists()


def _record(run_id, loss, finished="2026-01-01T00:00:00"):
    config = {"problem": "p", "optimizer": "adam", "hparams": {"lr": 0.1}, "seed": 0}
    return {
        "run_id": run_id,
        "config": config,
        "status": "ok",
        "final": {"train_loss": loss, "diverged": loss != loss},
        "curve": {"loss": [1.0, float("inf"), loss]},
        "wall_time": 0.5,
        "started_at": finished,
        "finished_at": finished,
        "versions": {"optimlab": "0"},
        "host": "h",
    }


def test_store_writes_once_and_reads_back_what_sqlite_would(postgres, tmp_path):
    url = postgres.url(postgres.create_database())
    link = {"sweep_id": "abc123", "role": "tune", "problem": "p", "optimizer": "adam"}
    with open_store(tmp_path, url) as store:
        assert store.shared and store.optuna_url.startswith("postgresql+psycopg://")
        store.begin_sweep("abc123", "tune", {"problems": ["p"]})
        store.put_run(_record("r1", float("nan")), [link])
        # A second worker finishing the same run at the same time changes nothing.
        store.put_run(_record("r1", 0.25, finished="2026-02-02T00:00:00"), [link])
        store.link("r1", "run", [{**link, "role": "final"}])
        store.finish_sweep("abc123")
    with open_store(tmp_path, url, read_only=True) as reader:
        run = reader.get_run("r1")
        assert run["finished_at"] == "2026-01-01T00:00:00" and run["final"]["diverged"]
        assert run["curve"]["loss"][1] == float("inf") and run["lr"] == 0.1
        assert [r["role"] for r in reader.sweep_runs("abc123")] == ["final", "tune"]
        assert reader.get_sweep("abc")["completed_at"] is not None
        assert reader.get_sweep("%") is None and reader.count_runs() == 1
    assert not any(tmp_path.iterdir())  # nothing written beside the database


def test_workers_starting_together_create_the_store_once(postgres, tmp_path):
    db = postgres.create_database()
    url = postgres.url(db)
    errors = []

    def open_and_close():
        try:
            open_store(tmp_path, url).close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert postgres.admin("SELECT key, value FROM optimlab.meta ORDER BY key", dbname=db) == [
        ("application", "optimlab"),
        ("schema_version", "1"),
    ]


def _one_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_schema_of_another_application_is_left_alone(postgres, capsys, tmp_path):
    db = postgres.create_database()
    postgres.admin("CREATE SCHEMA optimlab AUTHORIZATION lab", dbname=db)
    postgres.admin("CREATE TABLE optimlab.customers (name text)", dbname=db)
    postgres.admin("INSERT INTO optimlab.customers VALUES ('Ada')", dbname=db)
    url = postgres.url(db)
    for argv in (
        [*TUNE, "--steps", "5", *FAST, "--storage", url],
        ["report", "--list", "--storage", url],
    ):
        err = _one_line(capsys, [*argv, "--out", str(tmp_path)])
        assert "the schema 'optimlab' in postgresql://lab:***@/" in err
        assert "is not the lab's (it holds customers); the lab leaves it alone" in err
    tables = postgres.admin(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'optimlab'", dbname=db
    )
    assert tables == [("customers",)]
    assert postgres.admin("SELECT name FROM optimlab.customers", dbname=db) == [("Ada",)]


def test_a_store_of_a_newer_optimlab_is_refused(postgres, tmp_path):
    db = postgres.create_database()
    url = postgres.url(db)
    open_store(tmp_path, url).close()
    postgres.admin("UPDATE optimlab.meta SET value = '2' WHERE key = 'schema_version'", dbname=db)
    with pytest.raises(LabError, match=r"was written by a newer optimlab \(schema 2;"):
        open_store(tmp_path, url)


def test_a_damaged_row_is_one_line(postgres, capsys, tmp_path):
    db = postgres.create_database()
    url = postgres.url(db)
    with open_store(tmp_path, url) as store:
        store.begin_sweep("abc123", "tune", {"problems": ["p"]})
    postgres.admin("UPDATE optimlab.sweeps SET config = '{\"problems\": [' ", dbname=db)
    err = _one_line(capsys, ["report", "--list", "--storage", url, "--out", str(tmp_path)])
    assert "is damaged (database corrupt: unreadable config" in err


def test_reading_a_database_without_a_store_creates_nothing(postgres, capsys, tmp_path):
    db = postgres.create_database()
    err = _one_line(capsys, ["report", "--storage", postgres.url(db), "--out", str(tmp_path)])
    assert "no lab store in postgresql://lab:***@/" in err
    assert postgres.admin("SELECT 1 FROM pg_namespace WHERE nspname = 'optimlab'", dbname=db) == []


def test_connection_mistakes_are_one_line_without_the_password(postgres, capsys, tmp_path):
    db = postgres.create_database()
    wrong = postgres.url(db, password="not-the-password")
    err = _one_line(capsys, [*TUNE, *FAST, "--storage", wrong, "--out", str(tmp_path)])
    assert "cannot connect to the PostgreSQL database postgresql://lab:***@/" in err
    assert "password authentication failed" in err and "not-the-password" not in err
    nowhere = postgres.url(db).split("?")[0] + f"?host={tmp_path}"
    err = _one_line(capsys, [*TUNE, *FAST, "--storage", nowhere, "--out", str(tmp_path)])
    assert "cannot connect to the PostgreSQL database" in err and LAB_PASSWORD not in err


def test_a_role_that_may_not_create_the_schema_is_told_what_it_needs(postgres, capsys, tmp_path):
    db = postgres.create_database(owner="postgres")  # the lab's role may connect, not create
    err = _one_line(capsys, [*TUNE, *FAST, "--storage", postgres.url(db), "--out", str(tmp_path)])
    assert "permission denied" in err and "role must own the database" in err


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("mysql+pymysql://u:pw@db/optuna", "the lab shares its runs only through PostgreSQL"),
        ("postgresql://u:pw@db", "names no database"),
        ("not a url", "is not a database URL"),
        ("", "must be a database URL"),
    ],
)
def test_storage_urls_the_lab_cannot_share_runs_through(capsys, tmp_path, storage, expected):
    err = _one_line(capsys, [*TUNE, *FAST, "--storage", storage, "--out", str(tmp_path)])
    assert expected in err and ":pw@" not in err
    assert not any(tmp_path.iterdir())


def test_storage_urls_are_normalised_and_shown_without_secrets():
    assert parse_storage(None) is None
    assert parse_storage("postgres://u:p@h:5433/d") == "postgresql+psycopg://u:p@h:5433/d"
    assert parse_storage("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert parse_storage("sqlite:///x.db") == "sqlite:///x.db"
    assert redact("postgresql://u:p%40ss@h/d?sslmode=require") == (
        "postgresql://u:***@h/d?sslmode=require"
    )
    assert redact("postgresql://u@/d?host=/run/pg&password=p") == (
        "postgresql://u@/d?host=/run/pg&password=***"
    )
