"""Notebook 05's DDP training, read from the store its two executions wrote (the team server:
``tests/executions.py``), and the one thing the notebook does not do, launched here for real:
``torchrun`` started without ``MLFLOW_RUN_ID``, where rank 0 creates the run. The Azure job is
only built and validated (no subscription)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from dltrack import tracking
from dltrack.config import project_root
from dltrack.distributed import launch_layout, node_id
from executions import DDP

EXPERIMENT = "tests-ddp-torchrun"
DDP_EXPERIMENT, DDP_RUN, DDP_MODEL = (
    "fashion_images_prediction_ddp", "ddp-cnn", "fmnist-image-predictor-ddp"
)  # fmt: skip


def all_runs(uri: str) -> list:
    """Every run in the store ``uri``, whatever its experiment."""
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture(scope="module")
def launched_without_a_run(tmp_path_factory) -> dict:
    """One ``torchrun --standalone --nproc_per_node=2`` training, 1 epoch of 2 batches, no
    checkpoints, gradients exchanged as float16, launched without ``MLFLOW_RUN_ID`` (rank 0
    creates the run), in a store of its own: what the notebook, whose cell makes the run first,
    does not do."""
    folder = tmp_path_factory.mktemp("ddp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DLTRACK_FASHION_MNIST_DIR": ""}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "dltrack.distributed.train", "--epochs", "1", "--limit-batches", "2",
               "--checkpoints", "none", "--experiment", EXPERIMENT, "--ddp-comm-hook", "fp16"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"uri": uri, "runs": all_runs(uri), "log": done.stderr}


@pytest.fixture()
def ddp_runs(notebooks, as_alice) -> list:
    """Notebook 05's runs on the team server, oldest first: one per execution."""
    for round_ in (1, 2):
        notebooks.execution(DDP, round_)
    found = as_alice.get_experiment_by_name(DDP_EXPERIMENT)
    return as_alice.search_runs([found.experiment_id], f"attributes.run_name = '{DDP_RUN}'",
                                order_by=["attributes.start_time ASC"])  # fmt: skip


def checkpoints_of(run) -> list:
    return mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )


