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
from urllib.parse import quote, unquote

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from dltrack.config import project_root

__all__ = [
    "MODEL_TRAINING_TAGS",
    "artifact_root",
    "experiment_url",
    "prepare_experiment",
    "promote",
    "registry_url",
    "run_url",
    "tracking_uri",
    "ui_links",
    "ui_url",
    "version_by_alias",
]

#: The experiment tag MLflow 3 uses to record what an experiment is for; "custom_model_development"
#: marks model training (the other kinds are GenAI ones). MLflow 3.17's UI still picks its landing
#: view in the browser, so the links below also carry ``?workflowType=machine_learning``.
MODEL_TRAINING_TAGS = {"mlflow.experimentKind": "custom_model_development"}

#: Where the MLflow UI answers for a local store (``make ui``); a tracking server serves its own.
UI_URL_ENV_VAR = "DLTRACK_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
TRAINING_VIEW = "workflowType=machine_learning"


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
      current directory), tagged as model training (:data:`MODEL_TRAINING_TAGS`) and with
      ``tags``. Existing experiments keep their settings.

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
        return client.create_experiment(
            name, artifact_location=artifact_root(), tags={**MODEL_TRAINING_TAGS, **(tags or {})}
        )
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


def promote(
    name: str, version: str | int, accuracy: float, test_x: np.ndarray, test_y: np.ndarray
) -> tuple[str, str]:
    """Notebook 01's promotion gate, for the notebooks after it: ``version`` of the registered
    model ``name`` takes the alias ``champion`` only if ``accuracy`` beats the current
    champion's on the same test images (the first version always does, a tie keeps the
    champion); otherwise it takes ``challenger``. The decision and its reason are kept on the
    version as the tag ``promotion``.

    Args:
        name: the registered model.
        version: the version just registered (``mlflow.register_model(...).version``).
        accuracy: that version's accuracy on ``test_x``, a fraction in [0, 1].
        test_x: the test images, in the layout the champion takes, e.g. (n, 1, 28, 28) float32.
        test_y: their labels, (n,) integers; the champion's class is the ``argmax`` of its
            (n, classes) output.

    Returns:
        ``(alias, reason)``, e.g. ``("challenger", "test accuracy 0.8120 vs 0.8240 of champion
        v3 on 500 images")``.

    Raises:
        ValueError: ``accuracy`` outside [0, 1], or ``test_x`` and ``test_y`` of different
            lengths.
        mlflow.exceptions.MlflowException: the version does not exist, or the registry fails.
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    if len(test_x) != len(test_y):
        raise ValueError(f"{len(test_x)} test images but {len(test_y)} labels")
    champion = version_by_alias(name, "champion")
    if champion is None:
        alias, reason = "champion", "the first version"
    else:  # score the champion on the same test images
        champion_model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        champion_accuracy = float((champion_model.predict(test_x).argmax(axis=1) == test_y).mean())
        alias = "champion" if accuracy > champion_accuracy else "challenger"
        reason = (f"test accuracy {accuracy:.4f} vs {champion_accuracy:.4f}"
                  f" of champion v{champion.version} on {len(test_y)} images")  # fmt: skip
    client = MlflowClient()
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), "promotion", f"{alias}: {reason}")
    return alias, reason


def ui_url(uri: str | None = None) -> str:
    """Base URL of the MLflow UI for the store ``uri`` (default: the current tracking URI).

    A tracking server (``http(s)://``) serves its own UI; for a local store it is
    ``$DLTRACK_UI_URL``, else ``http://127.0.0.1:5000`` (what ``make ui`` starts).
    """
    uri = uri or mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return os.environ.get(UI_URL_ENV_VAR, DEFAULT_UI_URL).rstrip("/")


def experiment_url(experiment_id: str, base: str | None = None) -> str:
    """The experiment's training runs in the UI's *Model training* view.

    MLflow 3.17's UI opens an experiment in its GenAI view unless the browser was switched
    before (a choice it keeps in the browser's local storage); ``workflowType=machine_learning``
    in the link opens the runs whatever the browser remembers.
    """
    return f"{base or ui_url()}/#/experiments/{experiment_id}?{TRAINING_VIEW}"


def run_url(
    experiment_id: str, run_id: str, base: str | None = None, tab: str | None = None
) -> str:
    """A run's page in the UI, in the *Model training* view; ``tab`` opens one of its tabs, e.g.
    ``"system-metrics"``, ``"model-metrics"`` or ``"artifacts"``."""
    page = f"{base or ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}/{tab}?{TRAINING_VIEW}" if tab else f"{page}?{TRAINING_VIEW}"


def registry_url(name: str | None = None, base: str | None = None) -> str:
    """The model registry (or one registered model's page) in the UI; the name is URL-quoted
    (``"my model/v2"`` -> ``models/my%20model%2Fv2``)."""
    path = f"models/{quote(name, safe='')}" if name else "models"
    return f"{base or ui_url()}/#/{path}?{TRAINING_VIEW}"


def ui_links(base: str | None = None) -> list[str]:
    """One line per active experiment of the current store (its training runs), then the model
    registry: what ``make ui`` prints before it starts the UI.

    Raises:
        mlflow.exceptions.MlflowException: the store cannot be read.
    """
    lines = [
        f"experiment {experiment.name!r}: {experiment_url(experiment.experiment_id, base)}"
        for experiment in MlflowClient().search_experiments(order_by=["name ASC"])
        if experiment.name != "Default" or MlflowClient().search_runs([experiment.experiment_id])
    ]
    lines.append(f"model registry: {registry_url(base=base)}")
    return lines
