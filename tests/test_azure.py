"""Notebook 01b without an Azure account: endpoint names, secrets kept out of git, the request /
response contract against Azure's own inference server on 127.0.0.1, and the notebook's Azure
cells run against a mock of ``MLClient`` (the only place a mock stands in: the real thing bills
per hour)."""

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import create_autospec

import mlflow
import nbformat
import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from dltrack import azure, serving
from dltrack.config import project_root

keras = pytest.importorskip("keras")
pytest.importorskip("azure.ai.ml")

NOTEBOOK = project_root() / "notebooks" / "01b_azure_ml_deployment.ipynb"


def test_endpoint_name_is_stable_unique_and_valid():
    name = azure.endpoint_name("fmnist")
    assert name == azure.endpoint_name("fmnist") and name.startswith("fmnist-")
    assert 3 <= len(name) <= 32 and all(c.isalnum() or c == "-" for c in name)
    assert len(azure.endpoint_name("a" * 40)) <= 32
    with pytest.raises(ValueError, match="start with a letter"):
        azure.endpoint_name("1fmnist")


def test_secrets_and_specs_are_git_ignored():
    paths = ["config.json", ".env", "azure-specs/endpoint.yml", ".venv-azureml/bin/python"]
    out = subprocess.run(
        ["git", "check-ignore", *paths], capture_output=True, text=True, check=False,
        cwd=project_root(),
    )  # fmt: skip
    assert out.stdout.split() == paths


@pytest.fixture(scope="module")
def champion_dir(logged_cnn, tmp_path_factory):
    """The shared course CNN registered as fmnist-azure-test@champion and downloaded, as 01b
    does; returns (keras model, local model folder)."""
    model, model_uri = logged_cnn
    version = mlflow.register_model(model_uri, "fmnist-azure-test")
    MlflowClient().set_registered_model_alias("fmnist-azure-test", "champion", version.version)
    local = mlflow.artifacts.download_artifacts(
        f"models:/fmnist-azure-test/{version.version}", dst_path=str(tmp_path_factory.mktemp("m"))
    )
    return model, Path(local)


@pytest.mark.serving
def test_local_inference_server_answers_like_mlflow_server(champion_dir):
    if azure.inference_server_python() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must create .venv-azureml (make setup-azure-server)")
        pytest.skip("no .venv-azureml: run `make setup-azure-server`")
    model, local = champion_dir
    images = np.random.default_rng(3).random((3, 28, 28, 1), dtype=np.float32)
    with serving.ModelServer("models:/fmnist-azure-test@champion") as mlflow_server:
        reply = requests.post(
            f"{mlflow_server.url}/invocations", json={"inputs": images.tolist()}, timeout=60
        )
        from_mlflow = np.asarray(reply.json()["predictions"], dtype=np.float32)
    with azure.LocalInferenceServer(local) as server:
        assert server.url.startswith("http://127.0.0.1:")
        reply = requests.post(
            f"{server.url}/score", json={"input_data": images.tolist()}, timeout=60
        )
        assert reply.status_code == 200, reply.text
        from_azure = np.asarray(reply.json(), dtype=np.float32)  # a bare array, as Azure answers
        wrong_key = requests.post(
            f"{server.url}/score", json={"inputs": images.tolist()}, timeout=60
        )
    assert from_azure.shape == (3, 10)
    np.testing.assert_allclose(from_azure, from_mlflow, atol=1e-6)
    np.testing.assert_allclose(from_azure, model.predict(images, verbose=0), atol=1e-5)
    assert wrong_key.status_code == 400
    assert wrong_key.json() == {"error": 'expected a JSON object {"input_data": ...}'}


def _code_cells(tag: str | None = None, containing: str | None = None) -> list[str]:
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    chosen = [
        c.source for c in cells
        if (tag is None or tag in c.metadata.get("tags", []))
        and (containing is None or containing in c.source)
    ]  # fmt: skip
    return ["\n".join(line for line in s.splitlines() if not line.startswith("%")) for s in chosen]


def _fake_ml_client():
    """An ``MLClient`` whose operations are autospecced: a misspelled method or argument fails."""
    from azure.ai.ml import MLClient
    from azure.ai.ml.operations import (
        ModelOperations,
        OnlineDeploymentOperations,
        OnlineEndpointOperations,
    )

    client = create_autospec(MLClient, instance=True)
    client.models = create_autospec(ModelOperations, instance=True)
    client.online_endpoints = create_autospec(OnlineEndpointOperations, instance=True)
    client.online_deployments = create_autospec(OnlineDeploymentOperations, instance=True)
    client.models.create_or_update.return_value = SimpleNamespace(
        id="azureml:fashion_mnist_prediction_model:7"
    )
    client.online_endpoints.invoke.return_value = json.dumps([[0.9] + [0.01] * 9])
    return client


