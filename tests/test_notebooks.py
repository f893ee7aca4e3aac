"""The notebooks, end to end, twice against one tracking store (Restart & Run All, twice).

The executions are the session's (``tests/executions.py``: which store, which parameters;
``tests/test_executions.py`` reports their failures): this module only reads what both runs
recorded in the store and what the executed copies printed, and executes nothing itself.
Parameters come from the environment (``tests/conftest.py``: the test store, 2 epochs, the
shipped subset) and each execution's overrides; the counts asserted are read from the runs'
params.
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
from dltrack.models import sentiment
from executions import PLAN, SERVING, Execution

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


def setting(execution: Execution, variable: str) -> str:
    """The value of ``variable`` the execution ran with: its own override, else the session's."""
    return execution.overrides.get(variable, os.environ[variable])


@pytest.mark.parametrize("expected", NOTEBOOKS, ids=[e.notebook for e in NOTEBOOKS])
def test_notebook_runs_twice_on_one_store(expected: Expected, tmp_path: Path, notebooks):
    executions = [notebooks.execution(expected.notebook, round_) for round_ in (1, 2)]
    executed = executions[1].executed
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()

    runs = _runs(client, expected)  # newest first: the second execution's run, then the first's
    assert len(runs) == 2, [run.info.run_id for run in runs]
    for run, execution in zip(runs, reversed(executions), strict=True):
        assert run.info.status == "FINISHED"
        if expected.trained:
            assert run.data.params["epochs"] == setting(execution, "DLTRACK_EPOCHS")
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
    assert len(versions) == 2
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


def test_azure_notebook_runs_again_and_both_servers_agree(notebooks):
    """01b deploys notebook 01's champion: run again on the same store, the local Azure server
    and the MLflow server give the same class."""
    output = printed(notebooks.second("01b_azure_ml_deployment.ipynb"))
    (line,) = [line for line in output.splitlines() if line.startswith("Azure inference server:")]
    azure_class, mlflow_class, difference = (part.split(": ")[1] for part in line.split(" | "))
    assert azure_class == mlflow_class and float(difference) == 0.0
    assert "workspace: none configured" in output and "name: fmnist-" in output


#: Notebook 04's request counts: its param, the variable that sets it, the notebook's default.
REQUEST_COUNTS = {"n_small_requests": ("DLTRACK_N_SMALL_REQUESTS", "50"),
                  "n_large_requests": ("DLTRACK_N_LARGE_REQUESTS", "10")}  # fmt: skip


def test_serving_notebook_runs_twice_and_measures_every_way(notebooks):
    """04 serves the champions of 01 and 02, logs the fast models and the MLflow floor,
    measures every way and refuses bad input; twice on one store (the first time with fewer
    requests: the counts are read from each run's params)."""
    executions = [notebooks.execution(SERVING, round_) for round_ in (1, 2)]
    output = printed(executions[1].executed)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()

    def runs() -> list:
        found = client.get_experiment_by_name("serving_at_speed")
        return [] if found is None else client.search_runs(
            [found.experiment_id], filter_string="attributes.run_name = 'serving-at-speed'",
            order_by=["attributes.start_time DESC"])  # fmt: skip

    assert len(runs()) == 2
    for run, execution in zip(runs(), reversed(executions), strict=True):
        assert run.info.status == "FINISHED"
        for param, (variable, default) in REQUEST_COUNTS.items():
            count = execution.overrides.get(variable, os.environ.get(variable, default))
            assert run.data.params[param] == count
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


@pytest.mark.parametrize("round_", [1, 2], ids=["first", "second"])
@pytest.mark.parametrize("name", [notebook.name for notebook in PLAN])
def test_executed_notebooks_show_no_known_noise(name, round_, notebooks):
    assert noise_lines(notebooks.execution(name, round_).executed) == []


def test_serving_notebook_puts_the_validating_model_in_front(notebooks):
    """04 keeps both models' answers to bad input in its run, and registers each fast model as
    `<champion's name>-serving`, tagged with the champion it validates, @champion when its
    served predictions are the flavor champion's."""
    notebooks.second(SERVING)
    mlflow.set_tracking_uri(tracking.tracking_uri())
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


