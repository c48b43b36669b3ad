"""Smoke test of benchmarks/step_speed.py: it imports, runs its core on a tiny layout, and writes
the JSON it promises. Nothing here looks at how fast anything is."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

import optimlab

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = [("a", (1000,)), ("b", (10, 100)), ("c", (1000,))]

ROW_KEYS = {
    "optimizer",
    "engine",
    "status",
    "reason",
    "torch_baseline",
    "ms",
    "torch_ms",
    "ratio",
    "ratio_paired",
    "steps",
    "times_ms",
    "torch_times_ms",
    "min_bytes_per_param",
    "gbps",
    "torch_gbps",
    "bw_fraction",
    "extra_mib",
    "torch_extra_mib",
    "state_mib",
    "state_bytes_per_param",
    "first_step_ms",
    "warmup_ms",
    "startup_overhead_s",
    "torch_first_step_ms",
    "compile_seconds",
    "fused_stats",
    "adamw_ref_ms",
    "adamw_ref_times_ms",
    "gbps_fraction_of_adamw",
    "target",
}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("step_speed")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_min_bytes_and_baselines_cover_every_optimizer(bench):
    assert set(bench.TORCH_BASELINES) == set(optimlab.available_optimizers())
    p = torch.zeros(3, 2, requires_grad=True)  # a matrix: Muon takes nothing else
    for name in optimlab.available_optimizers():
        opt = optimlab.create_optimizer(name, [p], **bench.OURS_KWARGS.get(name, {}))
        group = opt.param_groups[0]
        # The documented rule: 12 B (read p, g; write p) + 8 B per elementwise state tensor,
        # for the benchmark's settings and with each flag switched on and off.
        flags = [f for f in ("momentum", "centered", "amsgrad", "amsbound") if f in group]
        variants = [dict(group)] + [{**group, flag: v} for flag in flags for v in (0, 0.9)]
        if "min_bytes_per_element" in type(opt).__dict__:
            continue  # not elementwise: the class states its passes (next test)
        for g in variants:
            expected = 12 + 8 * len(opt._state_keys(g))
            assert bench.min_bytes_per_param(name, g) == expected, (name, g)


def test_min_bytes_of_the_optimizers_that_are_not_elementwise(bench):
    """Adafactor needs three passes (RMS(θ) and the statistics, RMS(U), the update): 24 B,
    32 with β1; Muon's elementwise part moves 20 B (its products are counted in FLOPs)."""
    assert bench.min_bytes_per_param("adafactor", {"beta1": None}) == 24
    assert bench.min_bytes_per_param("adafactor", {"beta1": 0.9}) == 32
    assert bench.min_bytes_per_param("muon", {}) == 20
    assert bench.min_bytes_per_param("lion", {}) == 20


def test_min_bytes_examples_from_the_issue(bench):
    assert bench.min_bytes_per_param("adamw", {"amsgrad": False}) == 28
    assert bench.min_bytes_per_param("sgd", {"momentum": 0.9}) == 20
    assert bench.min_bytes_per_param("sgd", {"momentum": 0}) == 12
    assert bench.min_bytes_per_param("rmsprop", {"centered": True, "momentum": 0.9}) == 36
    assert bench.min_bytes_per_param("amsgrad", {"amsgrad": True}) == 36


def test_layouts_have_the_published_sizes():
    layouts = _load("_layouts")
    for name, (tensors, params) in layouts.EXPECTED.items():
        shapes = layouts.get_layout(name)
        assert (len(shapes), layouts.numel(shapes)) == (tensors, params), name


