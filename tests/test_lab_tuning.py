"""Tuners: the log grid, the Optuna search and its recovery of interrupted trials."""

import math
import os
import subprocess
import sys
import time

import pytest

from optimlab.lab.errors import LabError
from optimlab.lab.objective import Objective
from optimlab.lab.tuning import GridTuner, OptunaTuner, grid_lrs, lr_edge, search_params


def _record(loss, metric=None, diverged=False):
    final = {"train_loss": loss, "val_loss": loss, "diverged": diverged}
    if metric is not None:
        final["val_metric"] = metric
    return {"final": final}


def test_grid_is_log_spaced_over_the_range():
    assert grid_lrs(1e-4, 1.0, 5) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert grid_lrs(1e-4, 1.0, 1) == pytest.approx([1e-2])
    with pytest.raises(LabError):
        grid_lrs(1e-4, 1.0, 0)


def test_grid_tuner_picks_the_best_and_breaks_ties_by_loss():
    tuner = GridTuner([0.01, 0.1, 1.0], {"momentum": 0.9}, Objective(metric="accuracy"))
    pending = tuner.pending()
    assert [hp["lr"] for _, hp in pending] == [0.01, 0.1, 1.0]
    assert all(hp["momentum"] == 0.9 for _, hp in pending)
    assert tuner.pending() == []  # handed out once
    results = {0.01: _record(0.5, 0.9), 0.1: _record(0.3, 0.9), 1.0: _record(9.0, diverged=True)}
    for token, hp in pending:
        assert not tuner.done()
        tuner.record(token, hp, results[hp["lr"]])
    assert tuner.done()
    assert tuner.best()["lr"] == 0.1  # same accuracy as 0.01, lower loss


def test_search_params_by_name_and_all():
    assert search_params("adam", "lr") == []
    assert [p.name for p in search_params("adam", "beta1,eps")] == ["beta1", "eps"]
    assert "momentum" in [p.name for p in search_params("sgd", "all")]
    with pytest.raises(LabError, match="cannot tune 'rho' for adam"):
        search_params("adam", "rho")


def _tuner(url, budget=3, grace_period=120):
    return OptunaTuner(
        study_name="t",
        storage=url,
        objective=Objective(metric=None),
        base={},
        lr_range=(1e-3, 1.0),
        params=search_params("adam", "beta1"),
        defaults={"betas": (0.9, 0.999)},
        budget=budget,
        parallel=1,
        seed=0,
        grace_period=grace_period,
    )


def test_optuna_tuner_spends_the_budget_and_returns_the_best(tmp_path):
    tuner = _tuner(f"sqlite:///{tmp_path / 'o.db'}")
    seen = []
    while not tuner.done():
        for token, hp in tuner.pending():
            assert 1e-3 <= hp["lr"] <= 1.0 and hp["betas"][1] == 0.999
            seen.append(hp)
            tuner.record(token, hp, _record(abs(hp["lr"] - 0.1)))
    assert len(seen) == 3
    best = tuner.best()
    assert best == min(seen, key=lambda hp: abs(hp["lr"] - 0.1))


_ASK_AND_DIE = """
import os, sys
sys.path.insert(0, {tests!r})
from test_lab_tuning import _tuner
[(token, hparams)] = _tuner({url!r}).pending()
print(token, hparams["lr"], hparams["betas"][0], flush=True)
os._exit(0)  # gone without reporting the trial, like a process killed mid-run
"""


