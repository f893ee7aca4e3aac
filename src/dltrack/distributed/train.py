"""Train notebook 02's Lightning CNN with distributed data parallel (DDP), tracked as ONE run.

Every process runs this same file; the launcher decides how many there are:

    torchrun --standalone --nproc_per_node=2 -m dltrack.distributed.train --epochs 2
    torchrun --nnodes=2 --nproc_per_node=2 --node_rank=0 --rdzv_backend=c10d \\
        --rdzv_endpoint=<host of node 0>:29500 --rdzv_id=fmnist -m dltrack.distributed.train
    python -m dltrack.distributed.train              # one process, no DDP
    # Azure ML: a command job with PyTorchDistribution runs the same command (notebook 05)

The tracking rule (the rank-0 rule): rank 0 opens the run and logs params, metrics and
checkpoint models; it hands the run id to the other ranks (``trainer.strategy.broadcast``), and
every rank joins that run only to log its own system metrics, under its own node id
(``system/rank-<n>/...``). A launcher that made the run already says so in ``MLFLOW_RUN_ID``
(the notebook does; an Azure ML job does for its own run); rank 0 then resumes that run.

``--every-rank-logs`` breaks the rule on purpose: each process opens its own run and logs
everything, which is how MLflow autolog under DDP ends with one run per rank.

Checkpoints: after each epoch's validation rank 0 logs the model with
``mlflow.pytorch.log_model(..., step=epoch)`` and the epoch's metrics linked to it with
``model_id``. Azure ML's MLflow endpoint has no logged-model API (MLflow 3's
``/api/2.0/mlflow/logged-models`` answers 404, Azure/azure-sdk-for-python#44896), so against an
``azureml://`` store the checkpoints are saved as run artifacts instead (``--checkpoints auto``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from importlib.metadata import version

import lightning as L
import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from dltrack import data, tracking
from dltrack.distributed import launch_layout, node_id
from dltrack.models.lightning_cnn import FashionMNISTCNN, FashionMNISTDataModule

#: Loading a pt2 model needs torch and MLflow only. Given, MLflow does not infer them: inferring
#: loads the model in a fresh Python process, seconds per checkpoint.
REQUIREMENTS = [f"torch=={version('torch')}", f"mlflow=={version('mlflow')}"]
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
)


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
        help="auto: logged models, or run artifacts against Azure ML's MLflow endpoint",
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
    return args


class OneRunPerTraining(L.Callback):
    """The rank-0 rule as a Lightning callback: one run per training, whatever the processes.

    ``setup`` runs on every rank once the process group exists, so rank 0 can open the run and
    broadcast its id; ``on_train_epoch_end`` (after the epoch's validation) logs a checkpoint
    model and its metrics from rank 0 only.
    """

    def __init__(self, args: argparse.Namespace, params: dict) -> None:
        self.args = args
        self.params = params

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Rank 0 opens the run and logs params; the other ranks join it by id."""
        if stage != "fit" or mlflow.active_run() is not None:
            return
        mlflow.set_system_metrics_node_id(node_id(trainer.global_rank))
        mlflow.set_system_metrics_sampling_interval(self.args.system_metrics_interval)
        if self.args.every_rank_logs:  # the bug: a run per process
            use_experiment(self.args.experiment)
            mlflow.start_run(run_name=self.args.run_name, log_system_metrics=True)
            mlflow.log_params(self.params)
            return
        run_id = None
        if trainer.is_global_zero:  # the other ranks wait in the broadcast below
            if not os.environ.get("MLFLOW_RUN_ID"):
                use_experiment(self.args.experiment)
            run = mlflow.start_run(run_name=self.args.run_name, log_system_metrics=True)
            mlflow.log_params(self.params)
            run_id = run.info.run_id
        run_id = trainer.strategy.broadcast(run_id, src=0)
        if not trainer.is_global_zero:  # join rank 0's run: system metrics only
            mlflow.start_run(run_id=run_id, log_system_metrics=True)

    def logs(self, trainer: L.Trainer) -> bool:
        """Whether this process logs params, metrics and models."""
        return trainer.is_global_zero or self.args.every_rank_logs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0: the epoch's checkpoint model, and its metrics linked to it."""
        if not self.logs(trainer) or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        model_id = None
        if self.args.checkpoints != "none":
            model_id = log_checkpoint(pl_module, trainer.datamodule, epoch, self.args.checkpoints)
        mlflow.log_metrics(metrics, step=epoch, model_id=model_id)


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


def main(argv: list[str] | None = None) -> None:
    """Train, test, and track; every process of the training runs this."""
    args = parse_args(argv)
    world_size = args.devices * args.num_nodes
    if args.batch_size % world_size:
        raise ValueError(
            f"--batch-size {args.batch_size} must be a multiple of the {world_size} processes"
        )
    mlflow.set_tracking_uri(tracking.tracking_uri())  # nothing touches the store before setup
    if args.every_rank_logs:
        os.environ.pop("MLFLOW_RUN_ID", None)

    L.seed_everything(args.seed, verbose=False)
    datamodule = FashionMNISTDataModule(args.data, batch_size=args.batch_size // world_size,
                                        seed=args.seed)  # fmt: skip
    model = FashionMNISTCNN(learning_rate=args.learning_rate)
    params = {
        "data": data.verify_fashion_mnist(args.data), "epochs": args.epochs, "seed": args.seed,
        "global_batch_size": args.batch_size, "world_size": world_size,
        "devices": args.devices, "num_nodes": args.num_nodes, **model.hparams,
    }  # fmt: skip
    trainer = L.Trainer(
        accelerator="auto",  # CUDA if there is one (then NCCL carries the gradients), else CPU
        strategy="ddp" if world_size > 1 else "auto",  # gloo on CPU, nccl on CUDA
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
        callbacks=[OneRunPerTraining(args, params)],
    )
    status = "FAILED"
    try:
        trainer.fit(model, datamodule=datamodule)
        tested = trainer.test(model, datamodule=datamodule, verbose=False)[0]
        if trainer.is_global_zero or args.every_rank_logs:
            mlflow.log_metrics(tested, step=args.epochs)
        status = "FINISHED"
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # rank 0 has logged everything before any rank ends
        mlflow.end_run(status=status)


if __name__ == "__main__":
    main()
