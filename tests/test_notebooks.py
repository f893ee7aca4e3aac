"""The notebooks, end to end, twice against one tracking store (Restart & Run All, twice).

``make test`` first runs every notebook once with nbmake (``testpaths`` starts with
``notebooks``); this module then runs each one again on the same store, keeps the executed copy,
and checks what both runs recorded in the store and what the second run printed. Run alone, it
executes each notebook twice itself. Parameters come from the environment
(``tests/conftest.py``: the test store, 2 epochs, the shipped subset).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
import nbformat
import numpy as np
import psutil
import pytest
import yaml
from mlflow import MlflowClient

from dltrack import tracking
from dltrack.config import project_root
from dltrack.models import sentiment
from notebooks import run_notebook  # tools/notebooks.py

pytestmark = pytest.mark.notebook


@dataclass
class Expected:
    notebook: str
    experiment: str
    run_name: str
    flavor: str
    registered_model: str | None
    min_accuracy: float
    trained: bool = True  # logs an "epochs" param


NOTEBOOKS = [
    # 2 epochs on 2,000 images; chance is 0.1 for 10 classes
    Expected("01_tensorflow_fashion_mnist.ipynb", "fashion_images_prediction_tf", "keras-cnn",
             "tensorflow", "fashion_mnist_prediction_model", 0.5),
    Expected("02_pytorch_lightning_fashion_mnist.ipynb", "fashion_images_prediction_pytorch",
             "lightning-cnn", "pytorch", "fmnist-image-predictor", 0.5),
    # the pretrained model on 300 labelled sentences
    Expected("03_transformers_sentiment.ipynb", "sentiment_analysis_transformers",
             "sentiment-pipeline", "transformers", None, 0.75, trained=False),
]  # fmt: skip


def _runs(client: MlflowClient, expected: Expected) -> list:
    """The notebook's runs, newest first."""
    found = client.get_experiment_by_name(expected.experiment)
    if found is None:
        return []
    return client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.run_name = '{expected.run_name}'",
        order_by=["attributes.start_time DESC"],
    )


def _servers_alive() -> list[psutil.Process]:
    """``mlflow models serve`` processes on this test session's store (not those of other test
    sessions on a shared machine), orphaned ones included."""
    alive = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "mlflow" in cmdline and "models serve" in cmdline:
            try:
                store = proc.environ().get("MLFLOW_TRACKING_URI")
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                store = None
            if store in (None, os.environ.get("MLFLOW_TRACKING_URI")):
                alive.append(proc)
    return alive


def printed(executed: Path) -> str:
    """Everything the executed notebook printed on stdout."""
    notebook = nbformat.read(executed, as_version=4)
    return "".join(
        output.get("text", "")
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.get("name") == "stdout"
    )  # fmt: skip


def expected_aliases(accuracies: list[float]) -> dict[str, int]:
    """The promotion rule, replayed over versions 1..n: a version becomes champion when it is
    the first or beats the champion's accuracy (a tie keeps the champion); else challenger."""
    aliases: dict[str, int] = {}
    for version, accuracy in enumerate(accuracies, start=1):
        if "champion" not in aliases or accuracy > accuracies[aliases["champion"] - 1]:
            aliases["champion"] = version
        else:
            aliases["challenger"] = version
    return aliases


def test_expected_aliases_replays_the_rule():
    assert expected_aliases([0.8]) == {"champion": 1}
    assert expected_aliases([0.8, 0.8]) == {"champion": 1, "challenger": 2}
    assert expected_aliases([0.8, 0.9, 0.85]) == {"champion": 2, "challenger": 3}
    assert expected_aliases([0.8, 0.7, 0.9]) == {"champion": 3, "challenger": 2}


def _skip_without_sentiment_model(name: str) -> None:
    if name.startswith("03_"):
        ok, why = sentiment.model_availability()
        if not ok:
            pytest.skip(why)


