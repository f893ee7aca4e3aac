"""Hyperparameter sweeps of notebook 02's Lightning CNN with Optuna, tracked as one MLflow parent
run with one child run per trial, and run by worker processes that share one study (notebook 06).

Why a module of its own, not ``models/`` or ``tracking.py``: a sweep joins three things, an
Optuna study, Lightning training and MLflow runs, and its worker processes must import the
objective (a process cannot import a notebook). ``python -m dltrack.sweeps`` is the worker; it
reads the study's storage from ``$DLTRACK_OPTUNA_STORAGE`` (never from its command line, which
every user of the machine sees in ``ps``)::

    DLTRACK_OPTUNA_STORAGE=journal:///.../optuna.journal \\
        python -m dltrack.sweeps --study NAME --parent-run-id RUN_ID --epochs 2 --trials 4

Every worker points at the same study storage and takes trials from it (no scheduler of our
own). Locally the storage is Optuna's journal file beside the MLflow store
(``journal:///<folder of mlflow.db>/optuna.journal``: ``JournalStorage(JournalFileBackend)``,
which Optuna supports for processes sharing one machine; its FAQ advises against SQLite for
parallel workers). In team mode it is the team PostgreSQL (:mod:`dltrack.team.studies`).
``$DLTRACK_OPTUNA_STORAGE`` overrides both.

A study keeps the settings its trials were trained with (epochs and data release, the study's
user attribute ``dltrack.settings``): a sweep or worker with other settings is refused
(:func:`check_study_settings`), since their accuracies cannot be compared.

Slow and killed workers. Only a worker's own death fails its trial. Each trial records its
worker (host, pid and the process's start time, user attribute ``worker``). Before each trial,
every worker fails the RUNNING trials whose worker on this machine has exited
(:func:`fail_trials_of_dead_workers`, and :func:`close_stale_trials` after the workers exit):
the trial becomes FAIL, its MLflow child run ends as KILLED (the killed worker cannot) and its
parameters are queued once more (:func:`end_stale_trial`). A worker that is only slow (a laptop
asleep, a stopped or swapping process) keeps its trial however long it pauses. Workers on other
machines (team mode) cannot be checked from here: PostgreSQL's storage sends Optuna's heartbeats
every :data:`HEARTBEAT_SECONDS`, and a trial silent for :data:`GRACE_SECONDS` (10 minutes) is
failed the same way. A worker paused longer than that and then resumed drops its result with a
message and goes on with its next trial; it never crashes.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import socket
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import optuna
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from dltrack import tracking
from dltrack.processes import ProcessRecord

__all__ = [
    "GRACE_SECONDS",
    "HEARTBEAT_SECONDS",
    "JOURNAL_PREFIX",
    "STORAGE_ENV_VAR",
    "WEIGHTS",
    "Objective",
    "StudySettingsError",
    "check_study_settings",
    "close_stale_trials",
    "default_storage",
    "end_stale_trial",
    "epoch_metrics_callback",
    "fail_trials_of_dead_workers",
    "load_worker_study",
    "main",
    "run_trials",
    "shown_url",
    "study_settings",
    "study_storage",
    "suggest",
    "worker_command",
]

STORAGE_ENV_VAR = "DLTRACK_OPTUNA_STORAGE"
#: The storage URL of Optuna's journal file: ``journal:///`` and the file's absolute path.
JOURNAL_PREFIX = "journal:///"
#: PostgreSQL (RDB) storages only: seconds between a running trial's heartbeats.
HEARTBEAT_SECONDS = 10
#: PostgreSQL (RDB) storages only: seconds without a heartbeat after which a trial is failed
#: (for workers on other machines; on this machine only a worker's death fails its trial).
GRACE_SECONDS = 600
#: The study's user attribute holding the settings its trials were trained with.
SETTINGS_ATTR = "dltrack.settings"
#: The metric the trials maximise and the pruner watches: validation accuracy per epoch.
MONITOR = "val_acc"
#: Where a completed trial's child run keeps the model's weights (``torch.save`` of its
#: ``state_dict()``): the sweep's best model is loaded from there, not trained again.
WEIGHTS = "weights/state_dict.pt"


class StudySettingsError(ValueError):
    """A study's trials were trained with other settings (epochs, data) than a sweep asks for."""