def test_run_layout_rows_and_json(bench, one_thread, tmp_path):
    rows = bench.run_layout(
        "tiny",
        TINY,
        optimizers=["sgd", "adamw"],
        engines=["loop", "foreach"],
        bandwidth={"add_gbps": 10.0, "copy_gbps": 10.0},
        min_steps=3,
        warmup=2,
        budget_s=0,
    )
    assert [(r["optimizer"], r["engine"]) for r in rows] == [
        ("sgd", "loop"),
        ("sgd", "foreach"),
        ("adamw", "loop"),
        ("adamw", "foreach"),
    ]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["status"] == "ok", row["reason"]
        assert row["steps"] >= 3
        assert len(row["times_ms"]) == len(row["torch_times_ms"]) == row["steps"]
        for key in ("ms", "torch_ms", "ratio", "gbps", "bw_fraction", "first_step_ms"):
            assert isinstance(row[key], float) and row[key] > 0, key
        assert row["extra_mib"] is not None and row["extra_mib"] >= 0
        assert row["target"] is None  # "tiny" has no targets
        assert row["torch_baseline"]["mode"] == "fused"
    assert rows[0]["min_bytes_per_param"] == 20 and rows[2]["min_bytes_per_param"] == 28

    doc = {"rows": rows, "layout": {"name": "tiny"}}
    path = tmp_path / "sub" / "out.json"
    bench.write_json(path, doc)
    assert json.loads(path.read_text())["rows"][0]["optimizer"] == "sgd"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary left over


@pytest.mark.slow
def test_gbps_rule_uses_the_interleaved_adamw_reference(bench, one_thread):
    """A fused row under the GB/s rule times our fused AdamW as a third side, step for step,
    and the rule's fraction comes from those times."""
    rows = bench.run_layout(
        "many_small",
        TINY,
        optimizers=["rmsprop"],
        engines=["fused"],
        min_steps=3,
        budget_s=0,
        memory="none",
    )
    (row,) = rows
    assert row["status"] == "ok", row["reason"]
    assert len(row["adamw_ref_times_ms"]) == row["steps"] == len(row["times_ms"])
    ref_ms = statistics.median(row["adamw_ref_times_ms"])
    assert row["adamw_ref_ms"] == pytest.approx(ref_ms)
    expected = (20 / row["ms"]) / (28 / ref_ms)
    assert row["gbps_fraction_of_adamw"] == pytest.approx(expected)
    assert row["target"]["gbps_basis"] == "interleaved reference"
    assert row["target"]["gbps_fraction_of_adamw"] == row["gbps_fraction_of_adamw"]


def test_unavailable_engine_gives_na_row(bench, one_thread, monkeypatch):
    real = optimlab.create_optimizer

    def no_fused(name, params, engine="auto", **kwargs):
        if engine == "fused":
            raise NotImplementedError("engine='fused' is not available in this build")
        return real(name, params, engine=engine, **kwargs)

    monkeypatch.setattr(bench.optimlab, "create_optimizer", no_fused)
    monkeypatch.setattr(bench, "_reset_compiler", lambda: None)
    rows = bench.run_layout(
        "many_small",  # a layout with targets: the n/a fused row gets an unset verdict
        TINY,
        optimizers=["adam"],
        engines=["foreach", "fused"],
        min_steps=2,
        budget_s=0,
        memory="none",
    )
    assert [r["status"] for r in rows] == ["ok", "n/a"]
    assert "NotImplementedError" in rows[1]["reason"] and rows[1]["ms"] is None
    assert rows[1]["target"]["verdict"] is None
    assert bench.table_cells(rows[1])[3] == "n/a"


@pytest.mark.parametrize("sides", [1, 2, 3, 4])
def test_interleaving_puts_every_side_after_every_side_equally(bench, sides):
    order = bench.interleaving(sides, 7)
    counts = [order.count(k) for k in range(sides)]
    assert min(counts) == max(counts) >= 7
    pairs: dict[tuple[int, int], int] = {}
    for before, after in zip(order, order[1:] + order[:1]):  # cyclic, as it repeats
        pairs[(before, after)] = pairs.get((before, after), 0) + 1
    assert len(pairs) == sides * sides and len(set(pairs.values())) == 1