def test_launch_layout_reads_the_launchers_environment():
    assert launch_layout({}) == (1, 1)
    assert launch_layout({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}) == (2, 1)
    assert launch_layout({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}) == (2, 2)
    assert launch_layout({"WORLD_SIZE": "4"}) == (4, 1)  # Azure ML sets no LOCAL_WORLD_SIZE
    with pytest.raises(ValueError, match="multiple of LOCAL_WORLD_SIZE"):
        launch_layout({"WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "2"})
    assert node_id(1) == "node-1"


def test_rank_0_creates_the_one_run_when_the_launcher_made_none(launched_without_a_run):
    (run,) = launched_without_a_run["runs"]  # in a fresh store, in any experiment
    client = MlflowClient(launched_without_a_run["uri"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.params["world_size"] == "2" and run.data.params["epochs"] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [0]


def test_the_fp16_option_registers_the_compression_hook_on_the_cpu(launched_without_a_run):
    """Lightning's ``DDPStrategy(ddp_comm_hook=...)`` ignores a hook on the CPU: the script
    registers it itself, in every process (the benchmark's ``ddp-fp16`` arm was plain DDP)."""
    (run,) = launched_without_a_run["runs"]
    assert run.data.params["ddp_comm_hook"] == "fp16" and run.data.params["backend"] == "gloo"
    log = launched_without_a_run["log"]
    assert {f"rank {r}: gradients are exchanged as float16" in log for r in (0, 1)} == {True}


@pytest.mark.notebook
def test_each_training_is_one_run_with_one_value_per_epoch(ddp_runs):
    """Two executions, two trainings of 2 processes: two runs (never one per process), each with
    one value per epoch for each metric, as many epochs as its param says."""
    assert len(ddp_runs) == 2
    client = MlflowClient()
    for run in ddp_runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["world_size"] == "2"
        epochs = int(run.data.params["epochs"])
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(epochs)), f"{key} logged at steps {steps}"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [epochs]
        assert 0.3 < run.data.metrics["test_acc"] <= 1.0  # chance is 0.1


@pytest.mark.notebook
def test_checkpoints_number_the_epochs_and_carry_their_metrics(ddp_runs):
    client = MlflowClient()
    for run in ddp_runs:
        epochs = int(run.data.params["epochs"])
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}
        checkpoints = sorted(checkpoints_of(run), key=lambda model: model.name)
        assert [model.name for model in checkpoints] == [f"checkpoint-{e}" for e in range(epochs)]
        for epoch, model in enumerate(checkpoints):
            linked = {m.key: m for m in model.metrics if m.key.startswith(("train_", "val_"))}
            assert set(linked) == {"train_loss", "train_acc", "val_loss", "val_acc"}
            assert {m.step for m in linked.values()} == {epoch}
            assert linked["val_acc"].value == history[epoch]
        info = mlflow.models.get_model_info(f"models:/{checkpoints[-1].model_id}")
        assert "pytorch" in info.flavors


@pytest.mark.notebook
def test_system_metrics_exist_for_each_node_id(ddp_runs):
    client = MlflowClient()
    for run in ddp_runs:
        nodes = {key.split("/")[1] for key in run.data.metrics if key.startswith("system/")}
        assert nodes == {node_id(0)}  # one machine: its system metrics once, whatever the ranks
        for node in nodes:
            cpu = client.get_metric_history(
                run.info.run_id, f"system/{node}/cpu_utilization_percentage"
            )
            memory = client.get_metric_history(
                run.info.run_id, f"system/{node}/system_memory_usage_megabytes"
            )
            assert cpu and memory and all(m.value > 0 for m in memory)


@pytest.mark.notebook
def test_the_registered_versions_are_each_runs_best_checkpoint(ddp_runs):
    """One registered version per training, each the run's checkpoint with the best logged
    val_acc, the promotion rule replayed over their test accuracies; the rank-0 demo left a run
    per process each time."""
    from test_notebooks import expected_aliases

    client = MlflowClient()
    versions = sorted(client.search_model_versions(f"name = '{DDP_MODEL}'"),
                      key=lambda v: int(v.version))  # fmt: skip
    assert [v.run_id for v in versions] == [run.info.run_id for run in ddp_runs]
    accuracies = []
    for version, run in zip(versions, ddp_runs, strict=True):
        val_acc = {
            model.model_id: [m.value for m in model.metrics if m.key == "val_acc"]
            for model in checkpoints_of(run)
        }
        best = max(value for values in val_acc.values() for value in values)
        assert val_acc[version.source.removeprefix("models:/")] == [best]
        accuracies.append(client.get_run(run.info.run_id).data.metrics["checkpoint_test_acc"])
        assert client.get_model_version(DDP_MODEL, version.version).tags["promotion"]
    aliases = {alias: int(found.version) for alias in ("champion", "challenger")
               if (found := tracking.version_by_alias(DDP_MODEL, alias))}  # fmt: skip
    assert aliases == expected_aliases(accuracies)
    scratch = client.get_experiment_by_name(f"{DDP_EXPERIMENT}-every-rank-logs")
    assert len(client.search_runs([scratch.experiment_id])) == 2 * len(versions)


# azure-ai-ml 1.35 builds its YAML schemas with deprecated marshmallow API: third-party noise
@pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")
@pytest.mark.notebook
def test_the_notebooks_dry_run_prints_the_job_with_its_distribution(notebooks):
    import nbformat
    import yaml

    executed = nbformat.read(notebooks.second(DDP), as_version=4)
    (printed,) = [
        "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        for cell in executed.cells
        if cell.cell_type == "code" and cell.source.startswith("print(job)")
    ]
    shown = yaml.safe_load(printed[: printed.index("\ninstances:")])  # print(job): the YAML
    assert shown["type"] == "command" and shown["compute"] == "azureml:cpu-cluster"
    assert shown["resources"] == {"instance_count": 2}
    assert shown["distribution"] == {"type": "pytorch", "process_count_per_instance": 2}
    assert shown["component"]["command"].startswith("python -m dltrack.distributed.train")
    assert "--devices 2 --num-nodes 2" in shown["component"]["command"]
    assert shown["inputs"]["epochs"] == int(os.environ["DLTRACK_EPOCHS"])
    assert "instances: 2 | distribution: pytorch 2 | compute: cpu-cluster" in printed


# azure-ai-ml 1.35 builds its YAML schemas with deprecated marshmallow API: third-party noise
@pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")
def test_an_azure_command_job_carries_its_distribution_and_the_pinned_environment():
    azure_ml = pytest.importorskip("azure.ai.ml")
    from azure.ai.ml.entities import Environment

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
    assert job.type == "command" and job.compute == "cpu-cluster"
    assert job.resources.instance_count == 3
    assert job.distribution.type == "pytorch"
    assert job.distribution.process_count_per_instance == 2
    assert job.command.startswith("python -m dltrack.distributed.train")
    assert Path(job.code) == project_root() / "src"
    pip = job.environment.conda_file["dependencies"][-1]["pip"]
    assert any(p.startswith("azureml-mlflow==") for p in pip)
    assert any(p.startswith("mlflow>=3.15,<3.16") for p in pip)  # what azureml-mlflow admits
