"""Deploy the registered MLflow model to Azure Machine Learning with the current SDK (v2).

The course used ``azureml-core`` (SDK v1: ``Workspace.create``, ``Model.register``, an ACI web
service). SDK v1 reached end of support on 2026-06-30 and ACI web services are retired; today's
path is ``azure-ai-ml`` (SDK v2) with a *managed online endpoint* (a stable HTTPS URL with key
or token auth) and a *no-code MLflow deployment* behind it (Azure builds the image and the
scoring code from the MLflow model; you choose the VM size and count).

Without an Azure workspace (CI, most learners) nothing here needs the network: the
specifications are built and written as YAML under ``azure-specs/`` (git-ignored), and the
request/response contract is tested on 127.0.0.1 with Azure's own inference server
(:class:`LocalInferenceServer`).

Credentials: the workspace comes from environment variables or an Azure ML ``config.json``;
authentication is ``azure.identity.DefaultAzureCredential`` (``az login``, a managed identity or
``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET``). None of them is printed,
logged to MLflow or written into the specifications.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dltrack.config import project_root
from dltrack.serving import BackgroundServer

__all__ = [
    "WorkspaceConfig",
    "workspace_config",
    "ml_client",
    "endpoint_name",
    "download_registered_model",
    "model_spec",
    "endpoint_spec",
    "deployment_spec",
    "write_specs",
    "deploy",
    "invoke",
    "delete_endpoint",
    "input_data_payload",
    "decode_predictions",
    "LocalInferenceServer",
    "inference_server_python",
]

ENV_VARS = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")


@dataclass(frozen=True)
class WorkspaceConfig:
    """Where the Azure ML workspace is. ``repr`` hides the subscription id."""

    subscription_id: str
    resource_group: str
    workspace_name: str

    def __repr__(self) -> str:
        return f"WorkspaceConfig(workspace_name={self.workspace_name!r}, resource_group=<hidden>)"


def workspace_config(config_file: str | os.PathLike[str] | None = None) -> WorkspaceConfig | None:
    """The workspace to deploy to, or ``None`` when none is configured.

    Order: ``AZURE_SUBSCRIPTION_ID``, ``AZURE_RESOURCE_GROUP`` and ``AZUREML_WORKSPACE_NAME``
    (all three); else ``config_file``, default ``<project>/config.json`` (the file the Azure ML
    studio's "Download config.json" gives, keys ``subscription_id``, ``resource_group``,
    ``workspace_name``; git-ignored).

    Raises:
        ValueError: only some of the three variables are set, or config.json lacks a key.
    """
    values = [os.environ.get(name, "") for name in ENV_VARS]
    if all(values):
        return WorkspaceConfig(*values)
    if any(values):
        missing = [n for n, v in zip(ENV_VARS, values, strict=True) if not v]
        raise ValueError(f"set all of {', '.join(ENV_VARS)}; missing: {', '.join(missing)}")
    path = Path(config_file) if config_file else project_root() / "config.json"
    if not path.is_file():
        return None
    content = json.loads(path.read_text())
    try:
        return WorkspaceConfig(
            content["subscription_id"], content["resource_group"], content["workspace_name"]
        )
    except KeyError as err:
        raise ValueError(
            f"{path} has no {err.args[0]!r}; download it again from the studio"
        ) from None


def ml_client(config: WorkspaceConfig):
    """An ``azure.ai.ml.MLClient`` for the workspace, authenticated with
    ``DefaultAzureCredential``."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(
        DefaultAzureCredential(),
        config.subscription_id,
        config.resource_group,
        config.workspace_name,
    )