def default_storage(tracking_uri: str | None = None) -> str:
    """The study storage URL: ``$DLTRACK_OPTUNA_STORAGE`` if set, else Optuna's journal file
    beside a SQLite MLflow store (``journal:///<folder of mlflow.db>/optuna.journal``).

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
    return f"{JOURNAL_PREFIX}{str(database.parent / 'optuna.journal').lstrip('/')}"


def shown_url(url: str) -> str:
    """``url`` fit to print or log: a database URL's password replaced by ``***``
    (SQLAlchemy's ``make_url(url).render_as_string(hide_password=True)``); a journal URL as is;
    a URL SQLAlchemy cannot read as its scheme only."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return f"{url.split('://', 1)[0]}://(not shown)"


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return not url.startswith(JOURNAL_PREFIX) and bool(make_url(url).password)
    except (ArgumentError, ValueError):
        return False


def _this_worker() -> dict[str, object]:
    record = ProcessRecord.of(os.getpid(), [])
    return {"host": socket.gethostname(), "pid": record.pid, "create_time": record.create_time}


def _retry(study: optuna.Study, trial: FrozenTrial, max_retry: int = 1) -> None:
    """Queue ``trial``'s parameters once more, as Optuna's ``RetryFailedTrialCallback`` does
    (system attributes ``failed_trial`` and ``retry_history``), without the user attributes
    that name the dead worker and its child run: the retry records its own."""
    system_attrs = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    if len(system_attrs["retry_history"]) > max_retry:
        return
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("worker", "mlflow_run_id")}
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs=user_attrs, system_attrs=system_attrs,
        )
    )  # fmt: skip


def end_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """For a trial just marked FAIL because its worker died (or, on PostgreSQL, sent no
    heartbeat for :data:`GRACE_SECONDS`): end the trial's MLflow child run as KILLED, tagged
    ``optuna.trial_state=FAIL``, then queue the same parameters once more."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        client = MlflowClient()
        client.set_tag(run_id, "optuna.trial_state", TrialState.FAIL.name)
        client.set_terminated(run_id, status="KILLED")
    _retry(study, trial)


def study_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage at ``url``: ``journal:///path`` is a ``JournalStorage`` on the file
    ``/path`` (``JournalFileBackend`` with ``JournalFileOpenLock``: processes on one machine);
    a database URL (``postgresql+psycopg2://...``, ``sqlite:///...``) is an ``RDBStorage`` with
    heartbeats (see the module docstring).

    Raises:
        ValueError: ``url`` is neither a journal URL nor a database URL.
    """
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = "/" + url[len(JOURNAL_PREFIX) :].lstrip("/")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(
            JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        )
    if "://" not in url:
        raise ValueError(
            f"a study storage is a database URL such as postgresql+psycopg2://host/db, or "
            f"{JOURNAL_PREFIX}<absolute path> for a journal file; got {shown_url(url)!r}"
        )
    with warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=end_stale_trial,
        )


def study_settings(epochs: int, data_dir: str = "") -> dict[str, object]:
    """What a study's trials must share to be compared: epochs per trial and the data release
    (:func:`dltrack.data.verify_fashion_mnist` of ``data_dir``, so the same files in another
    folder or on another machine count as the same data).

    Raises:
        dltrack.data.DatasetError: the data files are missing or unknown.
    """
    from dltrack.data import verify_fashion_mnist

    return {"epochs": int(epochs), "data": verify_fashion_mnist(data_dir)}


def check_study_settings(study: optuna.Study, settings: dict[str, object]) -> bool:
    """Record ``settings`` (:func:`study_settings`) in a study that has none; refuse a study
    whose trials were trained with other settings. Returns ``True`` when they were recorded now.

    Raises:
        StudySettingsError: the study holds other settings; the message says how to start
            afresh.
    """
    have = study.user_attrs.get(SETTINGS_ATTR)
    if have is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
        return True
    if have != settings:
        raise StudySettingsError(
            f"The study {study.study_name!r} holds {len(study.trials)} trials trained with "
            f"{have}, and this sweep asks for {settings}: their accuracies cannot be compared. "
            f"Run with the study's settings, or start afresh: DLTRACK_SWEEP_RESUME=0 in notebook "
            f"06 deletes the study (optuna.delete_study), or choose another study name "
            f"(DLTRACK_STUDY_NAME)."
        )
    return False


