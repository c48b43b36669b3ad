"""Tracking: a tiny sweep through the CLI, read back with each tool's own reader.

TensorBoard's event files with its ``EventAccumulator``, W&B's offline runs with
``wandb leet inspect`` (W&B's reader of its ``.wandb`` transaction logs), MLflow's store with
``MlflowClient``. The numbers read back must be the lab's stored ones. Nothing here reaches a
network or the user's home directory: W&B runs offline with its directories, and MLflow with
its telemetry off, under temporary directories.
"""

import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from optimlab.lab.cli import main
from optimlab.lab.results import Results
from optimlab.lab.tracking import tracked_runs

pytest.importorskip("wandb")
pytest.importorskip("mlflow")

pytestmark = pytest.mark.slow

SWEEP = ["compare", "-p", "linear_regression", "rosenbrock", "-o", "sgd", "adam"]
SWEEP += ["--budget", "2", "--seeds", "2", "--steps", "20", "--no-lr-find", "--no-report"]
SWEEP += ["--workers", "1", "--no-progress"]
ALL = ["--track", "tensorboard", "wandb", "mlflow"]


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """W&B offline and quiet, MLflow without telemetry, every side file in a temporary home."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for name, sub in (
            ("HOME", ""),
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
            ("WANDB_CACHE_DIR", "wandb-cache"),
            ("WANDB_CONFIG_DIR", "wandb-config"),
            ("WANDB_DATA_DIR", "wandb-data"),
            ("WANDB_ARTIFACT_DIR", "wandb-artifacts"),
        ):
            mp.setenv(name, str(home / sub))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_ERROR_REPORTING", "false")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DO_NOT_TRACK", "true")
        for name in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "MLFLOW_TRACKING_URI"):
            mp.delenv(name, raising=False)
        yield home


@pytest.fixture(scope="module")
def tracked(isolated, tmp_path_factory):
    """The output directory of the tiny sweep, logged to all three backends, and its id."""
    out = tmp_path_factory.mktemp("tracked")
    assert main([*SWEEP, *ALL, "--out", str(out)]) == 0
    return out, Results.load(out).sweep_id


def _expected(out, sweep):
    """The lab's stored runs of a sweep, as tracking sees them, by track id."""
    results = Results.load(out, sweep)
    runs = {run.track_id: run for run in tracked_runs(results)}
    records = {
        (run["role"], run["label"], run["run_id"]): run for run in results.runs
    }  # the stored records behind them
    return results, runs, records


def _record(records, run):
    return records[(run.role, run.optimizer, run.lab_run_id)]


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


# -- MLflow -----------------------------------------------------------------------------------


def _mlflow(out):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{Path(out) / 'mlflow.db'}")


def _mlflow_runs(out, sweep_id):
    client = _mlflow(out)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(
        experiments, filter_string=f"tags.`optimlab.sweep_id` = '{sweep_id}'", max_results=1000
    )


