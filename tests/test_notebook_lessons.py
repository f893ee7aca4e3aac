"""What the notebooks teach, read from their committed source: the library calls of the lesson
are in the cells, every dltrack helper call says on its line what it adds, one parameters cell,
the project kernel, and no outputs or test-only cells in git."""

from __future__ import annotations

import re

import nbformat
import pytest

from dltrack.config import project_root

NOTEBOOKS = project_root() / "notebooks"

TAUGHT = {
    "01_tensorflow_fashion_mnist.ipynb": [
        "keras.datasets.fashion_mnist.load_data()", "mlflow.set_tracking_uri(",
        "mlflow.set_experiment(", "mlflow.start_run(", "mlflow.tensorflow.autolog(",
        "mlflow.log_params(", "mlflow.log_image(", "mlflow.log_figure(", "infer_signature(",
        "mlflow.tensorflow.log_model(", "signature=signature", "input_example=input_example",
        "mlflow.pyfunc.load_model(model_info.model_uri)", "mlflow.models.evaluate(",
        ".get_metric_history(", "mlflow.end_run()", "mlflow.register_model(",
        ".set_registered_model_alias(", '"challenger"', 'models:/{REGISTERED_MODEL_NAME}@champion',
        "requests.post(", '{"inputs":',
    ],
    "01b_azure_ml_deployment.ipynb": [
        "MLClient(DefaultAzureCredential()", "MLClient.from_config(", "Model(",
        "type=AssetTypes.MLFLOW_MODEL", "ManagedOnlineEndpoint(", 'auth_mode="key"',
        "ManagedOnlineDeployment(", "ml_client.models.create_or_update(",
        "ml_client.online_endpoints.begin_create_or_update(",
        "ml_client.online_deployments.begin_create_or_update(", "endpoint.traffic =",
        "ml_client.online_endpoints.invoke(", "ml_client.online_endpoints.begin_delete(",
        ".get_model_version_by_alias(", "mlflow.artifacts.download_artifacts(", '{"input_data":',
    ],
    "02_pytorch_lightning_fashion_mnist.ipynb": [
        "datasets.FashionMNIST(", "download=True", "make_grid(", "L.seed_everything(",
        "mlflow.set_tracking_uri(", "mlflow.set_experiment(",
        'with mlflow.start_run(run_name="lightning-cnn") as run:', "mlflow.pytorch.autolog(",
        "trainer.fit(", "trainer.test(", "TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))",
        "mlflow.pytorch.log_model(", "signature=signature", "input_example=input_example",
        "mlflow.pyfunc.load_model(model_info.model_uri)", "mlflow.models.evaluate(",
        "mlflow.log_figure(", ".get_metric_history(", "mlflow.register_model(",
        ".set_registered_model_alias(", '"challenger"', 'models:/{REGISTERED_MODEL_NAME}@champion',
        "requests.post(", "test_imgs[4].unsqueeze(0)",
    ],
    "03_transformers_sentiment.ipynb": [
        'pipeline("sentiment-analysis"', "mlflow.set_tracking_uri(", "mlflow.set_experiment(",
        "with mlflow.start_run(", "mlflow.transformers.log_model(", "input_example=",
        "mlflow.pyfunc.load_model(model_info.model_uri)", "mlflow.models.evaluate(",
        "@mlflow.trace", "mlflow.get_trace(", "requests.post(",
    ],
    "04_serving_at_speed.ipynb": [
        "import torch", "import triton", "mlflow.set_tracking_uri(", "mlflow.tensorflow.load_model(",
        "mlflow.pytorch.load_model(", "mlflow.models.get_model_info(", '@champion"',
        "mlflow.set_experiment(", "mlflow.start_run(", "mlflow.log_params(", ".to_parquet(",
        "pd.read_parquet(", 'json={"inputs":', "requests.post(",
        '"Content-Type": "application/vnd.apache.parquet"', "requests.Session()",
        "tf.function(", ".get_concrete_function()", "torch.inference_mode()", "json.loads(",
        "mlflow.log_figure(", "mlflow.log_metrics(", "mlflow.log_table(", "raise_for_status()",
    ],
    "06_hyperparameter_sweeps.ipynb": [
        "mlflow.set_tracking_uri(", "mlflow.set_experiment(", "optuna.create_study(",
        "load_if_exists=True", "optuna.delete_study(", 'with mlflow.start_run(run_name="sweep")',
        "subprocess.Popen(", '"-m", "dltrack.sweeps"', "mlflow.search_runs(",
        "tags.mlflow.parentRunId", "study.get_trials(", "study.best_trial", "mlflow.log_params(",
        "mlflow.log_metric(", "plot_optimization_history(", "plot_intermediate_values(",
        "mlflow.log_figure(", "mlflow.artifacts.download_artifacts(", "load_state_dict(",
        "mlflow.pytorch.log_model(", "signature=signature", "mlflow.register_model(",
        ".set_registered_model_alias(", '"challenger"', 'models:/{REGISTERED_MODEL_NAME}@champion',
    ],
}  # fmt: skip

#: A call into dltrack: module.function( or a dltrack class.
HELPER_CALL = re.compile(
    r"\b(?:data|evaluation|tracking|serving|fast|azure|sentiment|keras_cnn|sweeps)\.[a-z_]+\(|"
    r"\b(?:FashionMNISTCNN|FashionMNISTDataModule)\("
)


def _code_cells(name: str) -> list:
    return [c for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells if c.cell_type == "code"]


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) >= sorted(TAUGHT)


@pytest.mark.parametrize("name", sorted(TAUGHT))
def test_the_taught_calls_are_in_the_cells(name):
    source = "\n".join(cell.source for cell in _code_cells(name))
    missing = [call for call in TAUGHT[name] if call not in source]
    assert not missing, f"{name} does not show {missing}"


@pytest.mark.parametrize("name", sorted(TAUGHT))
def test_each_helper_call_says_what_it_adds(name):
    bare = []
    for cell in _code_cells(name):
        if "parameters" in cell.metadata.get("tags", []):
            continue  # env_param and the store's default: the parameters cell explains itself
        for line in cell.source.splitlines():
            if HELPER_CALL.search(line.split("#")[0]) and "# dltrack:" not in line:
                bare.append(line.strip())
    assert not bare, f"{name}: helper calls without a '# dltrack: <what it adds>' comment: {bare}"


@pytest.mark.parametrize("name", sorted(TAUGHT))
def test_committed_clean_with_one_parameters_cell_and_the_project_kernel(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = _code_cells(name)
    assert all(not c.outputs and c.execution_count is None for c in cells)
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [1], "one parameters cell, right after the imports"
    assert notebook.metadata.kernelspec.name == "dltrack"
    source = "\n".join(c.source for c in cells)
    assert "rest_check" not in source and "set_tag(" not in source  # no cells for the tests
    assert "127.0.0.1:" not in source and "localhost" not in source  # no hard-coded ports
