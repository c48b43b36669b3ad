"""A sweep killed with SIGKILL loses only the runs in flight; running it again finishes it
without recomputing what was already stored."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

# A range far below both optimizers' best learning rates: each grid of 3 grows past its top
# edge, one point at a time, by the full --grid-extend of 3. 2 optimizers × (3 + 3 tuning
# runs + 2 more seeds) = 16 runs of a few tenths of a second each; the kill may land while a
# grid is growing, and the resumed sweep must grow it the same way.
ARGS = [
    "compare",
    "-p",
    "linear_regression",
    "-o",
    "sgd",
    "adam",
    "--budget",
    "3",
    "--lr-range",
    "1e-4,1e-3",
    "--grid-extend",
    "3",
    "--seeds",
    "3",
    "--steps",
    "300",
    "--no-lr-find",
    "--no-report",
    "--no-progress",
]
TOTAL_RUNS = 16


def _rows(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT run_id, finished_at, wall_time FROM runs").fetchall()


def _count(db):
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:  # the database or its tables do not exist yet
        return 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigkill_mid_sweep_then_resume(tmp_path, workers):
    out = tmp_path / "out"
    db = out / "lab.db"
    cmd = [sys.executable, "-m", "optimlab", *ARGS, "--workers", workers, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _count(db) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()

    kept = _rows(db)
    assert 1 <= len(kept) < TOTAL_RUNS, "the sweep must be interrupted in the middle"

    finished = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    after = _rows(db)
    assert len(after) == TOTAL_RUNS
    # The runs finished before the kill are the same rows: same ids, same timestamps and wall
    # times, i.e. not recomputed.
    assert set(kept) <= set(after)

    # Both grids grew by their whole extension, the same as an uninterrupted sweep would.
    from optimlab.lab import Results

    cells = Results.load(out).summaries()
    assert [c.lr_grid_added for c in cells] == [{"low": 0, "high": 3}] * 2

    # A third run of the same command has nothing left to do.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and _rows(db) == after