@pytest.mark.parametrize("expected", NOTEBOOKS, ids=[e.notebook for e in NOTEBOOKS])
def test_notebook_runs_twice_on_one_store(expected: Expected, tmp_path: Path, execute_notebook):
    _skip_without_sentiment_model(expected.notebook)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    if not _runs(client, expected):  # run alone, without nbmake's first run
        run_notebook(project_root() / "notebooks" / expected.notebook, tmp_path)
    executed = execute_notebook(expected.notebook)

    runs = _runs(client, expected)
    assert len(runs) >= 2
    for run in runs[:2]:
        assert run.info.status == "FINISHED"
        if expected.trained:
            assert run.data.params["epochs"] == os.environ["DLTRACK_EPOCHS"]
        assert run.data.metrics["accuracy_score"] > expected.min_accuracy
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "confusion_matrix.png" in artifacts
        models = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            output_format="list",
        )
        assert len(models) == 1, f"one logged model per run, got {[m.name for m in models]}"
        info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
        assert expected.flavor in info.flavors
    output = printed(executed)
    assert not _servers_alive()  # the `with` block stopped the server
    if expected.registered_model is None:
        labels = [
            line.split()[2] for line in output.splitlines() if line.startswith("served model:")
        ]
        assert labels == list(sentiment.COURSE_SENTENCES.values())
        return

    served = [line for line in output.splitlines() if line.startswith("served model:")]
    assert len(served) == 1
    served_class, actual = (part.split(": ")[1] for part in served[0].split(" | "))
    assert served_class == actual  # the test image the notebook sends is an easy one
    assert "-> 200" in output and "-> 400 " in output  # the good request, then the wrong shape

    name = expected.registered_model
    versions = sorted(
        client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)
    )
    assert len(versions) >= 2
    accuracies = []
    for version in versions:
        run = client.get_run(version.run_id)
        accuracies.append(run.data.metrics["accuracy_score"])
        mlmodel = yaml.safe_load(
            Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}/MLmodel",
                                                     dst_path=str(tmp_path / str(version.version)))).read_text()
        )  # fmt: skip
        assert expected.flavor in mlmodel["flavors"]
        tag = client.get_model_version(name, version.version).tags["promotion"]
        assert tag.split(":")[0] in ("champion", "challenger")
    aliases = {alias: int(client.get_model_version_by_alias(name, alias).version)
               for alias in ("champion", "challenger") if tracking.version_by_alias(name, alias)}  # fmt: skip
    assert aliases == expected_aliases(accuracies)
    newest = versions[-1]
    assert newest.run_id == runs[0].info.run_id
    assert f"version {newest.version} -> @" in output


def test_azure_notebook_runs_again_and_both_servers_agree(execute_notebook):
    """01b deploys notebook 01's champion: run again on the same store (after nbmake's run, or
    after notebook 01 here), the local Azure server and the MLflow server give the same class."""
    mlflow.set_tracking_uri(tracking.tracking_uri())
    if tracking.version_by_alias("fashion_mnist_prediction_model", "champion") is None:
        execute_notebook("01_tensorflow_fashion_mnist.ipynb")
    output = printed(execute_notebook("01b_azure_ml_deployment.ipynb"))
    (line,) = [line for line in output.splitlines() if line.startswith("Azure inference server:")]
    azure_class, mlflow_class, difference = (part.split(": ")[1] for part in line.split(" | "))
    assert azure_class == mlflow_class and float(difference) == 0.0
    assert "workspace: none configured" in output and "name: fmnist-" in output


SERVING_NOTEBOOK = "04_serving_at_speed.ipynb"


def test_serving_notebook_runs_twice_and_measures_every_way(tmp_path, execute_notebook):
    """04 serves the champions of 01 and 02 (run here first if no champion exists), logs the fast
    models and the MLflow floor, measures every way and refuses bad input; twice on one store."""
    mlflow.set_tracking_uri(tracking.tracking_uri())
    for expected in NOTEBOOKS[:2]:
        if tracking.version_by_alias(expected.registered_model, "champion") is None:
            execute_notebook(expected.notebook)
    client = MlflowClient()

    def runs() -> list:
        found = client.get_experiment_by_name("serving_at_speed")
        return [] if found is None else client.search_runs(
            [found.experiment_id], filter_string="attributes.run_name = 'serving-at-speed'",
            order_by=["attributes.start_time DESC"])  # fmt: skip

    if not runs():  # run alone, without nbmake's first run
        run_notebook(project_root() / "notebooks" / SERVING_NOTEBOOK, tmp_path)
    output = printed(execute_notebook(SERVING_NOTEBOOK))
    assert len(runs()) >= 2
    for run in runs()[:2]:
        assert run.info.status == "FINISHED"
        ratios = {k: v for k, v in run.data.metrics.items() if k.startswith("ratio_")}
        assert len(ratios) == 5 and all(0 < v < 1000 for v in ratios.values()), ratios
        diffs = {k: v for k, v in run.data.metrics.items() if k.startswith("max_abs_diff_")}
        assert len(diffs) == 4 and all(v <= 1e-6 for v in diffs.values()), diffs
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"latency.png", "latency.json"} <= artifacts
        models = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            output_format="list",
        )
        assert sorted(m.name for m in models) == ["keras-fast", "mlflow-floor", "torch-fast"]
    assert "JSON -> 200 | Parquet -> 200 | same predictions: True" in output
    assert len(re.findall(r"^ratio +\d+\.\d+ \(target", output, re.M)) == 5
    assert "float64 Parquet body -> keras flavor: 200" in output
    assert (
        "float64 Parquet body -> keras fast: 400 expected a batch of shape (n, 28, 28, 1)" in output
    )
    assert "NaN pixel -> keras fast: 400 expected a batch" in output
    assert "unknown params -> lightning fast: 400 expected no params" in output
    assert not _servers_alive()