def test_azure_cells_call_the_sdk_as_documented(champion_dir, tmp_path, monkeypatch):
    """Runs notebook 01b's entity cell for real and its `azure` cells against the fake client."""
    monkeypatch.setenv("DLTRACK_AZURE_INSTANCE_TYPE", "Standard_F2s_v2")
    _, local = champion_dir
    namespace: dict = {}
    for source in _code_cells(containing="import ") + _code_cells(tag="parameters"):
        exec(source, namespace)
    namespace.update(
        model_dir=local, champion=SimpleNamespace(version="7"), specs=tmp_path,
        version_uri="models:/fashion_mnist_prediction_model/7",
        request_body={"input_data": np.zeros((1, 28, 28, 1)).tolist()}, y_test=np.array([0]),
    )  # fmt: skip
    (entities,) = _code_cells(containing="ManagedOnlineDeployment(")
    exec(entities, namespace)
    client = namespace["ml_client"] = _fake_ml_client()
    azure_cells = _code_cells(tag="azure")
    assert len(azure_cells) == 4
    for source in azure_cells:
        exec(source, namespace)

    (model,) = client.models.create_or_update.call_args.args
    assert model.type == "mlflow_model" and Path(model.path) == local
    endpoint = client.online_endpoints.begin_create_or_update.call_args_list[0].args[0]
    assert endpoint.name == namespace["ENDPOINT_NAME"] and endpoint.auth_mode == "key"
    (deployment,) = client.online_deployments.begin_create_or_update.call_args.args
    assert (
        deployment.model == "azureml:fashion_mnist_prediction_model:7"
    )  # the registered model, not the folder
    assert deployment.instance_type == "Standard_F2s_v2" and deployment.instance_count == 1
    routed = client.online_endpoints.begin_create_or_update.call_args_list[1].args[0]
    assert routed.traffic == {"blue": 100}
    invoke = client.online_endpoints.invoke.call_args.kwargs
    assert invoke["endpoint_name"] == namespace["ENDPOINT_NAME"]
    assert list(json.loads(Path(invoke["request_file"]).read_text())) == ["input_data"]
    client.online_endpoints.begin_delete.assert_called_once_with(name=namespace["ENDPOINT_NAME"])


def test_azure_cells_are_skipped_by_the_tests_and_do_nothing_without_a_workspace():
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    azure_cells = [c for c in cells if "azure" in c.metadata.get("tags", [])]
    assert azure_cells and all("skip-execution" in c.metadata["tags"] for c in azure_cells)
    assert all(c.source.startswith("if ml_client:") for c in azure_cells)
    untagged = "\n".join(c.source for c in cells if c not in azure_cells)
    for call in ("begin_create_or_update", ".invoke(", "begin_delete", "create_or_update("):
        assert call not in untagged


class _AMLResponse:
    """Stands in for ``azureml.contrib.services.aml_response.AMLResponse`` (Azure's package)."""

    def __init__(self, body, status, json_str=False):
        self.body, self.status = body, status


class _TwoInputs(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["a"].sum(axis=1) - model_input["b"].sum(axis=1)


@pytest.fixture(scope="module")
def score(tmp_path_factory):
    """Azure's scoring script loaded with a model of two named float32 tensors, 'a' and 'b'."""
    import importlib.util
    import sys
    import types

    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    folder = tmp_path_factory.mktemp("two-inputs") / "model"
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2), "a"),
                       TensorSpec(np.dtype(np.float32), (-1, 2), "b")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
    )  # fmt: skip
    mlflow.pyfunc.save_model(folder, python_model=_TwoInputs(), signature=signature)
    fake = types.ModuleType("azureml.contrib.services.aml_response")
    fake.AMLResponse = _AMLResponse
    names = ["azureml", "azureml.contrib", "azureml.contrib.services", fake.__name__]
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update({name: types.ModuleType(name) for name in names[:-1]} | {fake.__name__: fake})
    try:
        path = project_root() / "src" / "dltrack" / "azure" / "score.py"
        spec = importlib.util.spec_from_file_location("azure_score_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, value in saved.items():
            sys.modules.pop(name) if value is None else sys.modules.__setitem__(name, value)
    module.model = mlflow.pyfunc.load_model(str(folder))
    return module


def test_named_inputs_are_matched_by_name_not_by_position(score):
    body = {"input_data": {"b": [[1, 1]], "a": [[5, 5]]}}  # the signature's order is a, b
    assert score.run(json.dumps(body)) == [8.0]


@pytest.mark.parametrize(
    ("inputs", "missing", "extra"),
    [({"a": [[1, 2]], "b": [[1, 2]], "c": [[0, 0]]}, [], ["c"]),
     ({"a": [[1, 2]]}, ["b"], []),
     ({"a": [[1, 2]], "x": [[1, 2]]}, ["b"], ["x"])],
)  # fmt: skip
def test_a_missing_or_extra_named_input_is_a_400_that_names_it(score, inputs, missing, extra):
    reply = score.run(json.dumps({"input_data": inputs}))
    assert isinstance(reply, _AMLResponse) and reply.status == 400
    assert f"missing {missing}, not in the signature {extra}" in reply.body["error"]
    assert "expected the named inputs ['a', 'b']" in reply.body["error"]
