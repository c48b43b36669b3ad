"""Smoke test of benchmarks/fsdp_step.py: it runs its two FSDP2 processes on a tiny model and
writes the JSON and table it promises. Nothing here looks at how fast anything is."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from distributed_cases import needs_gloo

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fsdp_step.py"

pytestmark = needs_gloo


@pytest.fixture(scope="module")
def bench():
    """The script as the module ``fsdp_step`` (its worker processes import it by that name),
    with benchmarks/ on ``sys.path`` until the tests are done."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        yield importlib.import_module("fsdp_step")
    finally:
        sys.path.remove(str(BENCH.parent))


def test_tiny_run_writes_rows_for_each_optimizer(bench, tmp_path, capsys):
    out = tmp_path / "fsdp.json"
    argv = ["--optimizers", "adamw", "adafactor", "muon", "--steps", "2", "--warmup", "1"]
    argv += ["--layers", "1", "--d", "16", "--vocab", "64", "--context", "8", "--json", str(out)]
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "fsdp_step" and doc["model"]["processes"] == 2
    assert doc["command"][:2] == ["python", "benchmarks/fsdp_step.py"]
    rows = {row["optimizer"]: row for row in doc["rows"]}
    assert set(rows) == {"adamw", "adafactor", "muon"}
    assert all(row["status"] == "ok" and row["steps"] >= 2 for row in rows.values())
    # each process holds about half of the tiny model's parameters
    assert 0 < rows["adamw"]["local_params"] < doc["model"]["params"]
    adamw = rows["adamw"]
    assert adamw["torch_baseline"] == "AdamW" and adamw["target"] == 0.5
    assert len(adamw["engine"]) == 1 and adamw["ratio"] > 0 and adamw["gbps"] > 0
    # torch's Adafactor cannot step DTensors: the row says so and times optimlab alone
    assert rows["adafactor"]["torch_error"] and rows["adafactor"]["ratio"] is None
    assert rows["muon"]["torch_baseline"] == "Muon + AdamW" and rows["muon"]["ratio"] > 0
    table = capsys.readouterr().out
    assert "| adamw | AdamW |" in table and "Adafactor (fails)" in table


def test_quick_mode_and_bad_arguments(bench):
    args = bench.parse_args(["--quick"])
    assert args.optimizers == list(bench.QUICK_OPTIMIZERS) and args.steps == 10
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--steps", "0"])
    assert exit_.value.code == 2
