"""Notebook 06's sweeps under faults, with real worker processes on the shipped subset: a worker
paused (SIGSTOP) for 60 s keeps its trial, a study refuses other settings, a worker refuses a
password on its command line, a failed worker fails the parent run, and the notebook's cells end
cleanly when the pruner stops every trial of a sweep.
"""

from __future__ import annotations

import datetime
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import nbformat
import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from dltrack import sweeps, tracking
from dltrack.config import project_root

NOTEBOOK = project_root() / "notebooks" / "06_hyperparameter_sweeps.ipynb"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store (the study's journal goes beside it)."""
    monkeypatch.delenv(sweeps.STORAGE_ENV_VAR, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(tracking.tracking_uri())


def _worker(study: str, parent: str, storage: str, trials: int, epochs: int, seed: int):
    return subprocess.Popen(
        [sys.executable, *sweeps.worker_command(study, parent, trials=trials, epochs=epochs,
                                                seed=seed, threads=1, prune_below=0)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, **{sweeps.STORAGE_ENV_VAR: storage}),
    )  # fmt: skip


@pytest.mark.timeout(900)
def test_a_worker_paused_for_60_seconds_keeps_its_trial(store):
    """Worker A is stopped after the first of its trial's 2 epochs; worker B starts trials while
    A sleeps. Before: B failed A's trial after 10 s without a heartbeat, queued it again, and A,
    resumed, crashed with "Cannot tell a FAIL trial"."""
    storage = sweeps.default_storage(store)
    study = optuna.create_study(
        study_name="paused", storage=sweeps.study_storage(storage), direction="maximize"
    )
    experiment_id = tracking.prepare_experiment("paused")
    client = MlflowClient()
    with mlflow.start_run(experiment_id=experiment_id, run_name="sweep") as parent:
        a = _worker("paused", parent.info.run_id, storage, trials=1, epochs=2, seed=0)
        deadline = time.monotonic() + 400
        while True:  # A is mid-trial once its child run holds the first epoch's val_acc
            assert time.monotonic() < deadline and a.poll() is None, a.stdout.read()
            runs = [r for r in client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
                    if r.data.tags.get("sweep.worker", "").endswith(f":{a.pid}")]  # fmt: skip
            if runs and "val_acc" in runs[0].data.metrics:
                break
            time.sleep(0.2)
        os.kill(a.pid, signal.SIGSTOP)
        paused_at = datetime.datetime.now()
        a_trial = int(runs[0].data.tags["optuna.trial_number"])
        b = _worker("paused", parent.info.run_id, storage, trials=2, epochs=2, seed=1)
        try:
            time.sleep(60)
            during = study.get_trials()[a_trial].state  # read before A may finish it
        finally:
            os.kill(a.pid, signal.SIGCONT)
        resumed_at = datetime.datetime.now()
        logs = [worker.communicate(timeout=600)[0] for worker in (a, b)]
    assert during == TrialState.RUNNING
    assert [a.returncode, b.returncode] == [0, 0], logs
    trials = study.get_trials()
    assert trials[a_trial].state == TrialState.COMPLETE
    assert not [t.number for t in trials if t.state == TrialState.FAIL]
    assert not [t.number for t in trials if "failed_trial" in t.system_attrs]  # no retry queued
    # B did take a trial while A slept: the check of dead workers ran during the pause
    b_trials = [t for t in trials if t.user_attrs["worker"]["pid"] == b.pid]
    assert any(paused_at < t.datetime_start < resumed_at for t in b_trials)
    child = client.get_run(trials[a_trial].user_attrs["mlflow_run_id"])
    assert child.info.status == "FINISHED"
    assert child.data.tags["optuna.trial_state"] == "COMPLETE"


@pytest.mark.timeout(300)
def test_a_study_refuses_other_epochs_or_data_and_says_how_to_start_afresh(store, tmp_path):
    storage = sweeps.default_storage(store)
    assert storage == f"journal:///{str(tmp_path / 'optuna.journal').lstrip('/')}"
    assert isinstance(sweeps.study_storage(storage), optuna.storages.JournalStorage)
    study = optuna.create_study(study_name="settings", storage=sweeps.study_storage(storage))
    assert sweeps.check_study_settings(study, sweeps.study_settings(2)) is True
    assert sweeps.check_study_settings(study, sweeps.study_settings(2)) is False  # the same
    with pytest.raises(sweeps.StudySettingsError, match="DLTRACK_SWEEP_RESUME=0") as refused:
        sweeps.check_study_settings(study, sweeps.study_settings(3))
    assert "'epochs': 2" in str(refused.value) and "'epochs': 3" in str(refused.value)
    other = dict(sweeps.study_settings(2), data="fashion-mnist 2017-08-26 release")
    with pytest.raises(sweeps.StudySettingsError, match="DLTRACK_STUDY_NAME"):
        sweeps.check_study_settings(study, other)
    # a worker joining with other epochs is refused before it trains or opens a run
    out = subprocess.run(
        [sys.executable, *sweeps.worker_command("settings", "x", trials=1, epochs=3)],
        capture_output=True, text=True, timeout=240, check=False,
        env=dict(os.environ, **{sweeps.STORAGE_ENV_VAR: storage}),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "DLTRACK_SWEEP_RESUME=0" in out.stderr and "Traceback" not in out.stderr
    assert study.get_trials() == []


def test_printed_urls_hide_the_password_and_a_worker_refuses_one_in_argv(capsys):
    url = "postgresql+psycopg2://optuna:s3cret-pw@db.example:5432/optuna"
    assert "s3cret-pw" not in sweeps.shown_url(url) and "***" in sweeps.shown_url(url)
    assert sweeps.shown_url("journal:///tmp/x/optuna.journal") == "journal:///tmp/x/optuna.journal"
    with pytest.raises(ValueError, match="a study storage is a database URL"):
        sweeps.study_storage("a/path/without/scheme")
    with pytest.raises(SystemExit) as exited:
        sweeps.main(["--study", "s", "--parent-run-id", "r", "--storage", url])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "DLTRACK_OPTUNA_STORAGE" in err and "s3cret-pw" not in err


# -- the notebook's cells, as a script ---------------------------------------------------------
def _notebook_script(until: str) -> str:
    """Notebook 06's code cells up to the first that contains ``until``, IPython magics
    dropped: what Restart & Run All runs."""
    cells = []
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        cells.append("\n".join(l for l in cell.source.splitlines() if not l.startswith("%")))  # noqa: E741
        if until in cell.source:
            break
    return "\n\n".join(cells)


def _run_notebook_script(script: str, store: str, tmp_path: Path, **env: str):
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900, check=False,
        cwd=tmp_path, env=dict(os.environ, MLFLOW_TRACKING_URI=store, MPLBACKEND="Agg",
                               DLTRACK_SWEEP_WORKERS="2", **env),
    )  # fmt: skip


def _parents(experiment: str = "fashion_images_prediction_sweeps") -> list:
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "attributes.run_name = 'sweep'")


@pytest.mark.timeout(600)
def test_a_failed_worker_fails_the_parent_run(store, tmp_path):
    """The scale-out cell with workers that exit with status 3 (a ``python`` that fails at
    once): the cell raises, and the parent run ends FAILED, not FINISHED."""
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\necho 'this worker fails' >&2\nexit 3\n")
    failing.chmod(failing.stat().st_mode | stat.S_IXUSR)
    script = _notebook_script("subprocess.Popen(").replace(
        "import warnings\n", f"import warnings\nsys.executable = {str(failing)!r}\n", 1
    )
    out = _run_notebook_script(script, store, tmp_path, DLTRACK_SWEEP_TRIALS="2")
    assert out.returncode == 1, out.stderr[-3000:]
    (parent,) = _parents()
    assert parent.info.status == "FAILED"
    assert "RuntimeError: workers failed" in out.stderr
    assert ": 3}" in out.stderr  # pid: exit code


def _seed_a_strong_study(store: str, epochs: int) -> None:
    """Notebook 06's study with two completed trials at val_acc 0.99 after every epoch, each
    with a child run holding weights: every later trial falls below their median and is
    pruned after its first epoch (MedianPruner)."""
    from dltrack.models.lightning_cnn import FashionMNISTCNN

    mlflow.set_tracking_uri(store)
    study = optuna.create_study(
        study_name="fmnist-image-predictor-sweep", direction="maximize",
        storage=sweeps.study_storage(sweeps.default_storage(store)),
    )  # fmt: skip
    experiment_id = tracking.prepare_experiment("fashion_images_prediction_sweeps")
    params = {"learning_rate": 1e-3, "dropout_rate": 0.25, "batch_size": 64, "hidden_units": 150}
    distributions = {
        "learning_rate": FloatDistribution(3e-4, 1e-2, log=True),
        "dropout_rate": FloatDistribution(0.0, 0.5),
        "batch_size": CategoricalDistribution([32, 64, 128]),
        "hidden_units": CategoricalDistribution([150, 300, 600]),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name="seeded") as parent:
        for _ in range(2):
            with mlflow.start_run(experiment_id=experiment_id, nested=True) as child:
                torch.save(FashionMNISTCNN(hidden_units=150).state_dict(), "state_dict.pt")
                mlflow.log_artifact("state_dict.pt", "weights")
            study.add_trial(optuna.create_trial(
                params=params, distributions=distributions, value=0.99,
                intermediate_values={epoch: 0.99 for epoch in range(epochs)},
                user_attrs={"mlflow_run_id": child.info.run_id,
                            "mlflow_parent_run_id": parent.info.run_id},
            ))  # fmt: skip


@pytest.mark.timeout(900)
def test_the_notebook_ends_cleanly_when_every_trial_of_a_sweep_is_pruned(
    store, tmp_path, monkeypatch
):
    """Before: ``max() arg is an empty sequence`` in the best-trial cell."""
    monkeypatch.chdir(tmp_path)  # the seeded weights file is written here
    _seed_a_strong_study(store, epochs=1)
    script = _notebook_script("set_registered_model_alias(")
    out = _run_notebook_script(script, store, tmp_path, DLTRACK_SWEEP_TRIALS="2",
                               DLTRACK_EPOCHS="1")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "all 2 trials of this sweep were pruned" in out.stdout
    study = optuna.load_study(
        study_name="fmnist-image-predictor-sweep",
        storage=sweeps.study_storage(sweeps.default_storage(store)),
    )
    assert [t.state for t in study.get_trials()][2:] == [TrialState.PRUNED] * 2
    (parent,) = _parents()
    assert parent.info.status == "FINISHED" and parent.data.params["best_trial"] in ("0", "1")


@pytest.mark.timeout(400)
def test_a_trial_logs_its_metrics_once_per_epoch_at_step_epoch(store):
    """Before: Lightning's MLFlowLogger logged at the global batch count, so trials of other
    batch sizes did not line up by epoch."""
    storage = sweeps.default_storage(store)
    optuna.create_study(study_name="steps", storage=sweeps.study_storage(storage))
    experiment_id = tracking.prepare_experiment("steps")
    with mlflow.start_run(experiment_id=experiment_id, run_name="sweep") as parent:
        worker = _worker("steps", parent.info.run_id, storage, trials=1, epochs=2, seed=0)
        log = worker.communicate(timeout=300)[0]
    assert worker.returncode == 0, log
    client = MlflowClient()
    (child,) = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    for key in ("val_acc", "val_loss", "train_acc", "train_loss"):
        assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [0, 1], key