def suggest(trial: optuna.Trial) -> dict[str, float | int]:
    """The search space: Adam's learning rate (log scale), the dropout rate, the batch size and
    the width of the first Linear layer (the architecture choice); returns the chosen values."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        "dropout_rate": trial.suggest_float("dropout_rate", 0.0, 0.5),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "hidden_units": trial.suggest_categorical("hidden_units", [150, 300, 600]),
    }


def epoch_metrics_callback():
    """A Lightning callback that logs the epoch's metrics to the active MLflow run at
    ``step=epoch`` (from 0): ``val_*`` when validation ends (so a pruned trial's last epoch is
    there too), ``train_*`` when the training epoch ends. Trials of other batch sizes then line
    up by epoch in the UI, which Lightning's ``MLFlowLogger`` (the global batch count as the
    step) does not do."""
    import lightning as L

    class EpochMetrics(L.Callback):
        def _log(self, trainer: L.Trainer, prefix: str) -> None:
            metrics = {
                key: float(value)
                for key, value in trainer.callback_metrics.items()
                if key.startswith(prefix)
            }
            mlflow.log_metrics(metrics, step=trainer.current_epoch)

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if not trainer.sanity_checking:
                self._log(trainer, "val_")

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self._log(trainer, "train_")

    return EpochMetrics()


class TrialLostError(RuntimeError):
    """The trial was failed by another process while this worker was paused."""


def _trial(study: optuna.Study, number: int) -> FrozenTrial:
    """The trial ``number`` of ``study`` as the storage holds it now."""
    (found,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return found


def _state_now(trial: optuna.Trial) -> TrialState:
    """The trial's state in the storage now (another process may have failed it)."""
    return _trial(trial.study, trial.number).state


@dataclass
class Objective:
    """One trial: train notebook 02's CNN with the suggested values in an MLflow child run of
    ``parent_run_id``; return the last epoch's validation accuracy (a float in [0, 1]).

    The child run holds the trial's params, its training and validation datasets
    (``mlflow.log_input``, contexts ``training`` and ``validation``), the per-epoch metrics at
    ``step=epoch`` (:func:`epoch_metrics_callback`), a completed trial's weights
    (:data:`WEIGHTS`), and tags ``optuna.study``, ``optuna.trial_number``,
    ``optuna.trial_state`` (COMPLETE or PRUNED; a pruned trial also ``optuna.pruned_at_epoch``,
    from 0; FAIL if another process failed the trial meanwhile) and ``sweep.worker``
    (``host:pid`` of the process that ran it). The trial's user attribute ``worker`` names this
    process (host, pid, start time), so that only its death fails the trial.

    Args:
        parent_run_id: the sweep's parent run; its experiment holds the children.
        data_dir: Fashion-MNIST folder ("" = the shipped subset).
        epochs: epochs per trial (fewer if pruned).
        seed: seed of the weights and the train/validation split, the same for every trial.

    Raises:
        TrialLostError: the trial was failed by another process while this one was paused
            (longer than :data:`GRACE_SECONDS`, PostgreSQL only); its child run is ended as
            KILLED and its result dropped.
    """

    parent_run_id: str
    data_dir: str = ""
    epochs: int = 2
    seed: int = 42
    #: The number of the trial this objective runs or ran last (``None`` before the first).
    current: int | None = field(default=None, init=False)

    def __call__(self, trial: optuna.Trial) -> float:
        self.current = trial.number
        trial.set_user_attr("worker", _this_worker())
        import lightning as L
        import torch
        from optuna_integration import PyTorchLightningPruningCallback

        from dltrack.models.lightning_cnn import (
            FashionMNISTCNN,
            FashionMNISTDataModule,
            mlflow_datasets,
        )

        params = suggest(trial)
        L.seed_everything(self.seed, verbose=False)
        datamodule = FashionMNISTDataModule(self.data_dir, params["batch_size"], seed=self.seed)
        model = FashionMNISTCNN(
            learning_rate=params["learning_rate"], dropout_rate=params["dropout_rate"],
            hidden_units=params["hidden_units"],
        )  # fmt: skip
        experiment_id = mlflow.get_run(self.parent_run_id).info.experiment_id
        pruned, lost = None, False
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
            datamodule.setup("fit")  # the split, to name the datasets (fit makes the same one)
            for context, dataset in mlflow_datasets(datamodule).items():
                if context != "test":  # a trial never sees the test images
                    mlflow.log_input(dataset, context=context)
            trainer = L.Trainer(
                max_epochs=self.epochs, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, logger=False,
                callbacks=[epoch_metrics_callback(),  # before the pruner: the last epoch logged
                           PyTorchLightningPruningCallback(trial, monitor=MONITOR)],
            )  # fmt: skip
            try:
                trainer.fit(model, datamodule=datamodule)
            except optuna.TrialPruned as stop:
                pruned = stop
            if _state_now(trial) == TrialState.FAIL:  # failed meanwhile by another process
                lost = True
                mlflow.set_tag("optuna.trial_state", TrialState.FAIL.name)
            elif pruned is not None:
                mlflow.set_tags({"optuna.trial_state": TrialState.PRUNED.name,
                                 "optuna.pruned_at_epoch": trainer.current_epoch})  # fmt: skip
            else:
                artifact_path, name = WEIGHTS.split("/")
                with tempfile.TemporaryDirectory() as folder:  # the weights, for the best trial
                    torch.save(model.state_dict(), Path(folder) / name)
                    mlflow.log_artifact(str(Path(folder) / name), artifact_path)
                mlflow.set_tag("optuna.trial_state", TrialState.COMPLETE.name)
        if lost:
            MlflowClient().set_terminated(child.info.run_id, status="KILLED")
            raise TrialLostError(f"trial {trial.number} was failed by another process")
        if pruned is not None:
            raise pruned
        return trainer.callback_metrics[MONITOR].item()