def endpoint_name(prefix: str = "fmnist") -> str:
    """A unique, stable endpoint name: ``<prefix>-<8 hex>`` from the user and project folder.

    Endpoint names are unique per Azure region, so a fixed name collides between learners; this
    one stays the same on every re-run for one person (3-32 characters, letters, digits, '-').
    """
    digest = hashlib.sha256(f"{getpass.getuser()}:{project_root()}".encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"[:32]


def download_registered_model(name: str, alias: str, dst: str | os.PathLike[str] | None = None):
    """Download version ``name@alias`` from the MLflow registry into ``dst`` (default
    ``build/azure/<name>``, replaced if present).

    Returns:
        (local folder holding the MLmodel file, the ``ModelVersion``).

    Raises:
        LookupError: no such registered model or alias; the message says to run notebook 01.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise LookupError(
            f"no registered model {name!r} with alias {alias!r} in {mlflow.get_tracking_uri()}: "
            "run notebook 01 first (it registers the model and sets the alias)"
        ) from None
    target = Path(dst) if dst else project_root() / "build" / "azure" / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    # the version just looked up, not the alias again: the alias may move meanwhile
    local = mlflow.artifacts.download_artifacts(
        f"models:/{name}/{version.version}", dst_path=str(target)
    )
    return Path(local), version


def model_spec(local_dir: str | os.PathLike[str], name: str, alias: str, version: Any):
    """The Azure ML model (type ``mlflow_model``) for an MLflow registry version; its tags
    record where it came from."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    return Model(
        path=str(local_dir),
        type=AssetTypes.MLFLOW_MODEL,
        name=name,
        description=f"MLflow registered model {name}@{alias} (version {version.version})",
        tags={
            "mlflow_registered_model": name,
            "mlflow_alias": alias,
            "mlflow_version": str(version.version),
        },
    )


def endpoint_spec(name: str, auth_mode: str = "key"):
    """A managed online endpoint with key authentication (``aml_token`` and ``aad_token`` are
    the other modes)."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(
        name=name,
        auth_mode=auth_mode,
        description="dltrack Fashion-MNIST classifier",
        tags={"project": "dltrack"},
    )


def deployment_spec(
    endpoint: str,
    model,
    instance_type: str = "Standard_DS3_v2",
    instance_count: int = 1,
    name: str = "blue",
):
    """A no-code MLflow deployment: no scoring script or environment, Azure derives both from
    the MLflow model. ``instance_type`` is the VM size (billed per instance-hour while the
    deployment exists)."""
    from azure.ai.ml.entities import ManagedOnlineDeployment

    if instance_count < 1:
        raise ValueError(f"instance_count must be >= 1, got {instance_count}")
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        model=model,
        instance_type=instance_type,
        instance_count=instance_count,
    )


def write_specs(*entities, folder: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write each azure-ai-ml entity as ``<folder>/<kind>.yml`` (default ``azure-specs/``,
    git-ignored), the same YAML ``az ml ... create --file`` takes. Returns the paths."""
    target = Path(folder) if folder else project_root() / "azure-specs"
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for entity in entities:
        kind = {"ManagedOnlineEndpoint": "endpoint", "ManagedOnlineDeployment": "deployment"}.get(
            type(entity).__name__, type(entity).__name__.lower()
        )
        path = target / f"{kind}.yml"
        # azure-ai-ml 1.35: Deployment.dump(dest) writes YAML to a stream, while
        # ManagedOnlineEndpoint.dump() returns the content and writes nothing to a stream.
        try:
            content = entity.dump()
        except TypeError:
            buffer = io.StringIO()
            entity.dump(buffer)
            content = yaml.safe_load(buffer.getvalue())
        content = json.loads(json.dumps(content, default=str))  # OrderedDict -> dict
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        paths.append(path)
    return paths


def deploy(client, model, endpoint, deployment, traffic: int = 100):
    """Register the model, create (or update) the endpoint and deployment, route ``traffic`` %
    to it. Takes about 10-15 minutes; billing starts when the deployment exists.

    Returns:
        The endpoint as Azure reports it (``scoring_uri`` is its URL).
    """
    registered = client.models.create_or_update(model)
    client.online_endpoints.begin_create_or_update(endpoint).result()
    deployment.model = registered.id
    client.online_deployments.begin_create_or_update(deployment).result()
    endpoint.traffic = {deployment.name: traffic}
    client.online_endpoints.begin_create_or_update(endpoint).result()
    return client.online_endpoints.get(endpoint.name)


