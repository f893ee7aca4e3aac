"""The DDP training script (notebook 05) launched for real: ``torchrun`` starts 2 processes on
the CPU (gloo) against a fresh SQLite store, once per module, and the tests read what the store
holds. The Azure job is only built and validated (no subscription)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from dltrack.config import project_root
from dltrack.distributed import launch_layout, node_id

EPOCHS = 2
EXPERIMENT = "tests-ddp-torchrun"


def all_runs(uri: str) -> list:
    """Every run in the store ``uri``, whatever its experiment."""
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture(scope="module")
def torchrun_training(tmp_path_factory) -> dict:
    """One ``torchrun --standalone --nproc_per_node=2`` training of 2 epochs on the shipped subset,
    launched without ``MLFLOW_RUN_ID`` (rank 0 creates the run), in a store of its own."""
    folder = tmp_path_factory.mktemp("ddp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DLTRACK_FASHION_MNIST_DIR": ""}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "dltrack.distributed.train", "--epochs", str(EPOCHS), "--experiment",
               EXPERIMENT, "--system-metrics-interval", "1"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # (it sets $MLFLOW_TRACKING_URI too)
    yield {"uri": uri, "runs": all_runs(uri)}
    mlflow.set_tracking_uri(previous)


def test_launch_layout_reads_the_launchers_environment():
    assert launch_layout({}) == (1, 1)
    assert launch_layout({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}) == (2, 1)
    assert launch_layout({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}) == (2, 2)
    assert launch_layout({"WORLD_SIZE": "4"}) == (4, 1)  # Azure ML sets no LOCAL_WORLD_SIZE
    with pytest.raises(ValueError, match="multiple of LOCAL_WORLD_SIZE"):
        launch_layout({"WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "2"})
    assert node_id(1) == "rank-1"


def test_two_processes_leave_one_run_with_one_value_per_epoch(torchrun_training):
    (run,) = torchrun_training["runs"]  # in a fresh store, in any experiment
    assert run.info.status == "FINISHED"
    assert MlflowClient(torchrun_training["uri"]).get_experiment(run.info.experiment_id).name == (
        EXPERIMENT
    )
    assert run.data.params["world_size"] == "2" and run.data.params["epochs"] == str(EPOCHS)
    client = MlflowClient(torchrun_training["uri"])
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(EPOCHS)), f"{key} logged at steps {steps}"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [EPOCHS]
    assert 0.5 < run.data.metrics["test_acc"] <= 1.0  # chance is 0.1


def checkpoints_of(run) -> list:
    return mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )


def test_checkpoints_number_the_epochs_and_carry_their_metrics(torchrun_training):
    (run,) = torchrun_training["runs"]
    client = MlflowClient(torchrun_training["uri"])
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}
    checkpoints = sorted(checkpoints_of(run), key=lambda model: model.name)
    assert [model.name for model in checkpoints] == [f"checkpoint-{e}" for e in range(EPOCHS)]
    for epoch, model in enumerate(checkpoints):
        linked = {m.key: m for m in model.metrics if not m.key.startswith("system/")}
        assert set(linked) == {"train_loss", "train_acc", "val_loss", "val_acc"}
        assert {m.step for m in linked.values()} == {epoch}
        assert linked["val_acc"].value == history[epoch]
        assert "pytorch" in mlflow.models.get_model_info(f"models:/{model.model_id}").flavors


def test_system_metrics_exist_for_each_node_id(torchrun_training):
    (run,) = torchrun_training["runs"]
    client = MlflowClient(torchrun_training["uri"])
    nodes = {key.split("/")[1] for key in run.data.metrics if key.startswith("system/")}
    assert nodes == {"rank-0", "rank-1"}
    for node in nodes:
        cpu = client.get_metric_history(
            run.info.run_id, f"system/{node}/cpu_utilization_percentage"
        )
        memory = client.get_metric_history(
            run.info.run_id, f"system/{node}/system_memory_usage_megabytes"
        )
        assert cpu and memory and all(m.value > 0 for m in memory)


# azure-ai-ml 1.35 builds its YAML schemas with deprecated marshmallow API: third-party noise
@pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")
def test_azure_job_yaml_round_trips_with_its_distribution(tmp_path):
    azure_ml = pytest.importorskip("azure.ai.ml")
    from azure.ai.ml.entities import Environment

    from dltrack import azure

    job = azure_ml.command(
        code=project_root() / "src",
        command="python -m dltrack.distributed.train --data ${{inputs.data}} --num-nodes 3",
        inputs={"data": azure_ml.Input(type="uri_folder", path=str(project_root() / "data"))},
        environment=Environment(
            image="mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04:latest",
            conda_file=project_root() / "src" / "dltrack" / "distributed" / "job-environment.yml",
        ),
        compute="cpu-cluster",
        instance_count=3,
        distribution=azure_ml.PyTorchDistribution(process_count_per_instance=2),
    )
    loaded = azure_ml.load_job(azure.dump_job(job, tmp_path / "job.yml"))
    assert loaded.type == "command" and loaded.compute == "cpu-cluster"
    assert loaded.resources.instance_count == 3
    assert loaded.distribution.type == "pytorch"
    assert loaded.distribution.process_count_per_instance == 2
    assert loaded.command.startswith("python -m dltrack.distributed.train")
    assert Path(loaded.code) == project_root() / "src"
    pip = loaded.environment.conda_file["dependencies"][-1]["pip"]
    assert any(p.startswith("azureml-mlflow==") for p in pip)