def _worker_dead(trial: FrozenTrial) -> bool:
    """True when ``trial``'s worker ran on this machine and has exited (its pid is gone, is a
    zombie, or now names a process started at another time); a trial that has not recorded
    its worker counts as dead once it has run :data:`GRACE_SECONDS`."""
    worker = trial.user_attrs.get("worker")
    if not isinstance(worker, dict):
        started = trial.datetime_start or datetime.datetime.now()
        return (datetime.datetime.now() - started).total_seconds() > GRACE_SECONDS
    if worker.get("host") != socket.gethostname():
        return False  # another machine's: only heartbeats (PostgreSQL) can tell
    return not ProcessRecord(int(worker["pid"]), float(worker["create_time"]), []).alive


def fail_trials_of_dead_workers(study: optuna.Study) -> list[int]:
    """Fail each RUNNING trial whose worker on this machine has exited (:func:`_worker_dead`),
    then end its child run and queue it again (:func:`end_stale_trial`). A trial another
    process fails at the same moment is left to it. Returns the numbers of the trials failed.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _worker_dead(trial):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished or failed by another process meanwhile
        end_stale_trial(study, _trial(study, trial.number))
        failed.append(trial.number)
    return failed


def close_stale_trials(study: optuna.Study) -> list[int]:
    """After the workers exited: fail the trials a dead worker left RUNNING
    (:func:`fail_trials_of_dead_workers`; on PostgreSQL also those without a heartbeat for
    :data:`GRACE_SECONDS`, ``optuna.storages.fail_stale_trials``), which also ends their child
    runs. Returns the numbers of the trials still running (a live worker, here or elsewhere),
    else ``[]``."""
    fail_trials_of_dead_workers(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB storages only; a no-op for journals
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def worker_command(
    study: str,
    parent_run_id: str,
    *,
    trials: int,
    epochs: int,
    data_dir: str = "",
    train_seed: int = 42,
    seed: int | None = None,
    threads: int | None = None,
    prune_below: float | None = None,
) -> list[str]:
    """The arguments that start one sweep worker after ``python``: ``-m dltrack.sweeps`` with
    the study's name and settings (``epochs``, ``data_dir``: a study refuses others), the
    parent run, this worker's share of ``trials``, and optionally its sampler ``seed``, torch
    ``threads`` and ``prune_below`` (see ``python -m dltrack.sweeps --help``). The storage is not
    among them: the worker reads it from ``$DLTRACK_OPTUNA_STORAGE``, and the tracking server
    from ``$MLFLOW_TRACKING_URI``. Notebook 06, ``benchmarks/sweep_bench.py`` and the tests launch
    their workers with it.

    Raises:
        ValueError: ``trials`` below 0 or ``epochs`` below 1.
    """
    if trials < 0 or epochs < 1:
        raise ValueError(f"trials must be >= 0 and epochs >= 1, got {trials} and {epochs}")
    command = ["-m", "dltrack.sweeps", "--study", study, "--parent-run-id", parent_run_id,
               "--trials", str(trials), "--epochs", str(epochs), "--data-dir", data_dir,
               "--train-seed", str(train_seed)]  # fmt: skip
    for option, value in (("--seed", seed), ("--threads", threads), ("--prune-below", prune_below)):
        if value is not None:
            command += [option, str(value)]
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dltrack.sweeps",
        description="A sweep worker: run trials of an Optuna study, each an MLflow child run. "
        f"The study's storage URL is read from ${STORAGE_ENV_VAR}.",
    )
    parser.add_argument("--study", required=True, help="the study's name (it must exist)")
    parser.add_argument("--storage", default=None,
                        help=f"storage URL without a password (default ${STORAGE_ENV_VAR}, or "
                             "the journal file beside the MLflow store); prefer the variable: "
                             "a command line is visible to every user in `ps`")  # fmt: skip
    parser.add_argument("--parent-run-id", required=True, help="the sweep's MLflow parent run")
    parser.add_argument("--trials", type=int, default=1, help="trials this worker runs")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per trial: the study's (a study refuses others)")  # fmt: skip
    parser.add_argument(
        "--data-dir",
        default="",
        help='Fashion-MNIST folder ("" = the subset): the study\'s data release',
    )
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
    """The study ``name`` in ``storage`` (a journal or database URL, :func:`study_storage`),
    with this worker's own sampler and pruner: they live in the process, not in the storage.

    Args:
        name: the study's name; it must exist (``optuna.create_study`` made it).
        storage: e.g. ``journal:///.../optuna.journal`` or ``postgresql+psycopg2://...``.
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


