"""Hyperparameter sweeps of notebook 02's Lightning CNN with Optuna, tracked as one MLflow parent
run with one child run per trial, and run by worker processes that share one study (notebook 06).

Why a module of its own, not ``models/`` or ``tracking.py``: a sweep joins three things, an
Optuna study, Lightning training and MLflow runs, and its worker processes must import the
objective (a process cannot import a notebook). ``python -m dltrack.sweeps`` is the worker::

    python -m dltrack.sweeps --study NAME --storage URL --parent-run-id RUN_ID --trials 4

Every worker points at the same study storage and takes trials from it (Optuna's RDB storage:
no scheduler of our own). Locally the storage is a SQLite file beside the MLflow store
(``<folder of mlflow.db>/optuna.db``); in team mode it is the team PostgreSQL
(:mod:`dltrack.team.studies`). ``$DLTRACK_OPTUNA_STORAGE`` overrides both.

Killed workers. Each running trial sends a heartbeat every :data:`HEARTBEAT_SECONDS`; a trial
silent for :data:`GRACE_SECONDS` is stale. Whoever next calls ``optuna.storages.
fail_stale_trials`` (every worker before each trial; :func:`close_stale_trials` after the
workers exit) marks it FAIL and runs :func:`end_stale_trial`, which ends the trial's MLflow
child run as KILLED (the killed worker cannot) and queues the same parameters once more
(``RetryHeartbeatStaleTrialCallback``). A killed trial is never counted as complete.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from dltrack import tracking

__all__ = [
    "GRACE_SECONDS",
    "HEARTBEAT_SECONDS",
    "STORAGE_ENV_VAR",
    "WEIGHTS",
    "Objective",
    "close_stale_trials",
    "default_storage",
    "end_stale_trial",
    "load_worker_study",
    "main",
    "study_storage",
    "suggest",
]

STORAGE_ENV_VAR = "DLTRACK_OPTUNA_STORAGE"
HEARTBEAT_SECONDS = 2
GRACE_SECONDS = 10
#: The metric the trials maximise and the pruner watches: validation accuracy per epoch.
MONITOR = "val_acc"
#: Where a completed trial's child run keeps the model's weights (``torch.save`` of its
#: ``state_dict()``): the sweep's best model is loaded from there, not trained again.
WEIGHTS = "weights/state_dict.pt"


def default_storage(tracking_uri: str | None = None) -> str:
    """The study storage URL: ``$DLTRACK_OPTUNA_STORAGE`` if set, else a SQLite file beside a
    SQLite MLflow store (``sqlite:///<folder of mlflow.db>/optuna.db``).

    Raises:
        ValueError: the MLflow store is a server (team mode) and ``$DLTRACK_OPTUNA_STORAGE``
            is not set; the message names the command that prints it.
    """
    if os.environ.get(STORAGE_ENV_VAR):
        return os.environ[STORAGE_ENV_VAR]
    uri = tracking_uri or tracking.tracking_uri()
    if not uri.startswith("sqlite:///"):
        raise ValueError(
            f"The MLflow store {uri} is not a SQLite file, so there is no folder to keep the "
            f"study beside it; set {STORAGE_ENV_VAR} (team mode: "
            f'eval "$(python -m dltrack.team.studies env)").'
        )
    database = Path(uri[len("sqlite:///") :].split("?", 1)[0]).resolve()
    database.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{database.parent / 'optuna.db'}"


def end_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial it has just marked FAIL because its worker stopped sending
    heartbeats: end the trial's MLflow child run as KILLED, tagged ``optuna.trial_state=FAIL``,
    then queue the same parameters once more (``RetryHeartbeatStaleTrialCallback``)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        client = MlflowClient()
        client.set_tag(run_id, "optuna.trial_state", TrialState.FAIL.name)
        client.set_terminated(run_id, status="KILLED")
    with warnings.catch_warnings():  # the callback is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)


def study_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url`` (``sqlite:///...`` or ``postgresql+psycopg2://...``),
    with heartbeats so that a killed worker's trial is failed (see the module docstring).

    Raises:
        ValueError: ``url`` is not a database URL SQLAlchemy knows.
    """
    if "://" not in url:
        raise ValueError(f"a study storage is a database URL such as sqlite:///path, got {url!r}")
    with warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=end_stale_trial,
        )