#: stderr a learner cannot act on, which the notebooks must not show (issue: outputs a learner
#: can act on). Each entry: what it is, and a pattern of the lines.
KNOWN_NOISE = {
    "TensorFlow's CUDA probing": r"Could not find cuda drivers|failed call to cuInit",
    "absl's pre-initialisation banner": r"All log messages before absl::InitializeLog",
    "TensorFlow's oneDNN and CPU notices": r"oneDNN custom operations are on|binary is optimized",
    "tqdm without Jupyter widgets": r"IProgress not found",
    "a progress bar printed tick by tick": r"\d+%\|",
    "MLflow's SHAP evaluator, which cannot explain images or text": r"Skip logging model explainab",
    "Lightning's advertising tip": r"Tip: For seamless cloud logging|litlogger",
    "Lightning's own use of PyTorch's deprecated LeafSpec": r"LeafSpec\)` is deprecated",
    "PyTorch's pt2 weights notice": r"No complete tensor found in the group",
}


def noise_lines(executed: Path) -> list[str]:
    """The stderr lines of an executed notebook that match :data:`KNOWN_NOISE`."""
    notebook = nbformat.read(executed, as_version=4)
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("name") != "stderr":
                continue
            for line in output["text"].splitlines():
                found += [f"{kind}: {line[:120]}" for kind, pattern in KNOWN_NOISE.items()
                          if re.search(pattern, line)]  # fmt: skip
    return found


def test_noise_check_finds_the_lines_it_names(tmp_path):
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import tensorflow")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=(
        "I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
        "Downloading artifacts:  40%|####      | 4/10\nall good\n"
        "INFO: 💡 Tip: For seamless cloud logging and experiment tracking, try installing\n"
        "FutureWarning: `isinstance(treespec, LeafSpec)` is deprecated, use ...\n"
        "UserWarning: No complete tensor found in the group! Returning the first one.\n"
        "INFO: GPU available: False, used: False\n"))]  # fmt: skip
    notebook.cells.append(cell)
    nbformat.write(notebook, tmp_path / "noisy.ipynb")
    assert [line.split(":")[0] for line in noise_lines(tmp_path / "noisy.ipynb")] == [
        "TensorFlow's CUDA probing", "a progress bar printed tick by tick",
        "Lightning's advertising tip", "Lightning's own use of PyTorch's deprecated LeafSpec",
        "PyTorch's pt2 weights notice",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [e.notebook for e in NOTEBOOKS]
    + ["01b_azure_ml_deployment.ipynb", SERVING_NOTEBOOK, "05_training_beyond_one_machine.ipynb"],
)
def test_executed_notebooks_show_no_known_noise(name, execute_notebook):
    _skip_without_sentiment_model(name)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    if name.startswith(("01b", "04")):  # they serve the champions of 01 (and 02)
        for expected in NOTEBOOKS[: 2 if name.startswith("04") else 1]:
            if tracking.version_by_alias(expected.registered_model, "champion") is None:
                execute_notebook(expected.notebook)
    assert noise_lines(execute_notebook(name)) == []


