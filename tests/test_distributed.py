"""Every optimizer and guard on torch.distributed: FSDP2 (DTensor parameters sharded by rows),
DDP and ZeroRedundancyOptimizer, on two CPU processes (gloo), against one process training on
the same global batches. The scenarios run in tests/distributed_cases.py; each test spawns one
process group for all its cases (starting processes costs seconds, a case milliseconds)."""

from __future__ import annotations

import math

import pytest

from optimlab.core.vocabulary import VOCABULARY

from distributed_cases import (
    DDP_RUNS,
    HSDP_RUNS,
    SHARDED_OP_CASES,
    STEPS,
    TOLERANCE,
    WHOLE_TENSOR,
    ddp_scenarios,
    fsdp2_guard_scenarios,
    fsdp2_runs,
    fsdp2_training,
    needs_gloo,
    spawn,
    tolerance,
)
from specs import SPECS

pytestmark = needs_gloo


def _failures(results: dict, check) -> list[str]:
    failures = []
    for key, result in results.items():
        if "error" in result:
            failures.append(f"{key}: {result['error']}")
            continue
        problem = check(key, result)
        if problem:
            failures.append(f"{key}: {problem}")
    return failures


def _name(key: str) -> str:
    return next(spec.name for spec in SPECS if f"-{spec.name}-" in f"-{key}")


def _weights_match(key: str, result: dict) -> str | None:
    err, tol = result["err"], tolerance(_name(key))
    if not (math.isfinite(err) and err <= tol):
        return f"weights differ from one process by {err:.3g} (tolerance {tol:g})"
    return None


@pytest.fixture(scope="module")
def fsdp2_results():
    return spawn(fsdp2_training, 2)


def test_fsdp2_training_equals_one_process(fsdp2_results):
    """Every optimizer and config (on the fused engine, and the first config on loop and
    foreach too): FSDP2 weights after a few steps equal one process's to 1e-12 (elementwise
    formulas) or 1e-11 (Adafactor and Muon add up their whole-tensor sums in another order), in
    float64, on a model whose weights split unevenly over the two ranks, one of which the
    second rank holds no rows of."""
    results = fsdp2_results[0]
    assert set(results) == {f"{n}-{i}-{e}" for n, i, e in fsdp2_runs()}
    assert {n for n, _, _ in fsdp2_runs()} == {s.name for s in SPECS}
    assert not _failures(results, _weights_match)
    assert TOLERANCE["elementwise"] == 1e-12 and STEPS >= 3


def test_fsdp2_fused_engine_fuses_local_shards(fsdp2_results):
    """On the fused engine every elementwise formula steps the sharded parameters fused (on
    their local shards, on every rank); Adafactor and Muon's matrix group step them on the
    foreach path, with their reductions all-reduced, and say so."""

    def check(key: str, result: dict) -> str | None:
        if not key.endswith("-fused"):
            return None
        fusing, name = result["fusing"], _name(key)
        if name == "adafactor":
            reason = fusing["fallback"][0]
            ok = fusing["fused"] == [False] and "reduces over whole tensors" in reason
        elif name == "muon":  # the Muon group eager, the AdamW group fused
            ok = fusing["fused"] == [False, True] and fusing["eager_params"] == 2
        else:
            ok = all(fusing["fused"]) and fusing["eager_params"] == 0
        return None if ok else f"unexpected fusing {fusing}"

    for rank_results in fsdp2_results:
        assert not _failures(rank_results, check)


@pytest.fixture(scope="module")
def ddp_results():
    return spawn(ddp_scenarios, 2)


def test_ddp_and_zero_equal_one_process(ddp_results):
    """Every optimizer under DDP (foreach, fused; fused with gradient_as_bucket_view) and
    ZeroRedundancyOptimizer(optimizer_class=...) (foreach, fused; fused with
    parameters_as_bucket_view, whose buckets the fused engine must leave in place) against one
    process. The fused engine fuses under DDP."""
    results = ddp_results[0]["training"]
    assert len(results) == len(SPECS) * len(DDP_RUNS)
    assert not _failures(results, _weights_match)

    def fused_where_expected(key: str, result: dict) -> str | None:
        mode, engine = key.split("-")[0], key.rsplit("-", 1)[1]
        if engine != "fused" or "view" in key or _name(key) in WHOLE_TENSOR:
            return None
        if mode == "ddp" and not all(result["fusing"]["fused"]):
            return f"not fused under DDP: {result['fusing']}"
        return None

    assert not _failures(results, fused_where_expected)
    views = {k: r for k, r in results.items() if k.startswith("zero-bucket-view")}
    # a partition of several parameters lives in ZeRO's bucket: stepped beside the buffers
    assert any("buffer the optimizer does not own" in str(r["fusing"]) for r in views.values())


@pytest.fixture(scope="module")
def guard_scenarios():
    return spawn(fsdp2_guard_scenarios, 2)


@pytest.fixture(scope="module")
def guard_results(guard_scenarios):
    return [r["guards"] for r in guard_scenarios]


