"""Runs know what they ran: an edited user problem runs again instead of returning stale
numbers, and the report says the old runs were not reused."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from optimlab.lab.cli import main
from optimlab.lab.errors import LabError
from optimlab.lab.fingerprint import built_digest, check_unchanged, problem_fingerprint
from optimlab.lab.problem_lookup import resolve_problem
from optimlab.lab.protocol import plan_sweep
from optimlab.lab.runner import make_run_config

PROBLEM = """
import pathlib

import torch
import torch.nn.functional as F
from optimlab.lab.problems import Problem

HERE = pathlib.Path(__file__).parent


class Instance:
    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(64, 3, generator=g)
        w = torch.tensor([float(v) for v in (HERE / "weights.txt").read_text().split()])
        self.y = self.x @ w
        self.model = torch.nn.Linear(3, 1)

    def train_loss(self, step):
        return LOSS(self.model(self.x).squeeze(1), self.y)

    @torch.no_grad()
    def evaluate(self):
        return {"train_loss": LOSS(self.model(self.x).squeeze(1), self.y).item()}


LOSS = F.mse_loss


def tiny():
    return Problem(name="tiny", description="3-D least squares", kind="regression",
                   steps=10, quick_steps=5, batch_size=None, target=1e-3, metric=None,
                   default_lr_range=(1e-3, 1.0), build=Instance)
"""

ARGS = ["-o", "sgd", "adam", "--budget", "2", "--seeds", "1", "--no-lr-find"]
ARGS += ["--grid-extend", "0", "--workers", "1", "--no-progress"]


@pytest.fixture
def user_problem(tmp_path):
    (tmp_path / "weights.txt").write_text("1 2 3")
    (tmp_path / "tiny_problem.py").write_text(PROBLEM)
    return tmp_path, f"{tmp_path / 'tiny_problem.py'}:tiny"


def _runs(out):
    with sqlite3.connect(out / "lab.db") as conn:
        rows = conn.execute("SELECT run_id, final FROM runs").fetchall()
    conn.close()
    return {run_id: json.loads(final) for run_id, final in rows}


def _compare(capsys, spec, out):
    assert main(["compare", "-p", spec, *ARGS, "--out", str(out)]) == 0
    return capsys.readouterr().out


def test_an_edited_problem_runs_again_and_the_report_says_so(capsys, user_problem):
    folder, spec = user_problem
    out = folder / "out"
    first = _compare(capsys, spec, out)
    before = _runs(out)
    assert len(before) == 4 and "Problem changed" not in first

    # The same problem again: everything comes from the store.
    _compare(capsys, spec, out)
    assert _runs(out) == before

    # Edit the code (not the data): another loss.
    (folder / "tiny_problem.py").write_text(PROBLEM.replace("F.mse_loss", "F.l1_loss"))
    second = _compare(capsys, spec, out)
    after = _runs(out)
    assert len(after) == 8 and set(before) < set(after)
    new = [after[run_id]["train_loss"] for run_id in set(after) - set(before)]
    assert sorted(new) != sorted(f["train_loss"] for f in before.values())
    message = f"Problem changed. '{spec}' is not the version behind 4 other run(s)"
    assert message in second
    [report] = [ln[len("Report: ") :] for ln in second.splitlines() if ln.startswith("Report:")]
    with open(report) as handle:
        assert "<b>Problem changed.</b>" in handle.read()

    # Edit only the data file the problem reads: the source is the same, what it builds is not.
    (folder / "weights.txt").write_text("1 2 4")
    _compare(capsys, spec, out)
    assert len(_runs(out)) == 12


def test_a_fresh_process_computes_the_same_fingerprint(capsys, user_problem):
    folder, spec = user_problem
    out = folder / "out"
    _compare(capsys, spec, out)
    before = _runs(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "optimlab", "compare", "-p", spec, *ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert _runs(out) == before  # nothing recomputed: the fingerprint is stable
    assert "Problem changed" not in proc.stdout


def test_range_tests_of_an_edited_problem_run_again(capsys, user_problem):
    folder, spec = user_problem
    argv = ["lr-find", "-p", spec, "-o", "sgd", "--steps", "10", "--out", str(folder / "out")]
    assert main(argv) == 0
    (folder / "weights.txt").write_text("10 20 30")
    assert main(argv) == 0
    with sqlite3.connect(folder / "out" / "lab.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM lr_finds").fetchone()[0] == 2
    conn.close()


def test_built_in_problems_keep_their_run_ids():
    # No fingerprint for built-ins: the protocol version stands for their code, and runs
    # stored before fingerprints existed are still found.
    config = make_run_config("rosenbrock", "sgd", {"lr": 0.1}, steps=10, seed=0)
    assert "problem_fingerprint" not in config
    assert problem_fingerprint("rosenbrock", resolve_problem("rosenbrock")) is None
    sweep = plan_sweep(["rosenbrock"], ["sgd"], kind="compare", budget=1, seeds=1)
    assert "fingerprints" not in sweep.plan


def test_the_fingerprint_covers_the_model_and_the_data(user_problem):
    _, spec = user_problem
    problem = resolve_problem(spec)
    digest = built_digest(problem)
    assert digest == built_digest(problem)  # deterministic under the runner's seeding
    assert digest != built_digest(problem, seed=1)  # other data, other initial model
    fingerprint = problem_fingerprint(spec, problem)
    assert set(fingerprint) == {"source", "built"}


def test_a_problem_edited_while_its_runs_are_planned_is_refused(user_problem):
    folder, spec = user_problem
    fingerprint = problem_fingerprint(spec, resolve_problem(spec))
    config = make_run_config(spec, "sgd", {"lr": 0.1}, steps=5, seed=0, fingerprint=fingerprint)
    check_unchanged(config)
    (folder / "tiny_problem.py").write_text(PROBLEM + "\n# edited\n")
    with pytest.raises(LabError, match="changed while the command was running"):
        check_unchanged(config)
