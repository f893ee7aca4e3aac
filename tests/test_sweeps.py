"""Notebook 06's sweeps with real processes: ``python -m dltrack.sweeps`` workers share one
Optuna study and log each trial as a child of one MLflow parent run.

The notebook's two executions ran on the team server, the study in the team PostgreSQL
(``tests/executions.py``): the tests read that store and that study, and a real browser opens
the parent run in the server's UI. What the notebook does not do is launched here, on a local
store: a worker SIGKILLed in the middle of a trial (stopped first, so the kill cannot land after
the trial ended).
"""

from __future__ import annotations

import os
import shlex
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
from executions import SWEEPS

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


def _kill_in_the_middle_of_a_trial(
    client: MlflowClient, study: optuna.Study, experiment_id: str, worker: subprocess.Popen
) -> int:
    """SIGKILL ``worker`` while a trial of its is RUNNING with an epoch logged; returns the
    trial's number. The worker is stopped (SIGSTOP) before the check and killed stopped, so the
    trial checked is the trial killed."""
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline and worker.poll() is None, "no trial to kill"
        os.kill(worker.pid, signal.SIGSTOP)
        run = _running_child_of(client, experiment_id, worker.pid)
        if run is not None:
            number = int(run.data.tags["optuna.trial_number"])
            if study.trials[number].state == TrialState.RUNNING:
                os.kill(worker.pid, signal.SIGKILL)
                return number
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.5)


