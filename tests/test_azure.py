"""dltrack.azure_deploy without an Azure account: specifications, payloads, secrets, and the request /
response contract against Azure's own inference server on 127.0.0.1."""

import json
import os
import subprocess

import numpy as np
import pytest

from dltrack import azure_deploy as azure
from dltrack import serving, tracking

keras = pytest.importorskip("keras")
pytest.importorskip("azure.ai.ml")

SECRET_SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"


def test_no_workspace_configured(monkeypatch, tmp_path):
    for name in azure.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert azure.workspace_config(tmp_path / "config.json") is None


def test_workspace_from_env_hides_subscription(monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SECRET_SUBSCRIPTION)
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg-secret")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "ws")
    config = azure.workspace_config()
    assert config.subscription_id == SECRET_SUBSCRIPTION and config.workspace_name == "ws"
    assert SECRET_SUBSCRIPTION not in repr(config) and "rg-secret" not in repr(config)


def test_partial_env_is_an_error(monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SECRET_SUBSCRIPTION)
    monkeypatch.delenv("AZURE_RESOURCE_GROUP", raising=False)
    monkeypatch.delenv("AZUREML_WORKSPACE_NAME", raising=False)
    with pytest.raises(ValueError, match="missing: AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME"):
        azure.workspace_config()


def test_workspace_from_config_json(monkeypatch, tmp_path):
    for name in azure.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {"subscription_id": SECRET_SUBSCRIPTION, "resource_group": "rg", "workspace_name": "ws"}
        )
    )
    assert azure.workspace_config(path).resource_group == "rg"
    path.write_text(json.dumps({"subscription_id": SECRET_SUBSCRIPTION}))
    with pytest.raises(ValueError, match="has no 'resource_group'"):
        azure.workspace_config(path)


def test_secrets_and_specs_are_git_ignored():
    paths = ["config.json", ".env", "azure-specs/endpoint.yml", ".venv-azureml/bin/python"]
    out = subprocess.run(
        ["git", "check-ignore", *paths], capture_output=True, text=True, check=False
    )
    assert out.stdout.split() == paths


def test_endpoint_name_is_stable_and_valid():
    name = azure.endpoint_name("fmnist")
    assert name == azure.endpoint_name("fmnist") and name.startswith("fmnist-")
    assert 3 <= len(name) <= 32 and all(c.isalnum() or c == "-" for c in name)


def test_missing_registered_model_says_run_notebook_01(mlflow_store, tmp_path):
    with pytest.raises(LookupError, match="run notebook 01 first"):
        azure.download_registered_model("no-such-model", "champion", tmp_path)


def test_payload_and_decoding():
    batch = np.zeros((2, 28, 28, 1), np.float32)
    payload = azure.input_data_payload(batch)
    assert list(payload) == ["input_data"] and np.asarray(payload["input_data"]).shape == (
        2,
        28,
        28,
        1,
    )
    assert azure.decode_predictions("[[0.5, 0.5]]").shape == (1, 2)
    assert azure.decode_predictions({"predictions": [[1, 0]]}).dtype == np.float32


@pytest.fixture(scope="module")
def registered_cnn(logged_cnn):
    """The shared course CNN registered as fmnist-azure-test@champion; (model, version)."""
    model, model_uri = logged_cnn
    return model, tracking.register_model(model_uri, "fmnist-azure-test", alias="champion")


def test_specs_name_model_alias_instance_and_auth(registered_cnn, tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SECRET_SUBSCRIPTION)
    _, version = registered_cnn
    local, found = azure.download_registered_model(
        "fmnist-azure-test", "champion", tmp_path / "model"
    )
    assert (local / "MLmodel").is_file() and found.version == version.version
    model = azure.model_spec(local, "fmnist-azure-test", "champion", found)
    endpoint = azure.endpoint_spec("fmnist-test")
    deployment = azure.deployment_spec(
        "fmnist-test", model, instance_type="Standard_F2s_v2", instance_count=2
    )
    paths = azure.write_specs(endpoint, deployment, folder=tmp_path / "specs")
    assert [p.name for p in paths] == ["endpoint.yml", "deployment.yml"]
    endpoint_yml, deployment_yml = (p.read_text() for p in paths)
    assert "auth_mode: key" in endpoint_yml and "name: fmnist-test" in endpoint_yml
    assert (
        "instance_type: Standard_F2s_v2" in deployment_yml and "instance_count: 2" in deployment_yml
    )
    assert "type: mlflow_model" in deployment_yml and "name: fmnist-azure-test" in deployment_yml
    assert "mlflow_alias: champion" in deployment_yml
    assert f"mlflow_version: '{version.version}'" in deployment_yml
    assert SECRET_SUBSCRIPTION not in endpoint_yml + deployment_yml
    with pytest.raises(ValueError, match="instance_count must be >= 1"):
        azure.deployment_spec("fmnist-test", model, instance_count=0)


@pytest.mark.serving
def test_local_inference_server_matches_mlflow_server(registered_cnn, tmp_path):
    if azure.inference_server_python() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must create .venv-azureml (make setup-azure-server)")
        pytest.skip("no .venv-azureml: run `make setup-azure-server`")
    model, _ = registered_cnn
    local, _ = azure.download_registered_model("fmnist-azure-test", "champion", tmp_path / "model")
    from dltrack import data

    images = data.as_image_batch(np.random.default_rng(3).random((3, 28, 28, 1)), (28, 28, 1))
    with serving.ModelServer("models:/fmnist-azure-test@champion") as mlflow_server:
        from_mlflow = serving.predict(mlflow_server.url, images)
    with azure.LocalInferenceServer(local) as server:
        assert server.url.startswith("http://127.0.0.1:")
        from_azure = server.score(images)
        with pytest.raises(serving.ServingError) as caught:  # MLflow's key is not Azure's
            import requests

            reply = requests.post(
                f"{server.url}/score", json={"inputs": images.tolist()}, timeout=30
            )
            raise serving.ServingError(reply.status_code, reply.text)
        assert caught.value.status == 400 and "input_data" in caught.value.message
    assert from_azure.shape == (3, 10)
    np.testing.assert_allclose(from_azure, from_mlflow, atol=1e-5)
    np.testing.assert_allclose(from_azure, model.predict(images, verbose=0), atol=1e-5)
    assert (from_azure.argmax(1) == from_mlflow.argmax(1)).all()