def run_trials(study: optuna.Study, objective: Objective, trials: int) -> None:
    """The worker's loop: ``trials`` times, fail the trials of dead workers
    (:func:`fail_trials_of_dead_workers`), then ``study.optimize(objective, n_trials=1)``. A
    trial another process failed while this worker was paused is dropped with a message.

    Raises:
        Exception: what ``study.optimize`` raised for any other reason.
    """
    for _ in range(trials):
        fail_trials_of_dead_workers(study)
        try:
            study.optimize(objective, n_trials=1)
        except (ValueError, TrialLostError, optuna.exceptions.UpdateFinishedTrialError):
            number = objective.current
            if number is None or _trial(study, number).state != TrialState.FAIL:
                raise
            print(f"trial {number} was failed by another process while this worker was "
                  f"paused (no heartbeat for {GRACE_SECONDS} s); its parameters were queued "
                  "again and its result is dropped", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run ``--trials`` trials of the study ``--study`` as children of ``--parent-run-id``;
    print one line per trial. Exit status 0; 2 for bad arguments, a password on the command
    line, or settings other than the study's (argparse's error, with the reason)."""
    from dltrack.models.lightning_cnn import silence_known_noise

    silence_known_noise()  # the messages notebook 02 names, in each worker's log
    parser = _parser()
    args = parser.parse_args(argv)
    if args.trials < 0 or args.epochs < 1:
        parser.error("--trials must be >= 0 and --epochs >= 1")
    if args.storage and _has_password(args.storage):
        parser.error(f"--storage holds a password, which every user sees in `ps`: put the URL "
                     f"in ${STORAGE_ENV_VAR} instead")  # fmt: skip
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
    try:
        check_study_settings(study, study_settings(args.epochs, args.data_dir))
    except StudySettingsError as err:
        parser.error(str(err))
    objective = Objective(args.parent_run_id, args.data_dir, args.epochs, args.train_seed)
    run_trials(study, objective, args.trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
