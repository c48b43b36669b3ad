"""One run: deterministic given its configuration, identified by a hash of it, stored whole."""

import math

import pytest

from optimlab.lab.parallel import WorkerPool
from optimlab.lab.runner import execute_run, make_run_config, run_id
from optimlab.lab.store import Store

# Numbers that measure wall time differ between two identical runs; everything else may not.
TIMING = {"sec_per_step", "train_seconds", "seconds_to_target"}


def _config(seed=0, lr=0.05, optimizer="sgd", problem="linear_regression", steps=40):
    return make_run_config(
        problem, optimizer, {"lr": lr, "momentum": 0.9}, steps=steps, seed=seed, evals=4
    )


def _numbers(record):
    final = {k: v for k, v in record["final"].items() if k not in TIMING}
    curve = dict(record["curve"])
    evals = {k: v for k, v in curve.pop("evals").items() if k != "seconds"}
    return final, curve, evals


def test_same_seed_same_numbers_in_process_and_in_a_worker_process():
    config = _config()
    first, second = execute_run(config), execute_run(config)
    assert _numbers(first) == _numbers(second)
    # A spawned worker process (threads=1, as in a sweep) gives the very same numbers.
    with WorkerPool(workers=2, threads=1) as pool:
        remote = pool.submit(execute_run, config).result()
    assert _numbers(remote) == _numbers(first)
    assert remote["run_id"] == first["run_id"] == run_id(config)


def test_another_seed_gives_other_numbers_and_another_id():
    a, b = execute_run(_config(seed=0)), execute_run(_config(seed=1))
    assert a["run_id"] != b["run_id"]
    assert a["final"]["train_loss"] != b["final"]["train_loss"]


def test_run_id_covers_the_whole_configuration():
    ids = {
        run_id(_config()),
        run_id(_config(seed=1)),
        run_id(_config(lr=0.1)),
        run_id(_config(optimizer="adam")),
        run_id(_config(steps=41)),
    }
    assert len(ids) == 5
    assert run_id(_config()) == run_id(_config())  # stable


def test_record_contents():
    record = execute_run(_config(steps=30))
    final, curve = record["final"], record["curve"]
    assert record["status"] == "finished"
    assert set(record["versions"]) >= {"python", "torch", "optimlab"}
    assert final["steps_done"] == 30 and not final["diverged"]
    assert {"train_loss", "val_loss", "val_metric"} <= set(final)
    assert final["state_bytes_per_param"] > 0  # momentum buffer
    assert final["sec_per_step"] > 0
    assert len(curve["loss"]) == 30 and curve["step"][0] == 0
    assert curve["evals"]["step"] == [0, 8, 15, 22, 30]
    assert curve["diag"] and {"group0/grad_norm", "group0/update_norm", "group0/lr"} <= set(
        curve["diag"][0]
    )


def test_divergence_is_detected_and_stops_the_run():
    record = execute_run(_config(lr=1e4, steps=50))
    assert record["status"] == "diverged"
    assert record["final"]["diverged"] and math.isinf(record["final"]["train_loss"])
    assert record["final"]["steps_done"] < 50


def test_2d_problem_records_its_path():
    config = make_run_config("rosenbrock", "adam", {"lr": 0.01}, steps=20, seed=0)
    record = execute_run(config)
    path = record["curve"]["path"]
    assert len(path) == 21 and len(path[0]) == 2


def test_store_roundtrip_and_insert_is_idempotent(tmp_path):
    record = execute_run(_config(steps=10))
    with Store(tmp_path) as store:
        link = {"sweep_id": "s1", "role": "tune", "problem": "linear_regression", "optimizer": "x"}
        store.begin_sweep("s1", "compare", {"problems": ["linear_regression"]})
        store.put_run(record, [link])
        store.put_run(record, [link])
        assert store.count_runs() == 1
        back = store.get_run(record["run_id"])
        assert back["config"] == record["config"]
        assert back["final"] == pytest.approx(record["final"], nan_ok=True)
        assert [r["run_id"] for r in store.sweep_runs("s1")] == [record["run_id"]]