def suggest(trial: optuna.Trial) -> dict[str, float | int]:
    """The search space: Adam's learning rate (log scale), the dropout rate, the batch size and
    the width of the first Linear layer (the architecture choice); returns the chosen values."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        "dropout_rate": trial.suggest_float("dropout_rate", 0.0, 0.5),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "hidden_units": trial.suggest_categorical("hidden_units", [150, 300, 600]),
    }


@dataclass
class Objective:
    """One trial: train notebook 02's CNN with the suggested values in an MLflow child run of
    ``parent_run_id``; return the last epoch's validation accuracy (a float in [0, 1]).

    The child run holds the trial's params, the per-epoch metrics (Lightning's ``MLFlowLogger``
    writes what the module logs into the child run), a completed trial's weights
    (:data:`WEIGHTS`), and tags ``optuna.study``, ``optuna.trial_number``,
    ``optuna.trial_state`` (COMPLETE or PRUNED; a pruned trial also ``optuna.pruned_at_epoch``,
    from 0) and ``sweep.worker`` (``host:pid`` of the process that ran it).

    Args:
        parent_run_id: the sweep's parent run; its experiment holds the children.
        data_dir: Fashion-MNIST folder ("" = the shipped subset).
        epochs: epochs per trial (fewer if pruned).
        seed: seed of the weights and the train/validation split, the same for every trial.
    """

    parent_run_id: str
    data_dir: str = ""
    epochs: int = 2
    seed: int = 42

    def __call__(self, trial: optuna.Trial) -> float:
        import lightning as L
        import torch
        from lightning.pytorch.loggers import MLFlowLogger
        from optuna_integration import PyTorchLightningPruningCallback

        from dltrack.models.lightning_cnn import FashionMNISTCNN, FashionMNISTDataModule

        params = suggest(trial)
        L.seed_everything(self.seed, verbose=False)
        datamodule = FashionMNISTDataModule(self.data_dir, params["batch_size"], seed=self.seed)
        model = FashionMNISTCNN(
            learning_rate=params["learning_rate"], dropout_rate=params["dropout_rate"],
            hidden_units=params["hidden_units"],
        )  # fmt: skip
        experiment_id = mlflow.get_run(self.parent_run_id).info.experiment_id
        pruned = None
        with mlflow.start_run(
            run_name=f"trial-{trial.number}", experiment_id=experiment_id,
            parent_run_id=self.parent_run_id,
        ) as child:  # fmt: skip
            trial.set_user_attr("mlflow_run_id", child.info.run_id)
            trial.set_user_attr("mlflow_parent_run_id", self.parent_run_id)
            mlflow.set_tags({"optuna.study": trial.study.study_name,
                             "optuna.trial_number": trial.number,
                             "sweep.worker": f"{socket.gethostname()}:{os.getpid()}"})  # fmt: skip
            mlflow.log_params({**params, "seed": self.seed, "max_epochs": self.epochs})
            trainer = L.Trainer(
                max_epochs=self.epochs, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, log_every_n_steps=1,
                callbacks=[PyTorchLightningPruningCallback(trial, monitor=MONITOR)],
                logger=MLFlowLogger(tracking_uri=mlflow.get_tracking_uri(), run_id=child.info.run_id),
            )  # fmt: skip
            try:
                trainer.fit(model, datamodule=datamodule)
            except optuna.TrialPruned as stop:
                pruned = stop
                mlflow.set_tags({"optuna.trial_state": TrialState.PRUNED.name,
                                 "optuna.pruned_at_epoch": trainer.current_epoch})  # fmt: skip
            else:
                artifact_path, name = WEIGHTS.split("/")
                with tempfile.TemporaryDirectory() as folder:  # the weights, for the best trial
                    torch.save(model.state_dict(), Path(folder) / name)
                    mlflow.log_artifact(str(Path(folder) / name), artifact_path)
                mlflow.set_tag("optuna.trial_state", TrialState.COMPLETE.name)
        if pruned is not None:
            raise pruned
        return trainer.callback_metrics[MONITOR].item()


def close_stale_trials(study: optuna.Study, timeout: float = 3 * GRACE_SECONDS) -> list[int]:
    """After the workers exited: fail the trials a killed worker left RUNNING, as soon as Optuna
    sees them stale (``optuna.storages.fail_stale_trials``, which also ends their child runs,
    :func:`end_stale_trial`). Returns the numbers of the trials still running at ``timeout``
    seconds (a worker elsewhere still at work), else ``[]``."""
    deadline = time.monotonic() + timeout
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        running = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(HEARTBEAT_SECONDS / 2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dltrack.sweeps",
        description="A sweep worker: run trials of an Optuna study, each an MLflow child run.",
    )
    parser.add_argument("--study", required=True, help="the study's name (it must exist)")
    parser.add_argument("--storage", default=None,
                        help=f"database URL of the study (default ${STORAGE_ENV_VAR}, or the "
                             "SQLite file beside the MLflow store)")  # fmt: skip
    parser.add_argument("--parent-run-id", required=True, help="the sweep's MLflow parent run")
    parser.add_argument("--trials", type=int, default=1, help="trials this worker runs")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--data-dir", default="", help='Fashion-MNIST folder ("" = the subset)')
    parser.add_argument("--seed", type=int, default=None, help="the TPE sampler's seed")
    parser.add_argument("--train-seed", type=int, default=42,
                        help="seed of the weights and the data split, the same for all trials")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--prune-below", type=float, default=None,
                        help="prune every trial whose val_acc falls below this (ThresholdPruner) "
                             "instead of the median rule (MedianPruner)")  # fmt: skip
    return parser


def load_worker_study(
    name: str, storage: str, seed: int | None = None, prune_below: float | None = None
) -> optuna.Study:
    """The study ``name`` in the database ``storage`` (a SQLAlchemy URL), with this worker's own
    sampler and pruner: they live in the process, not in the database.

    Args:
        name: the study's name; it must exist (``optuna.create_study`` made it).
        storage: e.g. ``sqlite:///.../optuna.db`` or ``postgresql+psycopg2://...``.
        seed: the TPE sampler's seed (``None``: random).
        prune_below: prune every trial whose ``val_acc`` falls below it (``ThresholdPruner``)
            instead of the median rule.

    Raises:
        KeyError: no study of that name in ``storage`` (Optuna's error).
    """
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, constant_liar=True)
    if prune_below is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    else:
        pruner = optuna.pruners.ThresholdPruner(lower=prune_below)
    return optuna.load_study(
        study_name=name, storage=study_storage(storage), sampler=sampler, pruner=pruner
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``--trials`` trials of the study ``--study`` as children of ``--parent-run-id``;
    print one line per trial. Exit status 0, or 2 for bad arguments (argparse)."""
    args = _parser().parse_args(argv)
    if args.trials < 0 or args.epochs < 1:
        _parser().error("--trials must be >= 0 and --epochs >= 1")
    import lightning  # noqa: F401  (it sets its loggers' levels on import: set ours after)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no hardware lines per trial
    for message in (".*does not have many workers.*", ".*treespec, LeafSpec.*"):
        warnings.filterwarnings("ignore", message=message)
    # A worker logs a few values per epoch: synchronously, so that a refused write fails the
    # trial instead of vanishing (team mode turns MLflow's asynchronous logging on).
    os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
    mlflow.set_tracking_uri(tracking.tracking_uri())
    study = load_worker_study(args.study, args.storage or default_storage(), args.seed,
                              args.prune_below)  # fmt: skip
    objective = Objective(args.parent_run_id, args.data_dir, args.epochs, args.train_seed)
    study.optimize(objective, n_trials=args.trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
