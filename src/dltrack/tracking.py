"""MLflow tracking where MLflow itself falls short for a tutorial: one store for every process,
experiments that survive re-runs, and registry lookups that may find nothing.

The store. MLflow 3 no longer accepts a plain ``./mlruns`` folder as tracking store; the
default here is SQLite, ``sqlite:///<project>/mlruns/mlflow.db``, with artifacts in
``<project>/mlruns/artifacts``. ``MLFLOW_TRACKING_URI`` overrides it. The notebooks (working
directory ``notebooks/``), ``make ui``, ``make demo`` and the serving helper all resolve the
store through :func:`tracking_uri`, so they see the same runs and models.

The notebooks call MLflow themselves (``mlflow.set_tracking_uri``, ``mlflow.set_experiment``,
``mlflow.start_run``, ``mlflow.register_model``...); this module only adds what those calls do
not do.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from dltrack.config import project_root

__all__ = [
    "artifact_root",
    "prepare_experiment",
    "tracking_uri",
    "version_by_alias",
]


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store
    (``sqlite:///<project>/mlruns/mlflow.db``, an absolute path)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI: ``sqlite:////abs/mlflow.db`` is absolute,
    ``sqlite:///mlflow.db`` relative to the current directory (as SQLAlchemy reads it)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0])).resolve()


def artifact_root(uri: str | None = None) -> str | None:
    """Artifact location for new experiments: ``<folder of the .db>/artifacts`` as a
    ``file://`` URI for a SQLite store; ``None`` (the tracking server decides) for any other.

    Without it MLflow puts a SQLite store's artifacts in ``./mlruns`` of whatever the current
    directory is (``notebooks/mlruns`` when Jupyter runs a notebook).
    """
    path = _sqlite_path(uri or mlflow.get_tracking_uri())
    if path is None:
        return None
    return (path.parent / "artifacts").resolve().as_uri()


def prepare_experiment(name: str, tags: dict[str, str] | None = None) -> str:
    """Make ``mlflow.set_experiment(name)`` safe on every re-run of a notebook; return the id.

    What ``mlflow.set_experiment`` alone does not do:

    - a run left active by an earlier, failed cell is ended with status FAILED, so the next
      ``mlflow.start_run()`` starts a fresh run instead of raising "Run ... is already active";
    - an experiment deleted in the UI is restored (``set_experiment`` refuses a deleted name,
      and the name cannot be created again until it is purged);
    - a missing experiment is created with its artifacts beside a SQLite store (not in the
      current directory) and with ``tags``. Existing experiments keep their settings.

    Raises:
        ValueError: ``name`` is empty.
    """
    if not name or not name.strip():
        raise ValueError("experiment name must be a non-empty string")
    if mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")
    db = _sqlite_path(mlflow.get_tracking_uri())
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_root(), tags=tags)
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def version_by_alias(name: str, alias: str) -> ModelVersion | None:
    """The version of registered model ``name`` that ``alias`` points at, or ``None`` when the
    model or the alias does not exist yet (``MlflowClient.get_model_version_by_alias`` raises
    then).

    Raises:
        mlflow.exceptions.MlflowException: any other registry error (e.g. no connection).
    """
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
