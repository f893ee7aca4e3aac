"""Azure ML's inference server on 127.0.0.1: the request/response contract of an Azure ML
no-code MLflow deployment, tested without an Azure subscription.

Azure runs MLflow deployments on ``azureml-inference-server-http``. :class:`LocalInferenceServer`
starts that server (from its own virtual environment, ``.venv-azureml``: it pins OpenTelemetry
and pydantic below what MLflow 3 installs) with :mod:`dltrack.azure.score`, which answers
``POST /score`` with ``{"input_data": ...}`` as Azure does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dltrack.config import project_root
from dltrack.serving.process import BackgroundServer

__all__ = ["LocalInferenceServer", "inference_server_python"]


def inference_server_python() -> Path | None:
    """The interpreter of the separate venv holding ``azureml-inference-server-http``
    (``make setup-azure-server``), or ``None`` if it was not created.

    It is a separate venv because that package pins OpenTelemetry and pydantic below what
    MLflow 3.17 and azure-ai-ml install (see docs/azure.md)."""
    python = (
        Path(os.environ.get("DLTRACK_AZUREML_SERVER_VENV", project_root() / ".venv-azureml"))
        / "bin"
        / "python"
    )
    return python if python.is_file() else None


#: The WSGI app ``azmlinfsrv`` hands to gunicorn (azureml_inference_server_http/amlserver_linux.py).
WSGI_APP = "azureml_inference_server_http.server.entry:app"


class LocalInferenceServer(BackgroundServer):
    """Azure ML's inference server (``azmlinfsrv``) on 127.0.0.1, serving an MLflow model folder
    with :mod:`dltrack.azure.score`, the no-code MLflow request/response contract.

    ``azmlinfsrv`` always binds 0.0.0.0 (its ``DEFAULT_HOST``); on Linux it configures itself
    from environment variables and runs its WSGI app under gunicorn. This runs the same app
    under the same gunicorn, with the same variables, bound to ``host``. ``POST <url>/score`` takes ``{"input_data": <batch as nested lists>}``
    and answers the predictions as a JSON array.

    Args:
        model_dir: a local MLflow model folder (holding ``MLmodel``).
        **kwargs: ``port``, ``host``, ``timeout``, ``extra_env`` of
            :class:`dltrack.serving.BackgroundServer`.

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
            str(self.python), "-m", "gunicorn",
            "-b", f"{self.host}:{self.port}", "-w", "1", "--timeout", "300",
            "--access-logfile", "-", WSGI_APP,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["PATH"] = os.pathsep.join([str(self.python.parent), env["PATH"]])
        env.pop("PYTHONPATH", None)
        env.update(  # what `azmlinfsrv --entry_script ... --model_dir ... --port ...` sets
            AZUREML_ENTRY_SCRIPT=str(Path(__file__).with_name("score.py")),
            AZUREML_MODEL_DIR=str(self.model_dir.resolve()),
            AML_APP_ROOT=str(self.model_dir.resolve()),
            SERVER_PORT=str(self.port),
            HEALTH_PORT=str(self.port),
            WORKER_COUNT="1",
            AML_APP_INSIGHTS_ENABLED="false",
        )
        return env