def test_hsdp_replicated_and_sharded_equals_one_process(guard_scenarios):
    """Two-dimensional meshes (replicated over both processes and sharded over one, and the
    other way round): AdamW, Adafactor and Muon equal one process; their sums cover each
    shard once, not once per replica."""
    results = guard_scenarios[0]["hsdp"]
    assert {key.split("-")[1] for key in results} == set(HSDP_RUNS)
    assert {key.split("-")[0] for key in results} == {"hsdp2x1", "hsdp1x2"}
    assert not _failures(results, _weights_match)
    assert {r["placements"] for r in results.values()} == {"(Replicate(), Shard(dim=0))"}


def test_differentiable_and_capturable_are_refused_on_shards(guard_scenarios):
    """Steps that run outside autograd and CUDA graphs on the local shards cannot honour
    differentiable=True or capturable=True: both raise a NotImplementedError that names the
    switch, on every rank, before any weight moves."""
    for rank_results in guard_scenarios:
        for switch, result in rank_results["refused"].items():
            assert result["error"].startswith("NotImplementedError"), result
            assert f"{switch}=True with DTensor parameters" in result["error"]
            assert not result["moved"]


def test_operations_on_shards_equal_the_whole_tensor(guard_scenarios):
    """Every operation that is not elementwise, on DTensor shards (rows split 4 + 3, a
    matrix whose single row one rank holds alone, a sharded batch dimension), equals the
    operation on the whole tensor: reductions as all-reduced partial sums and group sums to
    1e-15, Newton-Schulz on the gathered matrix and reshapes of rows bit for bit."""
    ops = guard_scenarios[0]["ops"]
    assert set(ops) == set(SHARDED_OP_CASES)
    assert {op.name for op in VOCABULARY if op.kind != "elementwise"} - set(ops) <= {
        "matmul",  # exercised by Adafactor and Muon in the training tests
        "reshape_as",
    }
    for name, err in ops.items():
        tol = 0.0 if name in ("newton_schulz", "as_matrix") else 1e-15
        assert err <= tol, (name, err)


def test_guards_under_fsdp2_equal_one_process(guard_results):
    """Clipping (global 2-norm, ∞-norm, value), the non-finite guard, accumulation, EMA,
    Lookahead and a chain of them, around AdamW under FSDP2: weights (and averages, slow
    weights) equal one process's; the clipping norm is the whole gradient's on every rank."""
    results = guard_results[0]
    assert not _failures(results, lambda k, r: _weights_match("-adamw-", r))
    for rank_results in guard_results:
        for key, result in rank_results.items():
            if key.startswith(("clip", "chain")):
                want = results[key]["ref_counters"]["last_norm"]
                assert math.isclose(result["counters"]["last_norm"], want, rel_tol=1e-12), key


def test_nonfinite_guard_skips_on_every_rank(guard_results):
    """A NaN in one element of the second rank's gradient shard: both ranks skip that step
    (once), as one process does with the NaN in the whole gradient."""
    for key in ("nonfinite-foreach", "nonfinite-fused", "chain-fused"):
        want = guard_results[0][key]["ref_counters"]["skips"]
        assert want == 1
        assert [r[key]["counters"]["skips"] for r in guard_results] == [want, want], key


def test_step_diagnostics_record_the_whole_model(guard_results):
    """StepDiagnostics under FSDP2 gathers sharded parameters: every rank records the numbers
    one process records (gradient, update and parameter norms, median effective lr)."""
    for key in guard_results[0]:
        want = guard_results[0][key]["ref_numbers"]
        assert len(want) == STEPS
        for rank_results in guard_results:
            got = rank_results[key]["numbers"]
            flat_got = [v for record in got for group in record for v in group]
            flat_want = [v for record in want for group in record for v in group]
            assert len(flat_got) == len(flat_want), key
            for a, b in zip(flat_got, flat_want):
                # the skipped step's gradient norm is NaN in both
                same_nan = math.isnan(a) and math.isnan(b)
                assert same_nan or math.isclose(a, b, rel_tol=1e-10, abs_tol=1e-14), (key, a, b)


def test_guards_under_ddp_and_zero_equal_one_process(ddp_results):
    """Each guard and the chain around AdamW under DDP and around ZeroRedundancyOptimizer
    (fused AdamW on each rank's partition): weights, averages and slow weights equal one
    process's; a NaN in the averaged gradient is skipped once on every rank."""
    results = ddp_results[0]["guards"]
    assert len(results) == 2 * 8
    assert not _failures(results, lambda k, r: _weights_match("-adamw-", r))
    for rank_results in ddp_results:
        for key, result in rank_results["guards"].items():
            want = results[key]["ref_counters"]
            assert result["counters"]["skips"] == want["skips"], key
            if want["last_norm"] is not None:
                assert math.isclose(
                    result["counters"]["last_norm"], want["last_norm"], rel_tol=1e-12
                )


def test_nonfinite_guard_process_group_makes_plain_ranks_agree(ddp_results):
    """Plain parameters whose gradients differ between ranks (a NaN on one rank only): with
    ``process_group`` both ranks skip and say where it was seen; without it only that rank
    skips, which is why the option exists."""
    agree = [r["agreement"][True] for r in ddp_results]
    alone = [r["agreement"][False] for r in ddp_results]
    assert [r["skipped"] for r in agree] == [True, True]
    assert [r["moved"] for r in agree] == [False, False]
    assert agree[0]["parameter"] == "a parameter of another process"
    assert "fc1.weight" in agree[1]["parameter"] or "[0]" in agree[1]["parameter"]
    assert [r["skipped"] for r in alone] == [False, True]