def test_serving_notebook_puts_the_validating_model_in_front(execute_notebook):
    """04 keeps both models' answers to bad input in its run, and registers each fast model as
    `<champion's name>-serving`, tagged with the champion it validates, @champion when its
    served predictions are the flavor champion's."""
    mlflow.set_tracking_uri(tracking.tracking_uri())
    for expected in NOTEBOOKS[:2]:
        if tracking.version_by_alias(expected.registered_model, "champion") is None:
            execute_notebook(expected.notebook)
    execute_notebook(SERVING_NOTEBOOK)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("serving_at_speed")
    (run,) = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                max_results=1)  # fmt: skip
    answers = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/malformed_answers.json")
    assert answers == {
        "float64 Parquet body -> keras flavor": 200, "float64 Parquet body -> keras fast": 400,
        "NaN pixel -> keras flavor": 200, "NaN pixel -> keras fast": 400,
        "unknown params -> lightning fast": 400,
    }  # fmt: skip
    for expected in NOTEBOOKS[:2]:
        champion = client.get_model_version_by_alias(expected.registered_model, "champion")
        front = client.get_model_version_by_alias(f"{expected.registered_model}-serving", "champion")
        assert front.tags["validates"] == f"{expected.registered_model}/{champion.version}"
        assert front.tags["promotion"].startswith("champion: max abs diff")
        flavors = mlflow.models.get_model_info(f"models:/{front.name}@champion").flavors
        assert list(flavors) == ["python_function"]
    validating = mlflow.pyfunc.load_model("models:/fashion_mnist_prediction_model-serving@champion")
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 0, 0, 0] = np.nan
    with pytest.raises(mlflow.exceptions.MlflowException, match="NaN or infinite"):
        validating.predict(image)


DDP_NOTEBOOK = "05_training_beyond_one_machine.ipynb"


# azure-ai-ml 1.35 builds its YAML schemas with deprecated marshmallow API: third-party noise
@pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")
def test_ddp_notebook_logs_one_run_per_training_and_registers_the_best_checkpoint(
    tmp_path, execute_notebook
):
    """05 trains with torchrun (2 processes) once per execution, twice on one store: one run per
    training (as many runs as registered versions), one value per epoch, system metrics of both
    ranks, a checkpoint per epoch, the registered version the checkpoint with the best logged
    val_acc, the promotion gate replayed; its rank-0 demo leaves a run per process."""
    from azure.ai.ml import load_job

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()

    def runs(experiment: str) -> list:
        found = client.get_experiment_by_name(experiment)
        return [] if found is None else client.search_runs([found.experiment_id])

    if not runs("fashion_images_prediction_ddp"):  # run alone, without nbmake's first run
        run_notebook(project_root() / "notebooks" / DDP_NOTEBOOK, tmp_path)
    execute_notebook(DDP_NOTEBOOK)
    name = "fmnist-image-predictor-ddp"
    versions = sorted(
        client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)
    )
    assert len(runs("fashion_images_prediction_ddp")) == len(versions) >= 2
    epochs = int(os.environ["DLTRACK_EPOCHS"])
    accuracies = []
    for version in versions:
        run = client.get_run(version.run_id)
        assert run.info.run_name == "ddp-cnn" and run.info.status == "FINISHED"
        assert run.data.params["world_size"] == "2"
        for key in ("train_loss", "val_loss", "val_acc"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(epochs)), f"{key} at steps {steps}"
        nodes = {key.split("/")[1] for key in run.data.metrics if key.startswith("system/")}
        assert nodes == {"rank-0", "rank-1"}
        checkpoints = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            output_format="list",
        )
        val_acc = {
            model.model_id: {m.step: m.value for m in model.metrics if m.key == "val_acc"}
            for model in checkpoints
        }
        assert sorted(step for by_step in val_acc.values() for step in by_step) == list(
            range(epochs)
        )
        registered = version.source.removeprefix("models:/")
        best = max(value for by_step in val_acc.values() for value in by_step.values())
        assert list(val_acc[registered].values()) == [best]
        accuracies.append(run.data.metrics["checkpoint_test_acc"])
        assert client.get_model_version(name, version.version).tags["promotion"]
    aliases = {alias: int(client.get_model_version_by_alias(name, alias).version)
               for alias in ("champion", "challenger") if tracking.version_by_alias(name, alias)}  # fmt: skip
    assert aliases == expected_aliases(accuracies)
    assert len(runs("fashion_images_prediction_ddp-every-rank-logs")) == 2 * len(versions)
    job = load_job(project_root() / "azure-specs" / "ddp-job.yml")
    assert job.resources.instance_count == 2 and job.distribution.process_count_per_instance == 2
