"""What the CLI shows: help without noise, real optimizer descriptions, readable numbers, the
terminal's width, the elapsed time, and banners on partial and smoke-run reports."""

import math
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import optimlab
from optimlab.lab.cli import COMMANDS, build_parser, main
from optimlab.lab.formatting import duration, hparam, hparams_text
from optimlab.lab.optimizers import describe_optimizer


@pytest.fixture(autouse=True)
def _tables_at_their_default_width(monkeypatch):
    # Tables follow COLUMNS when it is set, and pytest-xdist's workers inherit COLUMNS=80.
    monkeypatch.delenv("COLUMNS", raising=False)


TINY = ["-p", "ill_conditioned", "-o", "sgd", "--budget", "1", "--seeds", "1", "--steps", "5"]
TINY += ["--no-lr-find", "--workers", "1", "--no-progress"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_says_each_default_once_and_only_when_there_is_one(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for noise in ("(default: None)", "(default: False)", "==SUPPRESS=="):
        assert noise not in text
    for action in build_parser().commands[command].options.values():
        assert (action.help or "").count("default") <= 1, action.help
    if command == "compare":
        assert "(default 8; --quick 3)" in text and "--budget N" in text
        assert "--threads N torch threads per worker process (default: 1)" in text


def test_list_describes_each_optimizer_from_its_docstring(capsys):
    assert main(["list", "optimizers"]) == 0
    out = capsys.readouterr().out
    assert "optimlab registry" not in out
    for name in optimlab.available_optimizers():
        description = describe_optimizer(name)
        first_words = optimlab.get_optimizer_class(name).__doc__.split()[:2]
        assert description.split()[:2] == first_words
        assert description.endswith((".", ")")) and "`" not in description
        assert name in out
    assert describe_optimizer("adam").startswith("Adam (Kingma & Ba, arXiv:1412.6980")
    # "Alg. 2" inside parentheses does not end the sentence; ". " after them does.
    assert describe_optimizer("nadam").endswith("ICLR 2016 workshop, Alg. 2).")
    assert "Identical to" not in describe_optimizer("amsgrad")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5228791626764394, "0.523"),
        (0.99951, "0.99951"),
        (0.9995, "0.9995"),
        (0.999999, "0.999999"),
        (0.9, "0.9"),
        (0.0041234, "0.00412"),
        (3.123456e-08, "3.12e-08"),
        (True, "True"),
        ((0.5228791626764394, 0.99951234), "(0.523,0.999512)"),
    ],
)
def test_hyperparameters_are_rounded_for_reading(value, text):
    assert hparam(value) == text


@given(st.floats(min_value=0.9, max_value=1.0, exclude_max=True))
def test_a_value_just_below_one_never_prints_as_one(beta2):
    shown = float(hparam(beta2))
    assert shown < 1
    # 1 − β2 keeps three significant digits: a relative error of at most half a unit in the
    # third digit.
    assert math.isclose(1 - shown, 1 - beta2, rel_tol=5.1e-3)


def test_tune_prints_rounded_hyperparameters(capsys, tmp_path):
    argv = ["tune", "-p", "linear_regression", "-o", "adam", "--hparams", "all", "--budget", "3"]
    assert main([*argv, "--steps", "5", "--workers", "1", "--out", str(tmp_path)]) == 0
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Best for")]
    betas = re.search(r"betas=\((\S+), (\S+)\)", line).groups()
    assert float(betas[1]) < 1
    for number in re.findall(r"\d[\d.e+-]*", line.split(":", 1)[1]):
        digits = number.split("e")[0].replace(".", "").lstrip("0")
        assert len(digits) <= 6, line


def test_report_tables_show_hyperparameters_the_same_way():
    text = hparams_text({"betas": (0.9, 0.99951), "lr": 0.1, "eps": 1.234567e-8})
    assert text == "betas=(0.9,0.99951), eps=1.23e-08"


def test_piped_output_honours_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    assert main(["list", "optimizers"]) == 0
    widths = {len(line) for line in capsys.readouterr().out.splitlines()}
    assert max(widths) == 90
    monkeypatch.delenv("COLUMNS")
    assert main(["list", "optimizers"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) == 160


def test_long_commands_end_with_the_elapsed_time(capsys, tmp_path):
    assert main(["compare", *TINY, "--out", str(tmp_path)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"Finished in \d+\.\d s\.", last)
    assert main(["report", "--list", "--out", str(tmp_path)]) == 0
    assert "Finished in" not in capsys.readouterr().out


def test_durations():
    assert [duration(s) for s in (8.24, 95.4, 7384)] == ["8.2 s", "1 min 35 s", "2 h 03 min"]


def test_a_smoke_run_says_so(capsys, tmp_path):
    assert main(["compare", *TINY, "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Smoke run (--quick)." in out
    [report] = [ln.removeprefix("Report: ") for ln in out.splitlines() if ln.startswith("Report")]
    html = Path(report).read_text()
    assert '<p class="banner"><b>Smoke run (--quick).</b>' in html
    assert "Partial results." not in html
    assert "> **Smoke run (--quick).**" in (tmp_path / "report.md").read_text()
    assert "complete, smoke run" in (tmp_path / "index.html").read_text()


def test_the_report_of_an_unfinished_sweep_says_partial(capsys, tmp_path):
    assert main(["compare", *TINY, "--out", str(tmp_path)]) == 0
    # What a killed sweep leaves behind: runs stored, the sweep never marked complete.
    with sqlite3.connect(tmp_path / "lab.db") as conn:
        conn.execute("UPDATE sweeps SET completed_at = NULL")
    conn.close()
    capsys.readouterr()
    assert main(["report", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Partial results. This sweep did not finish" in out
    html = (tmp_path / "report.html").read_text()
    assert "<b>Partial results.</b> This sweep did not finish" in html
    assert "the 1 runs stored so far" in html
    assert "<td>partial</td>" in (tmp_path / "index.html").read_text()
