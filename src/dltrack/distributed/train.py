"""Train notebook 02's Lightning CNN with distributed data parallel (DDP), tracked as ONE run.

Every process runs this same file; the launcher decides how many there are:

    torchrun --standalone --nproc_per_node=2 -m dltrack.distributed.train --epochs 2
    torchrun --standalone --nproc_per_node=2 --max-restarts=2 -m dltrack.distributed.train
    torchrun --nnodes=2 --nproc_per_node=2 --rdzv_backend=c10d \\
        --rdzv_endpoint=<host of node 0>:29500 --rdzv_id=fmnist -m dltrack.distributed.train
    python -m dltrack.distributed.train              # one process, no DDP
    # Azure ML: a command job with PyTorchDistribution runs the same command (notebook 05)

The tracking rule (the rank-0 rule): rank 0 opens the run, logs params, metrics and checkpoint
models, and alone ends the run. It hands the run id to the other ranks
(``torch.distributed.broadcast_object_list``). System metrics describe a machine, not a process,
so one process per machine (``LOCAL_RANK`` 0) samples them, under the node id ``node-<n>``
(``system/node-0/...``). A launcher that made the run already says so in ``MLFLOW_RUN_ID`` (the
notebook does; an Azure ML job does for its own run); rank 0 then resumes that run.

``--every-rank-logs`` breaks the rule on purpose: each process opens its own run and logs
everything, which is how MLflow autolog under DDP ends with one run per rank.

Checkpoints: after each epoch's validation rank 0 logs, in this order, the full Lightning
checkpoint (weights, optimizer, schedule, loop state: ``checkpoints/epoch-<n>.ckpt``, a run
artifact), the model (``mlflow.pytorch.log_model(..., step=epoch)``) and last the epoch's metrics,
linked to the model with ``model_id``. The metrics are the commit: an epoch with metrics has its
checkpoint and model. Azure ML's MLflow endpoint has no logged-model API (MLflow 3's
``/api/2.0/mlflow/logged-models`` answers 404, Azure/azure-sdk-for-python#44896), so against an
``azureml://`` store the models are saved as run artifacts instead (``--checkpoints auto``).

Faults (the field's way: ``torchrun --max-restarts``). The process group has an explicit timeout
(``--process-group-timeout``): a process stuck in a collective (its peer stopped or hung) fails
after it, instead of gloo's 30 minutes. A process that fails records why in the run
(``failures/attempt-<n>/rank-<r>.log``: the error and its last log lines) and exits; nothing
waits for the others in a ``finally``. ``torchrun`` then stops the others (SIGTERM, which this
script turns into an exception, so rank 0 records it and marks the run FAILED, naming the peers
it finds gone or stopped). With restarts left, ``torchrun`` starts every process again: rank 0
finds the same run (``MLFLOW_RUN_ID``, or the run tagged with ``torchrun``'s
``TORCHELASTIC_RUN_ID``), checks its params are this training's, and every rank resumes from the
last epoch whose metrics were logged (``trainer.fit(ckpt_path=...)``), so each epoch's metrics and
model are logged once. Each batch draws from a seed of its own (``--seed``, epoch, batch, rank),
so a resumed epoch draws the same dropout masks as the interrupted one did: seeding each epoch
was not enough, because a resumed fit makes the epoch's shuffled loader at another point and
that draw moved every later random number.

Data: rank 0 logs the training and validation datasets (``mlflow.log_input``, contexts
``training`` and ``validation``) when it opens the run, and the test dataset with the test
metrics; each epoch's ``train_*`` metrics are linked to the training dataset, its ``val_*``
metrics to the validation dataset, and all of them to the epoch's checkpoint model
(``mlflow.log_metrics(..., model_id=, dataset=)``; MLflow keeps the dataset link with the model's
metrics). The test metrics are linked to the test dataset and the last checkpoint, the weights
tested.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import tempfile
import traceback
from collections import deque
from datetime import timedelta
from importlib.metadata import version

import lightning as L
import mlflow
import numpy as np
import psutil
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.elastic.multiprocessing.errors import record

from dltrack import data, tracking
from dltrack.distributed import launch_layout, node_id
from dltrack.models.lightning_cnn import (
    SIGNATURE,
    FashionMNISTCNN,
    FashionMNISTDataModule,
    mlflow_datasets,
    silence_known_noise,
)

#: Loading a pt2 model needs torch and MLflow only. Given, MLflow does not infer them: inferring
#: loads the model in a fresh Python process, seconds per checkpoint.
REQUIREMENTS = [f"torch=={version('torch')}", f"mlflow=={version('mlflow')}"]
#: The tag that finds a run again after ``torchrun`` restarted the processes: its value is
#: ``TORCHELASTIC_RUN_ID``, the same for every attempt of one ``torchrun`` launch.
ELASTIC_RUN_TAG = "dltrack.torchelastic_run_id"
#: The metric whose logging commits an epoch (its checkpoint and model are logged before it).
COMMIT_METRIC = "val_acc"
#: How long the other ranks wait for rank 0 to open the run (a fresh SQLite store's migrations,
#: a remote server): longer than a training step's collectives may wait.
SETUP_TIMEOUT = timedelta(minutes=5)
#: This process's last log lines, saved in the run when it fails.
RECENT_LINES: deque[str] = deque(maxlen=60)

log = logging.getLogger("dltrack.distributed.train")


class Stopped(Exception):
    """This process was asked to stop (SIGTERM): ``torchrun`` stops every process of a training
    when one of them fails, a scheduler when it preempts the job."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--help`` lists it."""
    devices, num_nodes = launch_layout()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--data",
        default=os.environ.get("DLTRACK_FASHION_MNIST_DIR", ""),
        help="folder of the four Fashion-MNIST .gz files ('' = the shipped subset)",
    )
    add("--epochs", type=int, default=2)
    add("--batch-size", type=int, default=64, help="global batch, split over the processes")
    add("--learning-rate", type=float, default=1e-3)
    add("--seed", type=int, default=42)
    add("--limit-batches", type=int, default=None, help="train/validate on this many batches")
    add(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "training_ddp"),
        help="ignored when MLFLOW_RUN_ID names the run already",
    )
    add("--run-name", default="ddp-cnn")
    add("--devices", type=int, default=devices, help="processes per machine")
    add("--num-nodes", type=int, default=num_nodes, help="machines")
    add(
        "--checkpoints",
        choices=["auto", "models", "artifacts", "none"],
        default="auto",
        help="auto: logged models, or run artifacts against Azure ML's MLflow endpoint; "
        "none: no models and no full checkpoints (a restarted training starts again)",
    )
    add(
        "--process-group-timeout",
        type=float,
        default=20.0,
        help="seconds a collective waits for the other processes before it fails",
    )
    add(
        "--ddp-comm-hook",
        choices=["none", "fp16"],
        default="none",
        help="fp16: DDP sends the gradients as float16 (PyTorch's fp16_compress_hook)",
    )
    add("--system-metrics-interval", type=float, default=2.0, help="seconds between samples")
    add(
        "--every-rank-logs",
        action="store_true",
        help="break the rank-0 rule on purpose: every process opens its own run",
    )
    args = parser.parse_args(argv)
    if args.checkpoints == "auto":
        azure = mlflow.get_tracking_uri().startswith("azureml:")
        args.checkpoints = "artifacts" if azure else "models"
    if args.process_group_timeout <= 0:
        parser.error(f"--process-group-timeout must be positive, got {args.process_group_timeout}")
    return args