def run_sweep(
    name: str, store: str, storage: str, trials: int, epochs: int = 1,
    prune_below: float | None = PRUNE_BELOW, enqueue: bool = True, kill_first_worker: bool = False,
) -> Sweep:  # fmt: skip
    """What notebook 06's scale-out cell does, against the MLflow store ``store``, with 2
    workers of 1 torch thread each. Pruning is made certain with ``enqueue``: the first two
    trials are queued with known values, one that learns slowly (val_acc about 0.56 after one
    epoch on the subset) and one that learns fast (about 0.71), and the workers prune below 0.6
    (``--prune-below``: Optuna's ThresholdPruner)."""
    mlflow.set_tracking_uri(store)
    study = optuna.create_study(
        study_name=name, storage=sweeps.study_storage(storage), direction="maximize"
    )
    if enqueue:
        study.enqueue_trial(SLOW)
        study.enqueue_trial(FAST)
    experiment_id = tracking.prepare_experiment(name)
    client = MlflowClient()
    killed_trial = None
    with mlflow.start_run(experiment_id=experiment_id, run_name="sweep") as parent:
        workers = [
            subprocess.Popen(
                [sys.executable, *sweeps.worker_command(
                    name, parent.info.run_id, trials=share, epochs=epochs, seed=i, threads=1,
                    prune_below=prune_below)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "MLFLOW_TRACKING_URI": store, sweeps.STORAGE_ENV_VAR: storage},
            )
            for i, share in enumerate([trials // 2 + trials % 2, trials // 2])
        ]  # fmt: skip
        if kill_first_worker:
            killed_trial = _kill_in_the_middle_of_a_trial(client, study, experiment_id, workers[0])
        logs = [worker.communicate(timeout=900)[0] for worker in workers]
        assert sweeps.close_stale_trials(study) == []
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return Sweep(study, client.get_run(parent.info.run_id), children, workers, logs, killed_trial)


def check_children_match_trials(
    sweep: Sweep, epochs: int, trials: list[optuna.trial.FrozenTrial] | None = None
) -> dict[str, int]:
    """Each trial (default: every trial of the study) has exactly one child run, with its params
    and state; returns the count of children by state tag."""
    trials = sweep.study.get_trials() if trials is None else trials
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
    assert sweeps.default_storage(store) == f"journal://{tmp_path / 'runs' / 'optuna.journal'}"
    with pytest.raises(ValueError, match="set DLTRACK_OPTUNA_STORAGE"):
        sweeps.default_storage("http://127.0.0.1:5050")
    monkeypatch.setenv(sweeps.STORAGE_ENV_VAR, "postgresql+psycopg2://optuna@host/optuna")
    assert sweeps.default_storage("http://127.0.0.1:5050").startswith("postgresql+psycopg2://")
    with pytest.raises(ValueError, match="a study storage is a database URL"):
        sweeps.study_storage(str(tmp_path / "optuna.db"))


def test_the_worker_command_is_what_the_worker_parses():
    command = sweeps.worker_command("s", "r", trials=3, epochs=2, data_dir="/d", train_seed=7,
                                    seed=5, threads=1, prune_below=0.5)  # fmt: skip
    assert command[:2] == ["-m", "dltrack.sweeps"]
    args = sweeps._parser().parse_args(command[2:])
    assert (args.study, args.parent_run_id, args.trials, args.epochs, args.data_dir,
            args.train_seed, args.seed, args.threads, args.prune_below) == (
        "s", "r", 3, 2, "/d", 7, 5, 1, 0.5)  # fmt: skip
    minimal = sweeps._parser().parse_args(sweeps.worker_command("s", "r", trials=1, epochs=1)[2:])
    assert (minimal.data_dir, minimal.train_seed) == ("", 42)
    assert (minimal.seed, minimal.threads, minimal.prune_below) == (None, None, None)
    with pytest.raises(ValueError, match="epochs >= 1"):
        sweeps.worker_command("s", "r", trials=1, epochs=0)


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


@pytest.mark.timeout(900)
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


# -- the notebook, on the team server ---------------------------------------------------------------
EXPERIMENT, MODEL, STUDY = (
    "fashion_images_prediction_sweeps", "fmnist-image-predictor-sweep", "fmnist-image-predictor-sweep"
)  # fmt: skip


@pytest.fixture()
def parents(notebooks, as_alice) -> list:
    """Notebook 06's parent runs on the team server, newest first: one per execution."""
    for round_ in (1, 2):
        notebooks.execution(SWEEPS, round_)
    found = as_alice.get_experiment_by_name(EXPERIMENT)
    return as_alice.search_runs(
        [found.experiment_id], filter_string="attributes.run_name = 'sweep'",
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip


@pytest.mark.notebook
def test_notebook_06_runs_twice_resumes_the_study_and_the_parent_keeps_the_best(parents):
    client = MlflowClient()
    assert len(parents) == 2
    # the first execution started the study, the second resumed it (the parent's param)
    assert [p.data.params["resumed"] for p in parents] == ["True", "False"]
    study = optuna.load_study(study_name=STUDY, storage=sweeps.study_storage(sweeps.default_storage()))
    for parent in parents:
        assert parent.info.status == "FINISHED"
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        assert len(children) == int(parent.data.params["trials"])
        mine = [t for t in study.trials if t.user_attrs.get("mlflow_parent_run_id") == parent.info.run_id]
        sweep = Sweep(study, parent, children, [], [])
        check_children_match_trials(sweep, epochs=int(parent.data.params["epochs"]), trials=mine)
        # every worker ran its share of the trials
        workers = {c.data.tags["sweep.worker"] for c in children}
        assert len(workers) == min(int(parent.data.params["workers"]), len(children))
        completed = [c for c in children if c.data.tags["optuna.trial_state"] == "COMPLETE"]
        if not completed:  # every trial of this sweep pruned: the parent keeps the study's best
            best_trials = [t for t in study.trials if t.state == TrialState.COMPLETE
                           and t.datetime_complete < mine[0].datetime_start]  # fmt: skip
            assert parent.data.params["best_trial"] == str(
                max(best_trials, key=lambda t: t.value).number
            )
            continue
        top = max(c.data.metrics["val_acc"] for c in completed)
        assert parent.data.metrics["best_val_acc"] == pytest.approx(top)
        # the parent's best trial is a child with the top val_acc (two trials may tie on it)
        (best,) = [c for c in completed if c.data.metrics["val_acc"] == pytest.approx(top)
                   and c.data.tags["optuna.trial_number"] == parent.data.params["best_trial"]]  # fmt: skip
        for name in ("learning_rate", "dropout_rate", "batch_size", "hidden_units"):
            assert parent.data.params[f"best_{name}"] == best.data.params[name]
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
        assert artifacts == {"sweep/optimization_history.png", "sweep/intermediate_values.png"}
    assert len(study.trials) == sum(int(p.data.params["trials"]) for p in parents)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert {v.run_id for v in versions} == {p.info.run_id for p in parents}
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert client.get_model_version(champion.name, champion.version).tags["promotion"]


@pytest.mark.team
@pytest.mark.notebook
def test_the_study_has_its_own_database_and_role_in_the_team_postgresql(parents, team):
    from dltrack.team.studies import STUDY_DB, STUDY_ROLE

    storage = sweeps.default_storage()
    password = (team.secrets_dir / "optuna-db-password").read_text().strip()
    assert storage.startswith(f"postgresql+psycopg2://{STUDY_ROLE}@") and password not in storage
    assert STUDY in optuna.get_all_study_names(sweeps.study_storage(storage))
    connection = team.postgres.connect()
    cursor = connection.cursor()
    cursor.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (STUDY_DB,))
    assert cursor.fetchone() == (STUDY_ROLE,)
    connection.close()
    import psycopg2

    as_study_role = psycopg2.connect(
        host="127.0.0.1", port=team.pg_port, user=STUDY_ROLE, password=password, dbname="mlflow",
    )  # fmt: skip
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_study_role.cursor().execute("SELECT count(*) FROM runs")
    as_study_role.close()


@pytest.mark.browser
@pytest.mark.notebook
def test_the_parent_run_page_lists_its_children(parents, team, browser):
    parent = parents[0]
    children = MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    expected = {run.info.run_name: run.info.run_id for run in children}
    context = browser.new_context(
        http_credentials={"username": "alice", "password": os.environ["MLFLOW_TRACKING_PASSWORD"]},
        viewport={"width": 1440, "height": 900},
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(tracking.run_url(parent.info.experiment_id, parent.info.run_id, base=team.url))
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


def _join_lines(executed: Path) -> list[str]:
    """The shell lines notebook 06's scale-out cell printed under "join from another terminal"."""
    import nbformat

    for cell in nbformat.read(executed, as_version=4).cells:
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
        if "join from another terminal" in text:
            after = text.split("join from another terminal", 1)[1].splitlines()[1:]
            return after[: next(i for i, line in enumerate(after) if line.startswith("python "))+ 1]
    raise AssertionError(f"no join lines printed in {executed}")


@pytest.mark.team
@pytest.mark.notebook
@pytest.mark.adds_to_executions
@pytest.mark.timeout(600)
def test_the_printed_join_line_runs_a_worker_that_joins_the_same_study_and_store(parents, notebooks):
    """The lines notebook 06 prints for another terminal, run as printed in a shell elsewhere
    (only ``python`` is this environment's, and the account's credentials are the joiner's own):
    the worker joins the same study in the same storage and logs its trials as children of the
    same parent on the same server, trained with the study's epochs and data. Before: the line
    lacked the epochs, data and tracking URI, and a worker started from it trained something else
    into another store."""
    execution = notebooks.execution(SWEEPS, 2)
    lines = _join_lines(execution.executed)
    parent = parents[0]  # the second execution's
    assert [line.split("=", 1)[0] for line in lines[:2]] == [
        f"export {sweeps.STORAGE_ENV_VAR}", "export MLFLOW_TRACKING_URI"
    ]
    assert f"--parent-run-id {parent.info.run_id}" in lines[2]
    # the study's settings named, not left to the worker's defaults (which the tests' match)
    worker = sweeps._parser().parse_args(shlex.split(lines[2])[3:])
    assert {"--epochs", "--data-dir"} <= set(shlex.split(lines[2]))
    assert (worker.epochs, worker.data_dir) == (int(parent.data.params["epochs"]), "")
    storage = execution.overrides[sweeps.STORAGE_ENV_VAR]
    script = "\n".join(lines).replace(sweeps.shown_url(storage), storage)  # the password back
    study = optuna.load_study(study_name=STUDY, storage=sweeps.study_storage(storage))
    before = {t.number for t in study.trials}
    account = {k: v for k, v in execution.overrides.items()
               if k.startswith("MLFLOW_TRACKING_") and k != "MLFLOW_TRACKING_URI"}  # fmt: skip
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", sweeps.STORAGE_ENV_VAR, "DLTRACK_EPOCHS")}  # fmt: skip
    env.update(account, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    with tempfile.TemporaryDirectory() as elsewhere:
        done = subprocess.run(["bash", "-euc", script], cwd=elsewhere, env=env, timeout=540,
                              capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=sweeps.study_storage(storage))
    joined = [t for t in study.trials if t.number not in before]
    assert len(joined) == 2
    assert {t.user_attrs["mlflow_parent_run_id"] for t in joined} == {parent.info.run_id}
    children = {
        run.info.run_id: run
        for run in MlflowClient().search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
    }
    for trial in joined:
        child = children[trial.user_attrs["mlflow_run_id"]]
        assert child.data.params["max_epochs"] == parent.data.params["epochs"]
        assert child.data.tags["optuna.trial_state"] == trial.state.name
        contexts = {d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"]
                    for d in child.inputs.dataset_inputs}  # fmt: skip
        assert contexts == {"fashion-mnist-train": "training",
                            "fashion-mnist-validation": "validation"}  # fmt: skip


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