def test_optuna_trial_of_a_killed_process_is_run_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    code = _ASK_AND_DIE.format(tests=os.path.dirname(__file__), url=url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    token, lr, beta1 = out.stdout.split()

    second = _tuner(url)
    assert [t.state.name for t in second.study.trials] == ["RUNNING"]
    adopted = second.pending()
    # The orphaned trial comes back first, with its own number and parameters.
    assert adopted[0][0] == int(token)
    assert adopted[0][1]["lr"] == float(lr) and adopted[0][1]["betas"][0] == float(beta1)
    while not second.done():
        for tok, hp in adopted or second.pending():
            second.record(tok, hp, _record(1.0))
        adopted = []
    assert [t.state.name for t in second.study.trials] == ["COMPLETE"] * 3


_DIE_ELSEWHERE = """
import os, socket, sys
sys.path.insert(0, {tests!r})
socket.gethostname = lambda: "another-machine"
from test_lab_tuning import _tuner
[(token, hparams)] = _tuner({url!r}).pending()
print(token, hparams["lr"], flush=True)
os._exit(0)  # its heartbeats stop, as a machine that crashed
"""

_DIE_BEFORE_ITS_FIRST_HEARTBEAT = """
import os, optuna
study = optuna.load_study(study_name="t", storage={url!r})
print(study.ask().number, flush=True)  # a trial nobody owns yet
os._exit(0)
"""


def _until_done(tuner, record=lambda hp: _record(abs(hp["lr"] - 0.1))):
    """Run the tuner as the scheduler does, waiting while others' trials are outstanding."""
    while not tuner.done():
        pending = tuner.pending()
        if not pending:
            assert tuner.waiting()
            time.sleep(tuner.poll_interval)
        for token, hp in pending:
            tuner.record(token, hp, record(hp))


@pytest.mark.parametrize("script", [_DIE_ELSEWHERE, _DIE_BEFORE_ITS_FIRST_HEARTBEAT])
def test_a_trial_whose_worker_died_elsewhere_is_failed_and_run_again(tmp_path, script):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    _tuner(url).close()  # the study exists
    code = script.format(tests=os.path.dirname(__file__), url=url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dead = int(out.stdout.split()[0])

    survivor = _tuner(url, budget=3, grace_period=1)
    started = time.monotonic()
    _until_done(survivor)
    survivor.close()
    assert time.monotonic() - started < 30
    trials = survivor.study.get_trials()
    assert [t.state.name for t in trials].count("COMPLETE") == 3
    assert trials[dead].state.name == "FAIL"
    [rerun] = [t for t in trials if t.system_attrs.get("failed_trial") == dead]
    assert rerun.state.name == "COMPLETE" and rerun.user_attrs["pid"] == os.getpid()
    if "lr" in trials[dead].params:  # a trial that had its parameters runs them again
        assert rerun.params == trials[dead].params


def test_a_trial_whose_run_raised_is_failed_and_not_run_again(tmp_path):
    tuner = _tuner(f"sqlite:///{tmp_path / 'o.db'}", budget=2)
    [(token, _)] = tuner.pending()
    tuner.abandon(token, "ValueError: the optimizer refused")
    _until_done(tuner)
    tuner.close()
    states = [(t.state.name, t.user_attrs.get("error")) for t in tuner.study.get_trials()]
    assert states == [
        ("FAIL", "ValueError: the optimizer refused"),
        ("COMPLETE", None),
        ("COMPLETE", None),
    ]


def test_processes_of_one_study_never_exceed_its_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    first, second = _tuner(url, budget=3), _tuner(url, budget=3)
    first.parallel = second.parallel = 2
    second.host = "another-machine"  # or it would take over the trials of this process
    asked = first.pending() + second.pending()  # two, then the one left
    assert len(asked) == 3 and second.waiting() is False
    assert first.pending() == [] and second.pending() == []
    for tuner, (token, hp) in zip([first, first, second], asked):
        assert not tuner.done()
        tuner.record(token, hp, _record(1.0))
    assert first.done() and second.done() and first.best() == second.best()
    first.close()
    second.close()


def _accuracy_peaking_at(peak):
    """A record whose accuracy falls off with the distance (in decades) from ``peak``."""

    def record(lr):
        return _record(1.0, metric=1.0 - 0.1 * abs(math.log10(lr / peak)))

    return record


def _run(tuner, record):
    tried = []
    while not tuner.done():
        pending = tuner.pending()
        assert pending, "not done, yet nothing to run"
        for token, hp in pending:
            tried.append(hp["lr"])
            tuner.record(token, hp, record(hp["lr"]))
    return tried


def test_grid_grows_past_the_high_edge_by_its_own_log_step():
    # Grid 1e-3, 1e-2, 1e-1 (a decade per step); the optimum at 3 is beyond the top.
    tuner = GridTuner(grid_lrs(1e-3, 1e-1, 3), {}, Objective(metric="accuracy"), extend=3)
    tried = _run(tuner, _accuracy_peaking_at(3.0))
    # 1 and 10 are added one at a time; 10 is worse than 1, so the grid stops there.
    assert tried == pytest.approx([1e-3, 1e-2, 1e-1, 1.0, 10.0])
    assert tuner.best()["lr"] == pytest.approx(1.0)
    assert tuner.added == {"low": 0, "high": 2} and tuner.size == 5


def test_grid_grows_past_the_low_edge_and_stops_at_its_limit():
    tuner = GridTuner(grid_lrs(1e-2, 1.0, 3), {"momentum": 0.9}, Objective(metric=None), extend=2)
    # A loss that keeps falling with the learning rate: the best stays at the low edge.
    tried = _run(tuner, lambda lr: _record(lr))
    assert tried == pytest.approx([1e-2, 1e-1, 1.0, 1e-3, 1e-4])
    assert tuner.added == {"low": 2, "high": 0}
    assert lr_edge(tried, tuner.best()["lr"]) == "low"  # still at the edge: flagged


def test_grid_extension_does_not_depend_on_the_order_results_arrive_in():
    def run(order):
        tuner = GridTuner(grid_lrs(1e-3, 1e-1, 3), {}, Objective(metric="accuracy"), extend=3)
        record = _accuracy_peaking_at(3.0)
        pending = tuner.pending()
        for i in order:
            token, hp = pending[i]
            tuner.record(token, hp, record(hp["lr"]))
        return _run(tuner, record)

    assert run([0, 1, 2]) == run([2, 0, 1]) == pytest.approx([1.0, 10.0])


def test_grid_without_extension_or_with_one_point_stays_as_it_is():
    tuner = GridTuner([0.01, 0.1], {}, Objective(metric=None), extend=0)
    assert _run(tuner, lambda lr: _record(lr)) == [0.01, 0.1]
    single = GridTuner([0.05], {}, Objective(metric=None), extend=3)  # a fixed lr
    assert _run(single, lambda lr: _record(lr)) == [0.05]
    assert lr_edge([0.05], 0.05) is None
    assert lr_edge([0.01, 0.1, 1.0], 0.1) is None
    assert lr_edge([0.01, 0.1, 1.0], 1.0) == "high"
    with pytest.raises(LabError):
        GridTuner([0.01], {}, Objective(metric=None), extend=-1)
