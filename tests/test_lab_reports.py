"""Several commands into one --out: each prints the path of a report that holds its own sweep,
and OUT/index.html lists them all."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from optimlab.lab.cli import main

TINY = ["-p", "ill_conditioned", "--budget", "1", "--seeds", "1", "--steps", "5"]
TINY += ["--no-lr-find", "--workers", "1", "--no-progress"]


def _report_path(stdout: str) -> Path:
    [line] = [ln for ln in stdout.splitlines() if ln.startswith("Report: ")]
    return Path(line.removeprefix("Report: "))


def _sweep_id(stdout: str) -> str:
    return re.search(r"\(sweep ([0-9a-f]{12})\)", stdout).group(1)


def _optimizers_in(report: Path) -> set[str]:
    summary = json.loads((report.parent / "report.json").read_text())
    return {o["label"] for o in summary["plan"]["optimizers"]}


def test_three_compares_into_one_out_each_keep_their_report(tmp_path, capsys):
    printed = {}
    for optimizer in ("sgd", "adam", "rmsprop"):
        assert main(["compare", *TINY, "-o", optimizer, "--out", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        printed[optimizer] = (_report_path(out), _sweep_id(out))
    paths = [path for path, _ in printed.values()]
    assert len(set(paths)) == 3
    for optimizer, (path, sweep) in printed.items():
        assert path.parent == tmp_path.resolve() / "reports" / f"compare-{sweep}"
        assert _optimizers_in(path) == {optimizer}
        html = path.read_text()
        assert f"sweep {sweep}" in html and html.count("data:image/png;base64,") >= 2
        md = (path.parent / "report.md").read_text()
        for image in re.findall(r"\]\((figures/[^)]+)\)", md):
            assert (path.parent / image).is_file()
    # The top level keeps the latest comparison under its old name.
    latest = json.loads((tmp_path / "report.json").read_text())
    assert latest["sweep_id"].startswith(printed["rmsprop"][1])
    index = (tmp_path / "index.html").read_text()
    for _, sweep in printed.values():
        assert f'href="reports/compare-{sweep}/report.html"' in index
    assert index.count("<tr><td>") == 3 and "complete" in index


def test_two_compares_at_the_same_time(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {
        optimizer: subprocess.Popen(
            [sys.executable, "-m", "optimlab", "compare", *TINY, "-o", optimizer]
            + ["--out", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for optimizer in ("sgd", "adam")
    }
    for optimizer, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert _optimizers_in(_report_path(out)) == {optimizer}
    index = (tmp_path / "index.html").read_text()
    assert index.count('href="reports/compare-') == 2


def test_two_range_tests_into_one_out(tmp_path, capsys):
    plots = {}
    for optimizer in ("sgd", "adam"):
        argv = ["lr-find", "-p", "ill_conditioned", "-o", optimizer, "--steps", "10"]
        assert main([*argv, "--out", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        [plot] = [ln.removeprefix("Plot: ") for ln in out.splitlines() if ln.startswith("Plot: ")]
        [curves] = [ln.removeprefix("Curves: ") for ln in out.splitlines() if "Curves: " in ln]
        plots[optimizer] = Path(plot)
        assert set(json.loads(Path(curves).read_text())) == {optimizer}
    assert plots["sgd"] != plots["adam"]
    assert all(
        p.stat().st_size > 1000 and p.name == "lr-find-ill_conditioned.png" for p in plots.values()
    )
    index = (tmp_path / "index.html").read_text()
    assert index.count("lr-find-ill_conditioned.png") == 2