class OneRunPerTraining(L.Callback):
    """The rank-0 rule as a Lightning callback: after each epoch's validation
    (``on_train_epoch_end``) rank 0 logs the epoch's full checkpoint, its model, and last its
    metrics linked to the model and to the dataset each was measured on (``datasets``, by
    context: ``training``, ``validation``). Each batch draws from its own seed
    (``on_train_batch_start``).
    """

    def __init__(
        self, args: argparse.Namespace, folder: str, datasets: dict[str, Dataset]
    ) -> None:
        self.args = args
        self.folder = folder  # where this process writes a checkpoint before logging it
        self.datasets = datasets

    def logs(self, trainer: L.Trainer) -> bool:
        """Whether this process logs params, metrics and models."""
        return trainer.is_global_zero or self.args.every_rank_logs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Say the epoch started (in the log a failure saves)."""
        log.info("rank %d (pid %d): epoch %d starts", trainer.global_rank, os.getpid(),
                 trainer.current_epoch)  # fmt: skip

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        """Seed the batch's random numbers (dropout) from ``--seed``, the epoch, the batch and
        the rank: the same whether the epoch runs through or is resumed."""
        key = [self.args.seed, trainer.current_epoch, batch_idx, trainer.global_rank]
        torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0: the epoch's full checkpoint, its model, then its metrics."""
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        full = self.args.checkpoints != "none" and not self.args.every_rank_logs
        path = os.path.join(self.folder, f"epoch-{epoch}.ckpt")
        if full:  # every rank calls it (it ends in a barrier); rank 0 writes the file
            trainer.save_checkpoint(path)
        if not self.logs(trainer):
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        model_id = None
        if full:
            mlflow.log_artifact(path, "checkpoints")  # what a restarted training resumes from
            os.remove(path)
        if self.args.checkpoints != "none":
            model_id = log_checkpoint(pl_module, trainer.datamodule, epoch, self.args.checkpoints)
        training = {key: value for key, value in metrics.items() if key.startswith("train_")}
        mlflow.log_metrics(training, step=epoch, model_id=model_id,
                           dataset=self.datasets.get("training"))  # fmt: skip
        validation = {key: value for key, value in metrics.items() if key not in training}
        mlflow.log_metrics(validation, step=epoch, model_id=model_id,
                           dataset=self.datasets.get("validation"))  # last: the epoch's commit
        log.info("epoch %d logged: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})


class CompressGradients(L.Callback):
    """DDP exchanges the gradients as float16: PyTorch's ``fp16_compress_hook`` divides each
    bucket by the number of processes, casts it to float16, sums it over the processes in
    float16 and copies the result back into the float32 gradients. It is registered on the
    DDP-wrapped model (``DistributedDataParallel.register_comm_hook``) once Lightning has wrapped
    it. Lightning's own ``DDPStrategy(ddp_comm_hook=...)`` registers a hook on CUDA devices only
    and ignores it on the CPU (gloo); this registers it on either."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Register the hook before the first backward pass."""
        trainer.strategy.model.register_comm_hook(state=None,
                                                  hook=default_hooks.fp16_compress_hook)  # fmt: skip
        log.info("rank %d: gradients are exchanged as float16", trainer.global_rank)


def use_experiment(name: str) -> None:
    """``mlflow.set_experiment(name)``, created beside a SQLite store if missing."""
    tracking.prepare_experiment(name)  # artifacts beside a SQLite store, restored if deleted
    mlflow.set_experiment(name)


def log_checkpoint(
    module: L.LightningModule, datamodule: FashionMNISTDataModule, epoch: int, how: str
) -> str | None:
    """Log the module as it is after ``epoch`` (0-based); returns its ``model_id`` when logged
    as an MLflow model (``how="models"``), ``None`` when saved as run artifacts
    (``how="artifacts"``, ``checkpoints/epoch-<n>/``).

    What is logged is a copy of the weights on the CPU, in evaluation mode: the training module
    may be on a GPU, and the input example (and whoever loads the model) is on the CPU.
    """
    example = datamodule.test_set.tensors[0][:4].numpy()
    snapshot = type(module)(**module.hparams)
    snapshot.load_state_dict({key: value.cpu() for key, value in module.state_dict().items()})
    snapshot.eval()  # export the inference graph (dropout off)
    if how == "models":
        info = mlflow.pytorch.log_model(
            snapshot, name=f"checkpoint-{epoch}", step=epoch, signature=SIGNATURE,
            input_example=example, serialization_format="pt2", pip_requirements=REQUIREMENTS,
        )  # fmt: skip
        return info.model_id
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model")
        mlflow.pytorch.save_model(snapshot, path, signature=SIGNATURE, input_example=example,
                                  pip_requirements=REQUIREMENTS)  # fmt: skip
        mlflow.log_artifacts(path, f"checkpoints/epoch-{epoch}")
    return None


def find_run(experiment: str) -> str | None:
    """The run this training continues, or ``None`` for a new one: ``MLFLOW_RUN_ID`` (a
    launcher's run, or a retry), else, after ``torchrun`` restarted the processes, the newest
    unfinished run of ``experiment`` tagged with this launch's ``TORCHELASTIC_RUN_ID``."""
    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    elastic = os.environ.get("TORCHELASTIC_RUN_ID")
    if not elastic or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return None
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = mlflow.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{ELASTIC_RUN_TAG}` = '{elastic}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def check_resumable(run: mlflow.entities.Run, params: dict) -> None:
    """Refuse to continue ``run`` with other params, or once it has finished its training.

    Raises:
        ValueError: the run holds other values for some of ``params``, or has a ``test_acc``
            (its training is over).
    """
    held = run.data.params
    other = {k: (held[k], str(v)) for k, v in params.items() if k in held and held[k] != str(v)}
    if other:
        listed = ", ".join(f"{k}: run has {was!r}, this launch {now!r}" for k, (was, now) in
                           sorted(other.items()))  # fmt: skip
        raise ValueError(
            f"run {run.info.run_id} holds other params ({listed}); a relaunch continues a run "
            "only with the same params: launch without MLFLOW_RUN_ID for a new run, or with the "
            "run's values to resume it"
        )
    if "test_acc" in run.data.metrics:
        raise ValueError(
            f"run {run.info.run_id} has finished its training (it has a test_acc); launch "
            "without MLFLOW_RUN_ID for a new run"
        )


def committed_epoch(run_id: str) -> int | None:
    """The last epoch whose metrics the run holds (``None``: none yet)."""
    steps = [m.step for m in MlflowClient().get_metric_history(run_id, COMMIT_METRIC)]
    return max(steps) if steps else None


def checkpoint_model_id(run_id: str, epoch: int) -> str | None:
    """The ``model_id`` of the run's checkpoint model of ``epoch``, or ``None`` (not logged as a
    model: ``--checkpoints artifacts`` or ``none``, or ``--every-rank-logs``)."""
    run = MlflowClient().get_run(run_id)
    found = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = 'checkpoint-{epoch}'",
        output_format="list",
    )
    return found[0].model_id if found else None


def drop_uncommitted_models(run: mlflow.entities.Run, last_epoch: int | None) -> None:
    """Delete the run's checkpoint models of epochs after ``last_epoch``: logged by a process
    that failed before the epoch's metrics, they are logged again when the epoch is redone."""
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    for model in models:
        epoch = model.name.removeprefix("checkpoint-")
        if epoch.isdigit() and (last_epoch is None or int(epoch) > last_epoch):
            MlflowClient().delete_logged_model(model.model_id)
            log.info("deleted %s (%s): its epoch has no metrics", model.name, model.model_id)


def open_run(
    args: argparse.Namespace, params: dict, datasets: dict[str, Dataset]
) -> tuple[str, int | None]:
    """Rank 0: start or resume the training's run and log its params and its training and
    validation datasets (once: a resumed run has them); returns the run id and the epoch to
    resume after (``None``: start at epoch 0).

    Raises:
        ValueError: the run to continue holds other params, or has finished (nothing is changed
            in it then).
    """
    run_id = find_run(args.experiment)
    resume, held = None, None
    if run_id is None:
        use_experiment(args.experiment)
        tags = {ELASTIC_RUN_TAG: os.environ.get("TORCHELASTIC_RUN_ID", "none")}
        run = mlflow.start_run(run_name=args.run_name, tags=tags, log_system_metrics=True)
    else:
        held = MlflowClient().get_run(run_id)
        check_resumable(held, params)  # before the run is touched
        if args.checkpoints != "none":
            resume = committed_epoch(run_id)
        if args.checkpoints == "models":
            drop_uncommitted_models(held, resume)
        run = mlflow.start_run(run_id=run_id, log_system_metrics=True)
    mlflow.log_params(params)
    if held is None or not held.inputs.dataset_inputs:  # a resumed run has them
        for context in ("training", "validation"):
            mlflow.log_input(datasets[context], context=context)
    if resume is not None:
        log.info("run %s: resuming after epoch %d", run.info.run_id, resume)
    return run.info.run_id, resume


def peer_report(peers: list[tuple[str, int]]) -> str:
    """Which of the other processes of this machine are gone or stopped, as a sentence (``peers``:
    ``(host, pid)`` by global rank)."""
    here, notes = socket.gethostname(), []
    for rank, (host, pid) in enumerate(peers):
        if host != here or pid == os.getpid():
            continue
        try:
            status = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            status = "gone"
        if status in ("gone", psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD, psutil.STATUS_STOPPED):
            notes.append(f"rank {rank} (pid {pid}) is {status}")
    return "; ".join(notes) or "no other process of this machine is gone or stopped"


def record_failure(
    error: BaseException, run_id: str | None, rank: int, peers: list[tuple[str, int]]
) -> None:
    """Save why this process failed in the run: rank 0 tags the reason (``failure``) and ends the
    run FAILED, then every failing rank logs the error, the peers it found gone or stopped and
    its last log lines (``failures/attempt-<n>/rank-<r>.log``). SIGTERM is ignored meanwhile:
    ``torchrun``'s, arriving while a failure is being recorded, would cut it short (and MLflow's
    exit hook would then end the run FINISHED). Never raises (the original error matters)."""
    if run_id is None:
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # torchrun still SIGKILLs after its grace
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    peers_now = peer_report(peers) if peers else "no peers known yet"
    reason = f"rank {rank}, attempt {attempt}: {type(error).__name__}: {error}; {peers_now}"
    text = "".join(traceback.format_exception(error))
    text += f"\n{reason}\n\n--- last log lines of rank {rank} ---\n" + "\n".join(RECENT_LINES)
    try:
        client = MlflowClient()
        if rank == 0:
            client.set_tag(run_id, "failure", reason[:4000])
            mlflow.end_run(status="FAILED")
        client.log_text(run_id, text, f"failures/attempt-{attempt}/rank-{rank}.log")
    except Exception:  # the store itself may be what failed
        log.exception("could not record the failure in run %s", run_id)


class _Recent(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        RECENT_LINES.append(self.format(record))


def setup_logging(rank: int) -> None:
    """Log lines with time and rank on stderr, the last ones kept for :func:`record_failure`;
    SIGTERM raises :class:`Stopped`."""
    form = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    recent = _Recent()
    recent.setFormatter(form)
    logging.basicConfig(level=logging.INFO, format=form._fmt)
    logging.captureWarnings(True)
    for name in ("", "lightning.pytorch", "lightning.fabric", "mlflow"):
        logging.getLogger(name).addHandler(recent)

    def stop(signum: int, frame: object) -> None:
        raise Stopped(f"{signal.Signals(signum).name} received: torchrun stops every process "
                      "when one fails (see the run's failures/ and torchrun's log)")  # fmt: skip

    signal.signal(signal.SIGTERM, stop)


def resume_checkpoint(run_id: str, epoch: int | None, folder: str) -> str | None:
    """The local path of the run's full checkpoint of ``epoch`` (downloaded), or ``None``."""
    if epoch is None:
        return None
    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"checkpoints/epoch-{epoch}.ckpt", dst_path=folder
    )


def init_process_group(backend: str, rank: int, world_size: int, timeout: timedelta) -> None:
    """``torch.distributed.init_process_group`` from the launcher's environment (``env://``:
    ``MASTER_ADDR``, ``MASTER_PORT``), every collective bounded by ``timeout``, its store keys
    under a prefix of this ``torchrun`` attempt (``TORCHELASTIC_RESTART_COUNT``).

    Why the prefix: ``torchrun`` keeps its TCPStore across restarts, and the keys the first
    attempt's processes left there (the gloo addresses of the process groups Lightning creates,
    such as the barrier group of ``prepare_data``) are read by the next attempt, whose processes
    then try to connect to peers that are gone: the restart hung in gloo's ``connectFullMesh``.
    """
    store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"dltrack/attempt-{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timeout)  # fmt: skip


@record  # a failing process's traceback goes into torchrun's summary
def main(argv: list[str] | None = None) -> None:
    """Train, test, and track; every process of the training runs this.

    Raises:
        ValueError: ``--batch-size`` is not a multiple of the processes; the run to continue
            (``MLFLOW_RUN_ID``) holds other params or has finished.
    """
    silence_known_noise()  # the messages notebook 02 names, in every process's log
    args = parse_args(argv)
    world_size = args.devices * args.num_nodes
    if args.batch_size % world_size:
        raise ValueError(
            f"--batch-size {args.batch_size} must be a multiple of the {world_size} processes"
        )
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", rank % args.devices))
    setup_logging(rank)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    if args.every_rank_logs:
        os.environ.pop("MLFLOW_RUN_ID", None)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = timedelta(seconds=args.process_group_timeout)
    if world_size > 1:  # here, not in Lightning, so the run can be resolved before fit
        init_process_group(backend, rank, world_size, timeout)
        backend = dist.get_backend()

    L.seed_everything(args.seed, verbose=False)
    datamodule = FashionMNISTDataModule(args.data, batch_size=args.batch_size // world_size,
                                        seed=args.seed)  # fmt: skip
    model = FashionMNISTCNN(learning_rate=args.learning_rate)
    params = {
        "data": data.verify_fashion_mnist(args.data), "epochs": args.epochs, "seed": args.seed,
        "global_batch_size": args.batch_size, "world_size": world_size, "backend": backend,
        "devices": args.devices, "num_nodes": args.num_nodes, "ddp_comm_hook": args.ddp_comm_hook,
        **model.hparams,
    }  # fmt: skip
    mlflow.set_system_metrics_node_id(node_id(rank // args.devices))
    mlflow.set_system_metrics_sampling_interval(args.system_metrics_interval)
    run_id, resume, peers, monitor, datasets = None, None, [], None, {}
    if world_size > 1:  # rank 0 opens the run while the others wait: a store's first use is slow
        setup_group = dist.new_group(backend="gloo", timeout=SETUP_TIMEOUT)
    folder = tempfile.mkdtemp(prefix=f"dltrack-ddp-rank{rank}-")
    try:
        if args.every_rank_logs:  # the bug: a run per process
            use_experiment(args.experiment)
            run_id = mlflow.start_run(run_name=args.run_name, log_system_metrics=True).info.run_id
            mlflow.log_params(params)
        elif rank == 0:
            datamodule.setup("fit")  # the split, to name the datasets (fit makes the same one)
            datasets = mlflow_datasets(datamodule)
            run_id, resume = open_run(args, params, datasets)
        if world_size > 1:
            shared = [run_id, resume] if rank == 0 else [None, None]
            dist.broadcast_object_list(shared, src=0, group=setup_group)
            if not args.every_rank_logs:
                run_id, resume = shared
            peers = [None] * world_size
            dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
        if rank != 0 and local_rank == 0 and not args.every_rank_logs:  # another machine
            monitor = SystemMetricsMonitor(run_id, sampling_interval=args.system_metrics_interval,
                                           resume_logging=True, node_id=node_id(rank // args.devices))  # fmt: skip
            monitor.start()
        strategy = (
            DDPStrategy(process_group_backend=backend, timeout=timeout)
            if world_size > 1
            else "auto"
        )
        callbacks = [OneRunPerTraining(args, folder, datasets)]
        if args.ddp_comm_hook == "fp16" and world_size > 1:
            callbacks.append(CompressGradients())
        trainer = L.Trainer(
            accelerator="auto",  # CUDA if there is one (then NCCL carries the gradients), else CPU
            strategy=strategy,  # DDP: gloo on CPU, nccl on CUDA
            devices=args.devices,
            num_nodes=args.num_nodes,
            max_epochs=args.epochs,
            limit_train_batches=args.limit_batches,
            limit_val_batches=args.limit_batches,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        ckpt_path = resume_checkpoint(run_id, resume, folder)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        tested = trainer.test(model, datamodule=datamodule, verbose=False)[0]
        if rank == 0 or args.every_rank_logs:
            if "test" in datasets:
                mlflow.log_input(datasets["test"], context="test")
            tested_model = checkpoint_model_id(run_id, args.epochs - 1)  # the weights tested
            mlflow.log_metrics(tested, step=args.epochs, model_id=tested_model,
                               dataset=datasets.get("test"))  # fmt: skip
            mlflow.end_run(status="FINISHED")  # rank 0 alone ends the run
    except BaseException as error:
        record_failure(error, run_id, rank, peers)
        raise
    finally:
        if monitor is not None:
            monitor.finish()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
