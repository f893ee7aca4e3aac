"""Notebook 06's sweeps with real processes: two ``python -m dltrack.sweeps`` workers share one
Optuna study (a SQLite file; the team PostgreSQL in team mode) and log each trial as a child of
one MLflow parent run. One worker is SIGKILLed mid-trial. A real browser opens the parent run.

Pruning is made certain: the first two trials are queued with known values (``enqueue_trial``),
one that learns slowly (val_acc about 0.56 after one epoch on the subset) and one that learns
fast (about 0.71), and the workers prune below 0.6 (``--prune-below``: Optuna's
ThresholdPruner).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from dltrack import sweeps, tracking
from dltrack.config import project_root
from dltrack.serving.process import BackgroundServer
from test_team import team  # noqa: F401  (the fixture: PostgreSQL and MLflow's server, real)

SLOW = {"learning_rate": 3e-4, "dropout_rate": 0.5, "batch_size": 128, "hidden_units": 150}
FAST = {"learning_rate": 3e-3, "dropout_rate": 0.1, "batch_size": 32, "hidden_units": 600}
PRUNE_BELOW = 0.6
NOTEBOOK = "06_hyperparameter_sweeps.ipynb"


@dataclass
class Sweep:
    study: optuna.Study
    parent: mlflow.entities.Run
    children: list[mlflow.entities.Run]
    workers: list[subprocess.Popen]
    logs: list[str]
    killed_trial: int | None = None


def _running_child_of(client: MlflowClient, experiment_id: str, pid: int):
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        if run.data.tags.get("sweep.worker", "").endswith(f":{pid}") and run.data.metrics:
            return run  # mid-trial: at least one epoch logged
    return None


def run_sweep(
    name: str, store: str, storage: str, trials: int, epochs: int = 1,
    prune_below: float | None = PRUNE_BELOW, enqueue: bool = True, kill_first_worker: bool = False,
) -> Sweep:  # fmt: skip
    """What notebook 06's scale-out cell does, against the MLflow store ``store``, with 2
    workers of 1 torch thread each."""
    mlflow.set_tracking_uri(store)
    study = optuna.create_study(
        study_name=name, storage=sweeps.study_storage(storage), direction="maximize"
    )
    if enqueue:
        study.enqueue_trial(SLOW)
        study.enqueue_trial(FAST)
    experiment_id = tracking.prepare_experiment(name)
    client = MlflowClient()
    extra = ["--prune-below", str(prune_below)] if prune_below is not None else []
    killed_trial = None
    with mlflow.start_run(experiment_id=experiment_id, run_name="sweep") as parent:
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "dltrack.sweeps", "--study", name, "--storage", storage,
                 "--parent-run-id", parent.info.run_id, "--trials", str(share),
                 "--epochs", str(epochs), "--threads", "1", "--seed", str(i), *extra],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=dict(os.environ, MLFLOW_TRACKING_URI=store),
            )
            for i, share in enumerate([trials // 2 + trials % 2, trials // 2])
        ]  # fmt: skip
        if kill_first_worker:
            deadline = time.monotonic() + 300
            while (run := _running_child_of(client, experiment_id, workers[0].pid)) is None:
                assert time.monotonic() < deadline and workers[0].poll() is None
                time.sleep(0.5)
            killed_trial = int(run.data.tags["optuna.trial_number"])
            os.kill(workers[0].pid, signal.SIGKILL)
        logs = [worker.communicate(timeout=900)[0] for worker in workers]
        assert sweeps.close_stale_trials(study) == []
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return Sweep(study, client.get_run(parent.info.run_id), children, workers, logs, killed_trial)


def check_children_match_trials(sweep: Sweep, epochs: int) -> dict[str, int]:
    """Each trial has exactly one child run, with its params and state; returns the count of
    children by state tag."""
    trials = sweep.study.get_trials()
    by_run = {run.info.run_id: run for run in sweep.children}
    assert len(by_run) == len(sweep.children)
    numbers = [int(run.data.tags["optuna.trial_number"]) for run in sweep.children]
    assert len(numbers) == len(set(numbers)), f"a trial logged twice: {sorted(numbers)}"
    states: dict[str, int] = {}
    for trial in trials:
        if trial.state == TrialState.WAITING:  # a retry nobody ran yet: no child run
            assert trial.number not in numbers
            continue
        child = by_run[trial.user_attrs["mlflow_run_id"]]
        assert int(child.data.tags["optuna.trial_number"]) == trial.number
        assert child.data.tags["optuna.study"] == sweep.study.study_name
        assert {k: child.data.params[k] for k in trial.params} == {
            k: str(v) for k, v in trial.params.items()
        }
        state = child.data.tags["optuna.trial_state"]
        states[state] = states.get(state, 0) + 1
        assert state == trial.state.name
        assert child.info.status == ("KILLED" if state == "FAIL" else "FINISHED")
        if trial.state == TrialState.PRUNED:
            assert child.data.tags["optuna.pruned_at_epoch"] == str(max(trial.intermediate_values))
        if trial.state == TrialState.COMPLETE:
            assert child.data.metrics["val_acc"] == pytest.approx(trial.value, abs=1e-6)
            history = MlflowClient().get_metric_history(child.info.run_id, "val_acc")
            assert len(history) == epochs  # one value per epoch
            artifacts = [
                a.path for a in MlflowClient().list_artifacts(child.info.run_id, "weights")
            ]
            assert artifacts == [sweeps.WEIGHTS]
    return states


def test_the_study_lives_beside_a_sqlite_store_or_where_the_variable_says(monkeypatch, tmp_path):
    monkeypatch.delenv(sweeps.STORAGE_ENV_VAR, raising=False)
    store = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert sweeps.default_storage(store) == f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    with pytest.raises(ValueError, match="set DLTRACK_OPTUNA_STORAGE"):
        sweeps.default_storage("http://127.0.0.1:5050")
    monkeypatch.setenv(sweeps.STORAGE_ENV_VAR, "postgresql+psycopg2://optuna@host/optuna")
    assert sweeps.default_storage("http://127.0.0.1:5050").startswith("postgresql+psycopg2://")
    with pytest.raises(ValueError, match="a study storage is a database URL"):
        sweeps.study_storage(str(tmp_path / "optuna.db"))


def test_a_worker_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exited:
        sweeps.main(["--study", "s", "--parent-run-id", "r", "--epochs", "0"])
    assert exited.value.code == 2 and "--epochs >= 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_store():
    """A fresh SQLite MLflow store; the study goes beside it."""
    folder = Path(tempfile.mkdtemp(prefix="dltrack-sweeps-"))
    yield f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking.tracking_uri())
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def local_sweep(local_store) -> Sweep:
    storage = sweeps.default_storage(local_store)
    assert storage == local_store.replace("/mlflow.db", "/optuna.db")
    return run_sweep("sweep-local", local_store, storage, trials=4)


def test_two_workers_n_trials_one_parent_n_children(local_sweep):
    sweep = local_sweep
    assert [worker.returncode for worker in sweep.workers] == [0, 0], sweep.logs
    trials = sweep.study.get_trials()
    assert len(trials) == 4 and len(sweep.children) == 4
    states = check_children_match_trials(sweep, epochs=1)
    assert trials[0].state == TrialState.PRUNED and trials[1].state == TrialState.COMPLETE
    assert states.get("PRUNED", 0) >= 1 and states.get("COMPLETE", 0) >= 1
    assert sum(states.values()) == 4
    assert sweep.parent.info.status == "FINISHED"
    # both workers ran trials, and at the same time
    workers = {run.data.tags["sweep.worker"] for run in sweep.children}
    assert {w.rsplit(":", 1)[1] for w in workers} == {str(p.pid) for p in sweep.workers}
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_a_killed_worker_fails_its_trial_and_the_parent_still_closes(local_store):
    sweep = run_sweep(
        "sweep-killed", local_store, sweeps.default_storage(local_store), trials=2, epochs=3,
        prune_below=None, enqueue=False, kill_first_worker=True,
    )  # fmt: skip
    assert sweep.workers[0].returncode == -signal.SIGKILL and sweep.workers[1].returncode == 0
    killed = sweep.study.get_trials()[sweep.killed_trial]
    assert killed.state == TrialState.FAIL
    states = check_children_match_trials(sweep, epochs=3)
    assert states["FAIL"] == 1
    retries = [
        t for t in sweep.study.get_trials() if t.system_attrs.get("failed_trial") == killed.number
    ]
    assert len(retries) == 1 and retries[0].params == killed.params  # queued once more
    assert retries[0].state in (TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED)
    assert not sweep.study.get_trials(states=(TrialState.RUNNING,))
    assert all(run.info.status != "RUNNING" for run in sweep.children)
    assert sweep.parent.info.status == "FINISHED"


# -- the notebook ------------------------------------------------------------------------------
def _parents(client: MlflowClient) -> list:
    found = client.get_experiment_by_name("fashion_images_prediction_sweeps")
    if found is None:
        return []
    return client.search_runs(
        [found.experiment_id], filter_string="attributes.run_name = 'sweep'",
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip


@pytest.mark.notebook
def test_notebook_06_runs_twice_resumes_the_study_and_the_parent_keeps_the_best(
    tmp_path, execute_notebook
):
    from notebooks import run_notebook  # tools/notebooks.py

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    if not _parents(client):  # run alone, without nbmake's first run
        run_notebook(project_root() / "notebooks" / NOTEBOOK, tmp_path)
    execute_notebook(NOTEBOOK)
    trials_per_run = int(os.environ.get("DLTRACK_SWEEP_TRIALS", "8"))
    parents = _parents(client)
    assert len(parents) >= 2
    # the first run started the study, every later one resumed it (the parent's param)
    assert [p.data.params["resumed"] for p in parents] == ["True"] * (len(parents) - 1) + ["False"]
    for parent in parents[:2]:
        assert parent.info.status == "FINISHED"
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        assert len(children) == trials_per_run
        completed = [c for c in children if c.data.tags["optuna.trial_state"] == "COMPLETE"]
        top = max(c.data.metrics["val_acc"] for c in completed)
        assert parent.data.metrics["best_val_acc"] == pytest.approx(top)
        # the parent's best trial is a child with the top val_acc (two trials may tie on it)
        (best,) = [c for c in completed if c.data.metrics["val_acc"] == pytest.approx(top)
                   and c.data.tags["optuna.trial_number"] == parent.data.params["best_trial"]]  # fmt: skip
        for name in ("learning_rate", "dropout_rate", "batch_size", "hidden_units"):
            assert parent.data.params[f"best_{name}"] == best.data.params[name]
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
        assert artifacts == {"sweep/optimization_history.png", "sweep/intermediate_values.png"}
    study = optuna.load_study(
        study_name="fmnist-image-predictor-sweep", storage=sweeps.default_storage()
    )
    assert len(study.trials) == trials_per_run * len(parents)
    versions = client.search_model_versions("name = 'fmnist-image-predictor-sweep'")
    assert len(versions) == len(parents)
    assert {v.run_id for v in versions} == {p.info.run_id for p in parents}
    champion = client.get_model_version_by_alias("fmnist-image-predictor-sweep", "champion")
    assert client.get_model_version(champion.name, champion.version).tags["promotion"]


# -- team mode ---------------------------------------------------------------------------------
@pytest.mark.team
def test_two_workers_share_a_study_in_the_team_postgresql(team, monkeypatch):  # noqa: F811
    from dltrack.team.studies import STUDY_DB, STUDY_ROLE, ensure_study_storage

    try:
        team.add_user("carol")
        for key, value in team.client_env("carol").items():
            monkeypatch.setenv(key, value)
        storage = ensure_study_storage(team)
        password = (team.secrets_dir / "optuna-db-password").read_text().strip()
        assert (
            storage.startswith(f"postgresql+psycopg2://{STUDY_ROLE}@") and password not in storage
        )
        sweep = run_sweep("sweep-team", team.url, storage, trials=2)
        assert [worker.returncode for worker in sweep.workers] == [0, 0], sweep.logs
        assert len(sweep.study.get_trials()) == 2 and len(sweep.children) == 2, sweep.logs
        states = check_children_match_trials(sweep, epochs=1)
        assert states.get("PRUNED", 0) >= 1 and states.get("COMPLETE", 0) >= 1
        assert {run.info.user_id for run in [sweep.parent, *sweep.children]} == {"carol"}
        # the study has its own database, owned by its own role, which cannot read MLflow's
        connection = team.postgres.connect()
        cursor = connection.cursor()
        cursor.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (STUDY_DB,)
        )
        assert cursor.fetchone() == (STUDY_ROLE,)
        connection.close()
        import psycopg2

        as_study_role = psycopg2.connect(
            host="127.0.0.1", port=team.pg_port, user=STUDY_ROLE, password=password,
            dbname="mlflow",
        )  # fmt: skip
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            as_study_role.cursor().execute("SELECT count(*) FROM runs")
        as_study_role.close()
    finally:
        mlflow.set_tracking_uri(tracking.tracking_uri())


# -- the browser -------------------------------------------------------------------------------
class MlflowUI(BackgroundServer):
    """``mlflow ui`` on the test's store, on a free port."""

    ready_path = "/health"
    name = "mlflow-ui"

    def command(self) -> list[str]:  # noqa: D102
        return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", self.store,
                "--host", self.host, "--port", str(self.port), "--workers", "1"]  # fmt: skip