def test_targets(bench):
    def row(name, engine, ratio, gbps, mode, ms=1.0, twin=True):
        base = {"mode": mode, "note": None, "label": "", "twin": twin}
        return {
            "optimizer": name,
            "engine": engine,
            "status": "ok",
            "ratio": ratio,
            "gbps": gbps,
            "ms": ms,
            "torch_baseline": base,
        }

    rows = [
        row("adamw", "fused", 0.9, 100.0, "fused"),
        row("adamw", "foreach", 3.0, 10.0, "fused"),
        row("nadam", "fused", 0.3, 90.0, "foreach"),
        row("radam", "fused", 0.3, 80.0, "foreach"),
        row("adabound", "fused", 0.9, 90.0, "fused", ms=3.0, twin=False),
        row("adabound", "foreach", 9.0, 10.0, "fused", ms=10.0, twin=False),
        row("amsbound", "fused", 0.9, 90.0, "fused", twin=False),
    ]
    bench.apply_targets(rows, "gpt2")
    assert rows[0]["target"]["verdict"] == "PASS"
    assert "target" not in rows[1]
    assert rows[2]["target"]["verdict"] == "PASS"
    assert rows[3]["target"]["failed"] == ["GB/s"]
    # no torch twin: also against its own foreach row (3 / 10 = 0.3 <= 0.35)
    assert rows[4]["target"]["verdict"] == "PASS"
    assert rows[4]["target"]["foreach_ratio"] == pytest.approx(0.3)
    assert "0.30<=0.35 of our foreach" in bench.verdict_text(rows[4]["target"])
    assert rows[6]["target"]["unchecked"] == ["foreach ratio: no foreach row in this run"]
    bench.apply_targets(rows, "many_small")
    assert rows[0]["target"]["failed"] == ["ratio"]
    assert rows[4]["target"]["failed"] == ["ratio", "foreach ratio"]  # 0.9 > 0.4, 0.3 > 0.15


def test_recompile_check_counts_on_an_eager_engine(bench, one_thread):
    rows = bench.recompile_check(["sgd", "adam"], steps=5, engine="foreach")
    for r in rows:
        assert r["status"] == "ok", r["reason"]
        assert r["recompiles"] == 0 and r["initial_steps"] == 1