def test_mlflow_holds_each_run_once_with_the_stored_numbers(tracked):
    tracked, sweep = tracked
    results, expected, records = _expected(tracked, sweep)
    client, found = _mlflow_runs(tracked, results.sweep_id)
    ids = [run.data.tags["optimlab.track_id"] for run in found]
    assert sorted(ids) == sorted(expected)  # every run and role, none twice
    for mlrun in found:
        run = expected[mlrun.data.tags["optimlab.track_id"]]
        record = _record(records, run)
        experiment = client.get_experiment(mlrun.info.experiment_id)
        assert experiment.name == f"optimlab/{record['problem_name']}"
        assert mlrun.info.status == "FINISHED"
        assert mlrun.info.run_name == f"{record['label']}/{run.name}"
        assert mlrun.info.start_time == _ms(record["started_at"])
        params = mlrun.data.params
        assert float(params["lr"]) == record["config"]["hparams"]["lr"]
        assert int(params["seed"]) == record["seed"]
        assert int(params["steps"]) == 20
        assert (params["optimizer"], params["role"]) == (record["label"], record["role"])
        assert params["sweep_id"] == results.sweep_id
        metrics = mlrun.data.metrics
        final = record["final"]
        if math.isfinite(final["train_loss"]):
            assert metrics["final/train_loss"] == final["train_loss"]
        else:  # diverged: no number to log, and the run says so
            assert "final/train_loss" not in metrics and final["diverged"]
        assert metrics["final/sec_per_step"] == final["sec_per_step"]
        assert metrics["final/diverged"] == float(final["diverged"])
        curve = record["curve"]
        history = client.get_metric_history(mlrun.info.run_id, "loss/train")
        assert [(m.step, m.value) for m in history] == list(zip(curve["step"], curve["loss"]))
        evals = client.get_metric_history(mlrun.info.run_id, "eval/train_loss")
        assert [m.step for m in evals] == curve["evals"]["step"]
        assert [m.value for m in evals] == curve["evals"]["train_loss"]
        diag = client.get_metric_history(mlrun.info.run_id, "diag/group0/grad_norm")
        assert [m.step for m in diag] == [row["step"] for row in curve["diag"]]


# -- W&B --------------------------------------------------------------------------------------


def _offline_dirs(out):
    return sorted((Path(out) / "wandb").glob("offline-run-*"))


def _inspect(run_dir: Path) -> dict:
    """A W&B offline run read back by W&B's own reader of its transaction log."""
    text = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    run, summary, history, exit_code = None, {}, [], None
    for line in text.splitlines():
        record = json.loads(line)
        kind = record["type"]
        if kind == "run":
            run = record["run"]
        elif kind == "summary":
            summary.update(record["summary"].get("update", {}))
        elif kind == "history":
            history.append(record["history"]["item"])
        elif kind == "exit":
            exit_code = record["exit"].get("exit_code", 0)
    return {"run": run, "summary": summary, "history": history, "exit_code": exit_code}


def test_wandb_offline_runs_hold_the_stored_numbers(tracked):
    tracked, sweep = tracked
    results, expected, records = _expected(tracked, sweep)
    dirs = _offline_dirs(tracked)
    ids = [d.name.rsplit("-", 1)[1] for d in dirs]
    assert sorted(ids) == sorted(expected)  # one offline run per run and role
    # Read back a final run of the network-free regression and a tuning run of the 2-D
    # function (W&B's reader takes a second or two per run).
    picks = [
        next(r for r in expected.values() if r.role == "final" and r.problem == "rosenbrock"),
        next(r for r in expected.values() if r.role == "tune" and r.problem != "rosenbrock"),
    ]
    for run in picks:
        record = _record(records, run)
        got = _inspect(next(d for d in dirs if d.name.endswith(run.track_id)))
        assert got["exit_code"] == 0
        meta = got["run"]
        assert meta["run_id"] == run.track_id
        assert meta["project"] == "optimlab"
        assert meta["job_type"] == record["role"]
        assert meta["run_group"] == (
            f"{record['problem_name']}/{record['label']}/{record['role']}"
            f"/compare-{results.sweep_id[:8]}"
        )
        assert set(meta["tags"]) == {record["problem_name"], record["label"], record["role"]} | {
            f"compare-{results.sweep_id[:8]}"
        }
        config = meta["config"]["update"]
        assert config["lr"] == record["config"]["hparams"]["lr"]
        assert (config["seed"], config["steps"], config["optimizer"]) == (
            record["seed"],
            20,
            record["label"],
        )
        final = record["final"]
        assert got["summary"]["final/train_loss"] == final["train_loss"]
        assert got["summary"]["final/sec_per_step"] == final["sec_per_step"]
        curve = record["curve"]
        losses = [
            (row["_step"], row["loss/train"]) for row in got["history"] if "loss/train" in row
        ]
        assert losses == list(zip(curve["step"], curve["loss"]))
        evals = [row["_step"] for row in got["history"] if "eval/train_loss" in row]
        assert evals == curve["evals"]["step"]


