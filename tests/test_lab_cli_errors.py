"""Bad input to the CLI: one clear line on stderr, exit status 2, never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from optimlab.lab.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["compare", "-p", "no_such_problem"], "no_such_problem"),
        (["compare", "-o", "no_such_optimizer"], "unknown optimizer 'no_such_optimizer'"),
        (["compare", "-o", "adam:bogus=1"], "bad hyperparameter for optimizer 'adam:bogus=1'"),
        (["compare", "-o", "adam:lr=-1"], "Invalid learning rate"),
        (["compare", "-o", "sgd:momentum=abc"], "is not a number"),
        (["compare", "--search", "optuna", "--hparams", "zzz", "-o", "adam"], "cannot tune 'zzz'"),
        (["lr-find", "-p", "no_such_problem"], "no_such_problem"),
        (["lr-find", "-p", "rosenbrock", "-o", "adam:betas=(2,0.9)"], "Invalid beta parameter"),
        (["trajectories", "-f", "digits_mlp"], "not function2d"),
        (["tune", "-p", "rosenbrock", "-o", "nope"], "unknown optimizer 'nope'"),
    ],
)
def test_bad_names_and_values(capsys, tmp_path, argv, expected):
    code, err = _run(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        ("{not json", "bad.json", "bad config file"),
        (json.dumps({"budgett": 3}), "typo.json", "unknown option 'budgett'"),
        (json.dumps({"budget": "many"}), "type.json", "expected a positive integer"),
        (json.dumps({"search": "random"}), "choice.json", "must be one of"),
        ("budget = [", "bad.toml", "bad config file"),
        (None, "missing.json", "cannot read config file"),
    ],
)
def test_bad_config_files(capsys, tmp_path, content, name, expected):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    code, err = _run(capsys, "compare", "--config", str(path), "--out", str(tmp_path / "o"))
    assert code == 2
    assert expected in err and err.count("\n") == 1


def test_unwritable_output_directory(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    # A path below a regular file cannot be created, even by root.
    code, err = _run(capsys, "compare", "--quick", "--out", str(blocker / "out"))
    assert code == 2
    assert "cannot write to output directory" in err and err.count("\n") == 1


def test_report_without_a_database(capsys, tmp_path):
    code, err = _run(capsys, "report", "--out", str(tmp_path))
    assert code == 2 and "no lab database" in err


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--budget", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--budget" in err and err.count("\n") == 1


def test_the_real_entry_point_reports_errors_the_same_way(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "optimlab",
            "compare",
            "-o",
            "adamw:weight_decay=-1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("optimlab: error: bad hyperparameter")
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""


BROKEN_PROBLEM = """
import torch
from optimlab.lab.problems import Problem


class Instance:
    def __init__(self, seed):
        self.model = torch.nn.Linear(2, 1)

    def train_loss(self, step):
        raise RuntimeError("the data loader broke")

    def evaluate(self):
        return {"train_loss": 0.0}


def broken():
    return Problem(name="broken", description="raises", kind="regression", steps=5,
                   quick_steps=5, batch_size=None, target=0.0, metric=None,
                   default_lr_range=(1e-3, 1.0), build=Instance)
"""


def test_a_failing_run_exits_1_with_one_line_and_keeps_the_store(capsys, tmp_path):
    (tmp_path / "broken_problem.py").write_text(BROKEN_PROBLEM)
    spec = f"{tmp_path / 'broken_problem.py'}:broken"
    code, err = _run(
        capsys,
        "compare",
        "-p",
        spec,
        "-o",
        "sgd",
        "--quick",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 1
    assert "failed: RuntimeError: the data loader broke" in err and "--debug" in err
    assert err.count("\n") == 1
    assert (tmp_path / "out" / "lab.db").exists()