@pytest.mark.browser
def test_the_parent_run_page_lists_its_children(local_sweep, local_store, browser):
    ui = MlflowUI(extra_env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    ui.store = local_store
    parent = local_sweep.parent
    expected = {run.info.run_name: run.info.run_id for run in local_sweep.children}
    with ui:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(tracking.run_url(parent.info.experiment_id, parent.info.run_id, base=ui.url))
        page.get_by_text("Child runs").first.wait_for()
        found = {}
        for name in expected:
            link = page.get_by_role("link", name=name, exact=True).first
            link.wait_for()
            found[name] = (link.get_attribute("href") or "").rsplit("/runs/", 1)[1].split("?")[0]
        shots = project_root() / "build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "sweep-parent-run.png"))
        context.close()
    assert found == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "is not running: make server"), ({"DLTRACK_TEAM_PG_PORT": "abc"}, "is not a TCP port")],
)
def test_study_env_command_fails_in_one_paragraph(env, expected, tmp_path, monkeypatch, capsys):
    """``python -m dltrack.team.studies env`` with no team server, or a bad port: exit status 1
    and one ``error:`` line that says what to do, never a traceback."""
    from dltrack.team import studies

    monkeypatch.setenv("DLTRACK_TEAM_HOME", str(tmp_path / "team"))
    monkeypatch.setenv("DLTRACK_TEAM_PG_PORT", "1")  # nothing listens there
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert studies.main(["env"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ") and expected in line
