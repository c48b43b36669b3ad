"""lab.db files the lab did not write, or cannot trust: one line, exit status 2, and the file
is left exactly as it was."""

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from optimlab.lab.cli import main
from optimlab.lab.store import APPLICATION_ID, SCHEMA_VERSION

#: Every command that opens OUT/lab.db, with arguments small enough to finish in a second.
TINY = ["-p", "ill_conditioned", "-o", "sgd", "--budget", "1", "--seeds", "1", "--steps", "5"]


@pytest.fixture(autouse=True)
def _tables_at_their_default_width(monkeypatch):
    # Tables follow COLUMNS when it is set, and pytest-xdist's workers inherit COLUMNS=80.
    monkeypatch.delenv("COLUMNS", raising=False)


COMMANDS = {
    "compare": ["compare", *TINY, "--no-lr-find", "--workers", "1", "--no-progress"],
    "tune": ["tune", "-p", "ill_conditioned", "-o", "sgd", "--budget", "1", "--steps", "5"],
    "lr-find": ["lr-find", "-p", "ill_conditioned", "-o", "sgd", "--steps", "5"],
    "report": ["report"],
    "report --list": ["report", "--list"],
}


@pytest.fixture(scope="module")
def lab_db(tmp_path_factory):
    """A real lab.db holding one finished sweep."""
    out = tmp_path_factory.mktemp("made")
    argv = [*COMMANDS["compare"], "--no-report", "--out", str(out)]
    assert main(argv) == 0
    return out / "lab.db"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, argv, out):
    code = main([*argv, "--out", str(out)])
    return code, capsys.readouterr().err


def _refused_untouched(capsys, db: Path, expected: str) -> None:
    """Every command refuses ``db`` with ``expected`` and leaves it byte for byte as it was."""
    before = _digest(db)
    for name, argv in COMMANDS.items():
        code, err = _run(capsys, argv, db.parent)
        assert code == 2, name
        assert expected in err, (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err, name
        assert _digest(db) == before, f"{name} modified {db}"


def _another_applications_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.close()


def test_a_database_of_another_application_is_left_alone(capsys, tmp_path):
    db = tmp_path / "lab.db"
    _another_applications_db(db)
    _refused_untouched(capsys, db, f"'{db}' is not a lab database (it holds customers)")
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"customers"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.db"]


def test_a_file_that_is_not_sqlite_is_left_alone(capsys, tmp_path):
    db = tmp_path / "lab.db"
    db.write_text("my lab notebook\n")
    _refused_untouched(capsys, db, "is not a lab database (not even an SQLite file)")


def test_an_empty_sqlite_database_is_not_taken_over(capsys, tmp_path):
    db = tmp_path / "lab.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 7")  # a real, empty SQLite file
    conn.close()
    _refused_untouched(capsys, db, "is not a lab database (it holds no tables)")


def test_garbage_in_the_middle_of_the_database(capsys, tmp_path, lab_db):
    db = tmp_path / "lab.db"
    shutil.copy(lab_db, db)
    pages = db.stat().st_size // 4096
    with open(db, "r+b") as handle:  # overwrite a whole page in the middle
        handle.seek(pages // 2 * 4096)
        handle.write(b"\xff" * 4096)
    _refused_untouched(capsys, db, f"the lab database '{db}' is damaged")
    _, err = _run(capsys, ["report"], tmp_path)
    assert f"move it aside (mv {db} {db}.damaged) and run the command again" in err


def test_garbage_inside_a_stored_row(capsys, tmp_path, lab_db):
    # SQLite keeps no checksums: bytes damaged inside a row reach the lab as bad JSON.
    db = tmp_path / "lab.db"
    shutil.copy(lab_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET final = '{\"diverged\": fal\x01se'")
    conn.close()
    code, err = _run(capsys, ["report"], tmp_path)
    assert code == 2 and "is damaged (database corrupt: unreadable final" in err


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (str(SCHEMA_VERSION + 1), f"was written by a newer optimlab (schema {SCHEMA_VERSION + 1};"),
        ("two", "has an unknown schema version 'two'"),
    ],
)
def test_the_schema_version_is_checked(capsys, tmp_path, lab_db, version, expected):
    db = tmp_path / "lab.db"
    shutil.copy(lab_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.close()
    _refused_untouched(capsys, db, expected)


def test_a_lab_database_from_before_the_application_id_still_opens(capsys, tmp_path, lab_db):
    db = tmp_path / "lab.db"
    shutil.copy(lab_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA application_id = 0")
    conn.close()
    assert main([*COMMANDS["report --list"], "--out", str(tmp_path)]) == 0
    assert "ill_conditioned" in capsys.readouterr().out
    assert main([*COMMANDS["compare"], "--out", str(tmp_path)]) == 0  # a writer marks it
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def _as_reader_only(directory: Path) -> list[str]:
    """A command prefix that runs as someone who may read ``directory`` but not write it.

    Permissions do not stop root, so as root the command runs as 'nobody' (util-linux's
    setpriv); anyone else gets the directory made read-only.
    """
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a directory read-only")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_report_list_works_in_a_read_only_directory(lab_db):
    # Outside pytest's private temporary directory, so that 'nobody' can reach it.
    parent = Path(tempfile.mkdtemp(prefix="optimlab-ro-"))
    try:
        out = parent / "out"
        out.mkdir()
        shutil.copy(lab_db, out / "lab.db")
        parent.chmod(0o755)
        out.chmod(0o755)
        (out / "lab.db").chmod(0o644)
        before = _digest(out / "lab.db")
        prefix = _as_reader_only(out)
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        env.update(OMP_NUM_THREADS="1", HOME=str(parent))
        cmd = [*prefix, sys.executable, "-m", "optimlab", "report", "--out", str(out)]
        listed = subprocess.run(
            [*cmd, "--list"], capture_output=True, text=True, env=env, timeout=120
        )
        assert listed.returncode == 0, listed.stderr
        assert "ill_conditioned" in listed.stdout and listed.stderr == ""
        rebuilt = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert rebuilt.returncode == 2
        assert rebuilt.stderr == (
            f"optimlab: error: cannot write to output directory '{out}': Permission denied\n"
        )
        assert _digest(out / "lab.db") == before
        assert sorted(p.name for p in out.iterdir()) == ["lab.db"]
    finally:
        os.chmod(parent / "out", 0o755)
        shutil.rmtree(parent)


def test_an_ambiguous_sweep_prefix_is_refused(capsys, tmp_path, lab_db):
    shutil.copy(lab_db, tmp_path / "lab.db")
    assert main([*COMMANDS["compare"], "-o", "adam", "--out", str(tmp_path), "--no-report"]) == 0
    capsys.readouterr()
    code, err = _run(capsys, ["report", "--sweep", ""], tmp_path)
    assert code == 2 and "sweep id '' is ambiguous" in err
    code, err = _run(capsys, ["report", "--sweep", "%"], tmp_path)
    assert code == 2 and "no sweep '%'" in err