def test_cli_without_cuda_exits_2(bench, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert bench.main(["--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_train_step_benchmark_runs_a_tiny_model(tmp_path, capsys):
    """benchmarks/train_step.py end to end on a tiny GPT: both sides train the same model on
    the same batches (so their losses agree), and the JSON has every promised field."""
    train_step = _load("train_step")
    out = tmp_path / "train.json"
    argv = ["--vocab", "97", "--d", "16", "--layers", "1", "--heads", "2", "--ctx", "8"]
    argv += ["--batch", "2", "--steps", "2", "--warmup", "1", "--json", str(out), "--plain"]
    assert train_step.main([*argv, "--hook-tensors", "20"]) == 0
    doc = json.loads(out.read_text())
    # wte, wpe; a block: 2 layer norms, c_attn, c_proj, c_fc, mlp_proj (weights and biases); ln_f
    block = 2 * 32 + (16 * 48 + 48) + (16 * 16 + 16) + (16 * 64 + 64) + (64 * 16 + 16)
    assert doc["benchmark"] == "train_step"
    assert doc["parameters"] == 97 * 16 + 8 * 16 + block + 32
    (row,) = doc["rows"]
    assert row["optimizer"] == "adamw" and row["torch_baseline"] == "AdamW fused"
    assert len(row["times_s"][0]) == len(row["times_s"][1]) == 2
    assert row["ratio"] == pytest.approx(row["ms"] / row["torch_ms"])
    assert {"extra_ms_per_step", "tensors", "copied_bytes_per_step"} <= set(doc["routing"])
    hooks = doc["hooks_per_tensor"]
    assert hooks["tensors"] == 20 and len(hooks["times_s"][0]) == len(hooks["times_s"][1]) >= 15
    assert "whole training step" in capsys.readouterr().out


def test_train_step_model_is_gpt2_shaped():
    train_step = _load("train_step")
    model = train_step.GPT(vocab=50257, d=768, layers=12, heads=12, ctx=1024)
    # GPT-2 small's 124,439,808 parameters (head tied to the token embedding)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808


def test_new_optimizers_have_their_own_targets(bench):
    def row(name, ratio, gbps, mode, twin=True):
        base = {"mode": mode, "note": None, "label": "", "twin": twin}
        return {
            "optimizer": name,
            "engine": "fused",
            "status": "ok",
            "ratio": ratio,
            "gbps": gbps,
            "ms": 1.0,
            "torch_baseline": base,
        }

    rows = [
        row("adamw", 0.9, 100.0, "fused"),
        row("adafactor", 0.25, 10.0, "for-loop"),
        row("lion", 0.9, 90.0, "fused", twin=False),
        row("muon", 0.9, 1.0, "default"),
    ]
    bench.apply_targets(rows, "gpt2")
    assert rows[1]["target"]["failed"] == ["ratio"]  # 0.25 > 0.2 of torch's Adafactor
    assert rows[1]["target"]["gbps_fraction_of_adamw"] is None  # three passes: no GB/s rule
    assert rows[2]["target"]["verdict"] == "PASS"  # Lion: GB/s 90% >= 85% is its target
    assert bench.verdict_text(rows[2]["target"]) == "PASS: GB/s 90%>=85% AdamW"
    assert rows[3]["target"]["verdict"] == "PASS"  # Muon: torch's time at most, no GB/s
    assert rows[3]["target"]["gbps_fraction_of_adamw"] is None


def test_a_matrix_optimizer_gets_the_layouts_matrices_and_the_faster_torch_mode(bench, one_thread):
    rows = bench.run_layout(
        "tiny",
        [*TINY, ("d", (12, 8))],
        optimizers=["muon", "adafactor"],
        engines=["foreach"],
        bandwidth={"add_gbps": 10.0, "copy_gbps": 10.0},
        min_steps=2,
        warmup=1,
        budget_s=0,
        memory="none",
    )
    muon, adafactor = rows
    assert muon["status"] == "ok", muon["reason"]
    assert muon["torch_baseline"]["mode"] == "default"  # torch's Muon has one mode
    assert muon["gbps"] == pytest.approx(20 * (10 * 100 + 12 * 8) / (muon["ms"] / 1e3) / 1e9)
    assert adafactor["torch_baseline"]["mode"] in ("foreach", "for-loop")
    none = bench.run_layout(
        "vectors",
        [("a", (100,))],
        optimizers=["muon"],
        engines=["loop"],
        bandwidth=None,
        min_steps=1,
        budget_s=0,
        memory="none",
    )
    assert none[0]["status"] == "n/a" and none[0]["reason"] == "the layout has no matrices"


def test_muon_benchmark_counts_flops_and_runs(tmp_path, one_thread, capsys, monkeypatch):
    muon = _load("muon_step")
    # 5 steps of (4·m²·n + 2·m³) with m = 3 ≤ n = 5, whichever way the matrix stands
    assert muon.ns_flops([(3, 5), (5, 3)]) == 2 * 5 * (4 * 9 * 5 + 2 * 27)
    monkeypatch.setitem(muon.LAYOUTS, "batch", lambda: [(8, 16)] * 3)
    path = tmp_path / "m.json"
    assert (
        muon.main(["--layout", "batch", "--engines", "loop", "--quick", "--json", str(path)]) == 0
    )
    doc = json.loads(path.read_text())
    sides = [r["side"] for r in doc["layouts"][0]["rows"]]
    assert sides == ["torch.optim.Muon", "optimlab loop", "torch.mm (bf16)"]
    ours = doc["layouts"][0]["rows"][1]
    assert ours["target"]["ratio_max"] == 0.5 and ours["gflops"] > 0
    assert "GFLOP of Newton–Schulz per step" in capsys.readouterr().out
