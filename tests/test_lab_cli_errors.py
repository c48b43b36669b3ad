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
        (json.dumps({"budget": "many"}), "type.json", "expected an integer from 1 to"),
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


def test_an_empty_output_directory_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, "compare", "-p", "rosenbrock", "--out", "")
    assert code == 2 and "the output directory is an empty string" in err
    assert list(tmp_path.iterdir()) == []


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


def _exit_code(capsys, *argv):
    """Run the CLI in-process; a usage error from argparse counts like any other status."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # each of these was a traceback (MemoryError, OverflowError, a segfault for threads)
        (["compare", "--seeds", "100000000000"], "--seeds: expected an integer from 1 to 1000"),
        (["compare", "--budget", "100000000000"], "--budget: expected an integer from 1 to"),
        (["lr-find", "-p", "rosenbrock", "--seed", "18446744073709551617"], "from 0 to"),
        (["lr-find", "-p", "rosenbrock", "--seed", "-1"], "--seed: expected an integer"),
        (["compare", "--threads", "100000"], "--threads: expected an integer from 1 to"),
        (["compare", "--workers", "100000"], "per core"),
        (["compare", "--steps", "9" * 5000], "--steps: expected an integer"),
        (["compare", "--lr-range", "1,inf"], "--lr-range: need 0 < LOW < HIGH, both finite"),
        (["lr-find", "-p", "rosenbrock", "--end-lr", "inf"], "--end-lr: expected a positive"),
        (["lr-find", "-p", "rosenbrock", "--start-lr", "nan"], "--start-lr: expected a"),
    ],
)
def test_out_of_range_numbers(capsys, tmp_path, argv, expected):
    code, err = _exit_code(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err and len(err) < 400
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("adam:lr=1e400", "value of 'lr' must be finite"),
        ("adam:eps=-1e999", "value of 'eps' must be finite"),
        ("sgd:nesterov=1j", "is not a number, bool or tuple"),
        ("adam:betas=(0.9,)", "bad hyperparameter for optimizer 'adam:betas=(0.9,)'"),
        ("sgd:momentum=(0.9,0.9)", "bad hyperparameter for optimizer"),
    ],
)
def test_bad_hyperparameter_values(capsys, tmp_path, spec, expected):
    code, err = _run(capsys, "compare", "-p", "rosenbrock", "-o", spec, "--out", str(tmp_path))
    assert code == 2
    assert expected in err and err.count("\n") == 1


def test_python_api_checks_the_same_limits(tmp_path):
    from optimlab.lab import LabError, compare, find_lr

    with pytest.raises(LabError, match="seed must be an integer from 0 to"):
        compare(["rosenbrock"], ["sgd"], seeds=[2**64], out_dir=tmp_path)
    with pytest.raises(LabError, match="seeds must be an integer from 1 to 1000"):
        compare(["rosenbrock"], ["sgd"], seeds=10**11, out_dir=tmp_path)
    with pytest.raises(LabError, match="high end"):
        compare(["rosenbrock"], ["sgd"], lr_range=(1e-3, float("inf")), out_dir=tmp_path)
    with pytest.raises(LabError, match="seed must be an integer"):
        find_lr("rosenbrock", ["sgd"], seed=2**64 + 1, out_dir=tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"budget": 3, "problems": ["\xff\xfe"]}', "not UTF-8 text (byte 0xff at offset 28)"),
        (b'{"out": 5}', "option 'out' takes text, got int 5"),
        (b'{"problems": [{"a": 1}]}', "option 'problems' takes text"),
        (b'{"seeds": 100000000000}', "option 'seeds': expected an integer from 1 to 1000"),
        (b'{"workers": 0}', "option 'workers': expected an integer from 1 to"),
        (b" " * (1 << 20) + b"{}", "larger than 1 MiB"),
    ],
)
def test_bad_config_file_contents(capsys, tmp_path, content, expected):
    path = tmp_path / "lab.json"
    path.write_bytes(content)
    code, err = _run(capsys, "compare", "--config", str(path), "--out", str(tmp_path / "o"))
    assert code == 2
    assert expected in err and err.count("\n") == 1


FACTORIES = """
class SomeClass:
    def __init__(self, seed):
        self.seed = seed


def raises():
    raise RuntimeError("the factory broke")


def exits():
    raise SystemExit(0)
"""


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("SomeClass", "TypeError: SomeClass.__init__() missing 1 required positional argument"),
        ("raises", "RuntimeError: the factory broke"),
        ("exits", "SystemExit"),
    ],
)
def test_a_problem_factory_that_fails(capsys, tmp_path, attr, expected):
    (tmp_path / "factories.py").write_text(FACTORIES)
    spec = f"{tmp_path / 'factories.py'}:{attr}"
    code, err = _run(capsys, "compare", "-p", spec, "--out", str(tmp_path / "o"))
    assert code == 2
    assert f"problem '{spec}' could not be loaded: {expected}" in err
    assert "--debug" in err and err.count("\n") == 1


def test_a_problem_module_that_does_not_parse(capsys, tmp_path, monkeypatch):
    (tmp_path / "broken_syntax.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, "lr-find", "-p", "broken_syntax:f", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "could not be loaded: SyntaxError: invalid syntax (broken_syntax.py, line 1)" in err


def test_debug_shows_the_problem_factorys_own_traceback(tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    spec = f"{tmp_path / 'factories.py'}:raises"
    with pytest.raises(Exception) as info:
        main(["compare", "-p", spec, "--out", str(tmp_path / "o"), "--debug"])
    assert isinstance(info.value.__cause__, RuntimeError)
