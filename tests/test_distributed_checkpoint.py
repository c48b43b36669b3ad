"""Checkpoints of sharded optimizer state with torch.distributed.checkpoint (DCP): saved by
FSDP2 on two processes, loaded on one (resharded), saved there and loaded on two again; every
optimizer in float64, and several in bfloat16 for the state dtypes. The scenarios run in
tests/distributed_cases.py, one process group per world size."""

from __future__ import annotations

import pytest
import torch

from distributed_cases import (
    DTYPE_RUNS,
    SAVED_AT,
    checkpoint_load,
    checkpoint_save,
    max_diff,
    needs_gloo,
    spawn,
)
from specs import SPECS

pytestmark = needs_gloo


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Rank 0's results of: saving at world size 2, loading (and saving again) at 1, loading
    that at 2."""
    directory = str(tmp_path_factory.mktemp("dcp"))
    saved = spawn(checkpoint_save, 2, directory)[0]
    resharded = spawn(checkpoint_load, 1, directory, "first", "second")[0]
    resumed = spawn(checkpoint_load, 2, directory, "second")[0]
    for results in (saved, resharded, resumed):
        errors = [f"{key}: {r['error']}" for key, r in results.items() if "error" in r]
        assert not errors, "\n".join(errors)
    return saved, resharded, resumed


def _as64(weights: dict) -> dict:
    return {k: v.double() for k, v in weights.items()}


def _loaded_dtypes(key: str, saved: dict) -> dict:
    """The dtypes state loads in: as saved, except that a float32 scalar other than the step
    count (NAdam's mu product) of a float64 parameter loads as float64, a cast that loses
    nothing and that torch.optim makes too (optimlab never casts to less precision)."""
    if not key.endswith("float64"):
        return saved
    return {
        name: torch.float64 if dtype == torch.float32 and not name.endswith(".step") else dtype
        for name, dtype in saved.items()
    }


#: runs whose loaded state is upcast (above), so the step after a load is not bit for bit
#: the uninterrupted one (5e-11 here)
UPCAST = ("nadam-float64",)


def test_runs_cover_every_optimizer_and_low_precision(runs):
    saved = runs[0]
    assert {key.rsplit("-", 1)[0] for key in saved if key.endswith("float64")} == {
        s.name for s in SPECS
    }
    assert {key.rsplit("-", 1)[0] for key in saved if key.endswith("bfloat16")} == set(DTYPE_RUNS)
    assert SAVED_AT >= 2
    # every run has state to lose, and the bfloat16 runs (but SGD, which counts no steps) keep
    # float32 scalars beside their bfloat16 state
    for key, result in saved.items():
        dtypes = set(result["saved"]["dtypes"].values())
        assert dtypes, key
        if key.endswith("bfloat16"):
            want = {torch.bfloat16} if key.startswith("sgd") else {torch.bfloat16, torch.float32}
            assert dtypes == want, (key, dtypes)


def test_save_at_two_load_at_one_restores_every_state_exactly(runs):
    """The state one process loads from a two-process checkpoint is the whole state, bit for
    bit, with every dtype as saved (bfloat16 moments, float32 step counts and NAdam's float32
    mu product stay so)."""
    saved, resharded, _ = runs
    for key, result in saved.items():
        want, got = result["saved"], resharded[key]["loaded"]
        assert got["dtypes"] == _loaded_dtypes(key, want["dtypes"]), key
        for name, value in want["state"].items():
            assert torch.equal(got["state"][name].to(value.dtype), value), (key, name)
        assert max_diff(got["weights"], want["weights"]) == 0, key


def test_resharded_run_continues_like_the_uninterrupted_one(runs):
    """One process continues from the two-process checkpoint as the two processes continued:
    the same step but for the order in which the batch's gradient was summed (float64: 1e-12,
    NAdam's upcast mu product 1e-10; bfloat16: one rounding step of the weights)."""
    saved, resharded, _ = runs
    for key, result in saved.items():
        err = max_diff(_as64(resharded[key]["continued"]), _as64(result["continued"]))
        tol = 1e-10 if key in UPCAST else 1e-12 if key.endswith("float64") else 2.0**-7
        assert err <= tol, (key, err)


def test_save_at_one_load_at_two_continues_bit_exactly(runs):
    """The checkpoint one process saved, loaded by two, gives the state and the next step the
    two processes had without any checkpoint: bit for bit (2 -> 1 -> 2 loses nothing), but
    where a lossless upcast at load changes the arithmetic of the next step (NAdam in
    float64: 1e-10)."""
    saved, _, resumed = runs
    assert set(UPCAST) <= set(saved)
    for key, result in saved.items():
        got = resumed[key]
        assert got["loaded"]["dtypes"] == _loaded_dtypes(key, result["saved"]["dtypes"]), key
        for name, value in result["saved"]["state"].items():
            assert torch.equal(got["loaded"]["state"][name].to(value.dtype), value), (key, name)
        err = max_diff(_as64(got["continued"]), _as64(result["continued"]))
        assert err <= (1e-10 if key in UPCAST else 0.0), (key, err)