# -- TensorBoard ------------------------------------------------------------------------------


def test_tensorboard_event_files_hold_the_stored_curves(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from optimlab.lab.tracking.tensorboard import run_dir

    tracked, sweep = tracked
    _, expected, records = _expected(tracked, sweep)
    run = next(r for r in expected.values() if r.role == "final" and r.problem != "rosenbrock")
    record = _record(records, run)
    acc = EventAccumulator(str(run_dir(tracked / "tensorboard", run)))
    acc.Reload()
    losses = [(e.step, e.value) for e in acc.Scalars("loss/train")]
    curve = record["curve"]
    assert [s for s, _ in losses] == curve["step"]
    assert [v for _, v in losses] == pytest.approx(curve["loss"], rel=1e-6)  # stored as float32
    seconds = [e.step for e in acc.Scalars("time/train_seconds")]
    assert seconds == curve["evals"]["step"]


# -- logging again, a killed command, a failing backend ---------------------------------------


def test_running_again_logs_nothing_twice(tracked, capsys):
    tracked, sweep = tracked
    results, expected, _ = _expected(tracked, sweep)
    dirs = _offline_dirs(tracked)
    capsys.readouterr()
    assert main([*SWEEP, *ALL, "--out", str(tracked)]) == 0
    out = capsys.readouterr().out
    n = len(expected)
    assert f"W&B: 0 runs logged, {n} already there" in out
    assert f"MLflow: 0 runs logged, {n} already there" in out
    assert f"TensorBoard: {n} runs logged" in out  # rewritten whole, one event file each
    assert _offline_dirs(tracked) == dirs
    assert len(_mlflow_runs(tracked, results.sweep_id)[1]) == n
    # `report --track` logs a stored sweep, and finds it already there too.
    assert main(["report", "--out", str(tracked), "--sweep", sweep, "--track", "mlflow"]) == 0
    assert f"MLflow: 0 runs logged, {n} already there" in capsys.readouterr().out


def test_a_killed_command_resumes_without_duplicates(tracked, monkeypatch, capsys):
    """Interrupted inside the third run's logging, each backend leaves a half-logged run;
    the same command run again replaces it and logs the rest, each run once."""
    from mlflow import MlflowClient

    from optimlab.lab.tracking.runs import TrackedRun

    tracked, _ = tracked
    sweep = [*SWEEP, "--seeds", "3"]  # another sweep (the last --seeds wins), same stored runs
    calls = {"rows": 0, "terminated": 0}
    rows, terminate = TrackedRun.rows, MlflowClient.set_terminated

    def interrupted_rows(self):
        calls["rows"] += 1
        if calls["rows"] == 3:
            raise KeyboardInterrupt
        return rows(self)

    def interrupted_terminate(self, *args, **kwargs):
        calls["terminated"] += 1
        if calls["terminated"] == 3:
            raise KeyboardInterrupt
        return terminate(self, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(TrackedRun, "rows", interrupted_rows)
        assert main([*sweep, "--track", "wandb", "--out", str(tracked)]) == 130
        mp.setattr(MlflowClient, "set_terminated", interrupted_terminate)
        assert main([*sweep, "--track", "mlflow", "--out", str(tracked)]) == 130

    results = Results.load(tracked)  # the sweep just interrupted is the latest one
    _, expected, _ = _expected(tracked, results.sweep_id)
    _, found = _mlflow_runs(tracked, results.sweep_id)
    assert sorted(r.info.status for r in found) == ["FINISHED", "FINISHED", "RUNNING"]
    ledger = json.loads((tracked / "wandb" / "optimlab-logged.json").read_text())
    assert len([i for i in expected if i in ledger["offline:optimlab"]]) == 2
    half = [d for d in _offline_dirs(tracked) if d.name.rsplit("-", 1)[1] in expected]
    half = [d for d in half if d.name.rsplit("-", 1)[1] not in ledger["offline:optimlab"]]
    assert len(half) == 1  # the run being logged when the command was interrupted
    assert _inspect(half[0])["exit_code"] != 0

    capsys.readouterr()
    assert main([*sweep, "--track", "wandb", "mlflow", "--out", str(tracked)]) == 0
    out = capsys.readouterr().out
    n = len(expected)
    assert f"W&B: {n - 2} runs logged, 2 already there" in out
    assert f"MLflow: {n - 2} runs logged, 2 already there" in out
    _, found = _mlflow_runs(tracked, results.sweep_id)
    assert sorted(r.data.tags["optimlab.track_id"] for r in found) == sorted(expected)
    assert {r.info.status for r in found} == {"FINISHED"}
    ids = [d.name.rsplit("-", 1)[1] for d in _offline_dirs(tracked)]
    assert all(ids.count(i) == 1 for i in expected)
    assert not half[0].exists()  # replaced by a complete one
    replaced = next(d for d in _offline_dirs(tracked) if d.name.endswith(half[0].name[-20:]))
    assert _inspect(replaced)["exit_code"] == 0


def test_a_failing_backend_is_reported_once_and_the_rest_goes_on(tracked, monkeypatch, capsys):
    import wandb

    def refuse(self, *args, **kwargs):
        raise ConnectionError("no route to host\nsecond line of detail")

    tracked, _ = tracked
    sweep = [*SWEEP, "--seeds", "1"]
    monkeypatch.setattr(wandb.Run, "log", refuse)
    capsys.readouterr()
    assert main([*sweep, "--track", "wandb", "mlflow", "--out", str(tracked)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warnings) == 1
    assert warnings[0].startswith("optimlab: warning: W&B: stopped after 0 of ")
    assert "ConnectionError: no route to host" in warnings[0]
    assert "run the command again" in warnings[0]
    results = Results.load(tracked)
    n = len(tracked_runs(results))
    assert f"MLflow: {n} runs logged" in captured.out
    assert "Runs stored in" in captured.out


# -- bad input --------------------------------------------------------------------------------


def test_a_missing_package_is_one_line_before_any_work(isolated, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    out = tmp_path / "out"
    assert main([*SWEEP, "--track", "wandb", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "optimlab: error: --track wandb needs the wandb package: pip install wandb"
    assert not (out / "lab.db").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--track", "neptune"], "unknown tracking backend 'neptune'"),
        (["--mlflow-uri", "nosuch://host/x"], "cannot use the MLflow tracking URI"),
        (["--mlflow-uri", "a-directory"], "cannot use the MLflow tracking URI 'a-directory'"),
    ],
)
def test_bad_tracking_options_are_one_line(isolated, tmp_path, capsys, argv, expected):
    try:
        code = main([*SWEEP, *argv, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse's own check of --track
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out" / "lab.db").exists()


def test_wandb_is_offline_unless_told_otherwise(monkeypatch):
    from optimlab.lab.errors import LabError
    from optimlab.lab.tracking.wandb import resolve_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(LabError, match="unknown W&B mode 'sometimes'"):
        resolve_mode()


# -- the common view and the choice of backends (no tool involved) -----------------------------


def _stored_run(role="final", label="adam", **final):
    """A stored run as ``Results.runs`` holds it, with a diverged tail."""
    return {
        "run_id": "r" * 20,
        "role": role,
        "label": label,
        "problem_name": "digits_mlp",
        "seed": 1,
        "config": {
            "problem": "digits_mlp",
            "optimizer": "adam",
            "hparams": {"lr": 0.01, "betas": [0.9, 0.99], "seed": 7},
            "steps": 4,
            "seed": 1,
            "engine": "auto",
            "evals": 2,
            "protocol": 1,
        },
        "final": {"train_loss": math.inf, "diverged": True, "sec_per_step": 0.002, **final},
        "curve": {
            "step": [0, 1, 2, 3],
            "loss": [2.0, 1.5, float("nan"), math.inf],
            "smooth": [2.0, 1.75, 1.6, 1.6],
            "evals": {"step": [0, 2], "seconds": [0.0, 0.004], "train_loss": [2.0, 1.4]},
            "diag": [{"step": 0, "group0/grad_norm": 3.0, "group0/lr": 0.01}],
        },
        "wall_time": 0.5,
        "started_at": "2026-01-02T03:04:05.000000+00:00",
        "finished_at": "2026-01-02T03:04:06.000000+00:00",
        "versions": {"torch": "2.13.0", "optimlab": "0.1.0", "python": "3.11.7"},
        "host": "box",
    }


class _Results:
    def __init__(self, *runs):
        self.sweep_id, self.kind, self.plan = "s" * 20, "compare", {"budget": 8, "search": "grid"}
        self.runs = list(runs)


def test_every_backend_gets_the_same_view_of_a_run():
    [run] = tracked_runs(_Results(_stored_run()))
    assert run.name == "final-lr=0.01-seed=1"
    assert run.sweep_label == "compare-ssssssss"
    assert run.tags == ["digits_mlp", "adam", "final", "compare-ssssssss"]
    # Hyperparameters at the top level; one named like a lab field keeps its own name apart.
    assert run.config["lr"] == 0.01 and run.config["betas"] == [0.9, 0.99]
    assert run.config["hparams.seed"] == 7 and run.config["seed"] == 1
    assert (run.config["steps"], run.config["tuning_budget"], run.config["torch"]) == (
        4,
        8,
        "2.13.0",
    )
    # Non-finite points are left out; evaluations, their time and diagnostics keep their steps.
    assert run.series["loss/train"] == [(0, 2.0), (1, 1.5)]
    assert run.series["eval/train_loss"] == [(0, 2.0), (2, 1.4)]
    assert run.series["time/train_seconds"] == [(0, 0.0), (2, 0.004)]
    assert run.series["diag/group0/grad_norm"] == [(0, 3.0)]
    assert run.rows()[0] == (
        0,
        {
            "loss/train": 2.0,
            "loss/train_smoothed": 2.0,
            "eval/train_loss": 2.0,
            "time/train_seconds": 0.0,
            "diag/group0/grad_norm": 3.0,
            "diag/group0/lr": 0.01,
        },
    )
    assert run.last_step == 3
    # A diverged run has no final loss to log, and says so.
    assert "final/train_loss" not in run.final
    assert run.final["final/diverged"] == 1.0
    assert run.final["final/sec_per_step"] == 0.002
    assert run.final["final/wall_time"] == 0.5


def test_a_run_in_two_roles_or_under_two_labels_is_tracked_apart():
    runs = tracked_runs(
        _Results(_stored_run(), _stored_run(role="tune"), _stored_run(label="adam:eps=1e-8"))
    )
    assert len({run.track_id for run in runs}) == 3
    again = tracked_runs(_Results(_stored_run()))
    assert again[0].track_id == runs[0].track_id  # stable: the same run is the same id
    assert len(runs[0].track_id) == 20


def test_backends_are_chosen_once_each_in_a_fixed_order():
    from optimlab.lab.errors import LabError
    from optimlab.lab.tracking import make_trackers

    names = [t.name for t in make_trackers(["mlflow", "WandB", "mlflow"], tensorboard=True)]
    assert names == ["tensorboard", "wandb", "mlflow"]
    [mlflow] = make_trackers((), mlflow_uri="http://localhost:5000")  # the URI implies MLflow
    assert mlflow.name == "mlflow" and mlflow._uri == "http://localhost:5000"
    assert make_trackers(None) == []
    with pytest.raises(LabError, match="unknown tracking backend 'comet'"):
        make_trackers("comet")