def input_data_payload(batch: np.ndarray) -> dict:
    """The request body of an Azure ML MLflow deployment for a tensor input:
    ``{"input_data": batch}`` (not MLflow's ``inputs`` nor the old ``instances``)."""
    return {"input_data": np.asarray(batch).tolist()}


def decode_predictions(body: str | bytes | list | dict) -> np.ndarray:
    """Predictions from an Azure reply (a JSON array), or from MLflow's ``{"predictions": ...}``,
    as a float32 array."""
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    if isinstance(body, dict):
        body = body["predictions"]
    return np.asarray(body, dtype=np.float32)


def invoke(
    client, endpoint: str, batch: np.ndarray, request_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Send ``batch`` to the endpoint (key auth is handled by the SDK) and decode the reply."""
    folder = Path(request_dir) if request_dir else project_root() / "azure-specs"
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / "request.json"
    request.write_text(json.dumps(input_data_payload(batch)))
    return decode_predictions(
        client.online_endpoints.invoke(endpoint_name=endpoint, request_file=str(request))
    )


def delete_endpoint(client, endpoint: str) -> None:
    """Delete the endpoint and its deployments (stops the billing)."""
    client.online_endpoints.begin_delete(name=endpoint).result()


def inference_server_python() -> Path | None:
    """The interpreter of the separate venv holding ``azureml-inference-server-http``
    (``make setup-azure-server``), or ``None`` if it was not created.

    It is a separate venv because that package pins OpenTelemetry and pydantic below what
    MLflow 3.17 and azure-ai-ml install (see README)."""
    python = (
        Path(os.environ.get("DLTRACK_AZUREML_SERVER_VENV", project_root() / ".venv-azureml"))
        / "bin"
        / "python"
    )
    return python if python.is_file() else None


_LAUNCH = (
    "import sys; from azureml_inference_server_http import amlserver; "
    "amlserver.DEFAULT_HOST = sys.argv.pop(1); amlserver.run()"
)


class LocalInferenceServer(BackgroundServer):
    """Azure ML's inference server (``azmlinfsrv``) on 127.0.0.1, serving an MLflow model folder
    with :mod:`dltrack.azure_score`, the no-code MLflow request/response contract.

    ``azmlinfsrv`` always binds 0.0.0.0; this starts the same server with the bind address
    replaced by ``host``. ``POST <url>/score`` takes :func:`input_data_payload`.

    Raises:
        FileNotFoundError: the inference-server venv is missing (``make setup-azure-server``).
    """

    ready_path = "/"
    name = "azmlinfsrv"

    def __init__(self, model_dir: str | os.PathLike[str], **kwargs: Any) -> None:
        kwargs.setdefault("timeout", 240.0)
        super().__init__(**kwargs)
        self.model_dir = Path(model_dir)
        python = inference_server_python()
        if python is None:
            raise FileNotFoundError(
                "azureml-inference-server-http is not installed: run `make setup-azure-server` "
                "(it creates .venv-azureml)"
            )
        self.python = python

    def command(self) -> list[str]:  # noqa: D102
        return [
            str(self.python), "-c", _LAUNCH, self.host,
            "--entry_script", str(Path(__file__).with_name("azure_score.py")),
            "--model_dir", str(self.model_dir),
            "--port", str(self.port),
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["PATH"] = os.pathsep.join([str(self.python.parent), env["PATH"]])
        env.pop("PYTHONPATH", None)
        return env

    def score(self, batch: np.ndarray, timeout: float = 60.0) -> np.ndarray:
        """POST ``{"input_data": batch}`` to ``/score`` and decode the reply.

        Raises:
            dltrack.serving.ServingError: the server answered 4xx/5xx.
        """
        import requests

        from dltrack.serving import ServingError

        response = requests.post(
            f"{self.url}/score", json=input_data_payload(batch), timeout=timeout
        )
        if response.status_code >= 400:
            raise ServingError(response.status_code, response.text, response.text)
        return decode_predictions(response.content)
