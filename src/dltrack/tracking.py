"""MLflow tracking for the notebooks: one store, experiments that survive re-runs, sample
images, run summaries and the model registry.

The store. MLflow 3 no longer accepts a plain ``./mlruns`` folder as tracking store; the
default here is SQLite, ``sqlite:///<project>/mlruns/mlflow.db``, with artifacts in
``<project>/mlruns/artifacts``. ``MLFLOW_TRACKING_URI`` overrides it. The notebooks (working
directory ``notebooks/``), ``make ui``, the ``mlflow`` CLI and :mod:`dltrack.serving` all resolve
the store through :func:`tracking_uri`, so they see the same runs and models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage
from mlflow.entities.model_registry import ModelVersion

from dltrack.config import project_root
from dltrack.data import CLASS_NAMES

__all__ = [
    "RunSummary",
    "artifact_name",
    "artifact_root",
    "get_or_create_experiment",
    "log_class_samples",
    "register_model",
    "setup_tracking",
    "summarize_run",
    "tracking_uri",
]


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store."""
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
    """Artifact location for new experiments: ``<folder of the .db>/artifacts`` for a SQLite
    store, as a ``file://`` URI; ``None`` (the server decides) for any other store.

    Without it MLflow would put artifacts in ``./mlruns`` of whatever the current directory is.
    """
    path = _sqlite_path(uri or tracking_uri())
    if path is None:
        return None
    return (path.parent / "artifacts").resolve().as_uri()


def setup_tracking(uri: str | None = None) -> str:
    """Point MLflow at the project's store (or ``uri``) and return the URI.

    Also exports ``MLFLOW_TRACKING_URI`` so the ``mlflow`` CLI and servers started from this
    process use the same store. A SQLite file's folder is created if missing.
    """
    uri = uri or tracking_uri()
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def get_or_create_experiment(name: str, tags: dict[str, str] | None = None) -> str:
    """Make ``name`` the active experiment, creating it if needed, and return its id.

    Safe on every re-run of a notebook: an existing experiment is reused; one that was deleted
    (in the UI or with ``mlflow experiments delete``) is restored, because a deleted name cannot
    be created again until it is purged; a run left active by an earlier, failed cell is ended
    (status FAILED), so the next ``mlflow.start_run()`` starts a fresh run.
    """
    if not name or not name.strip():
        raise ValueError("experiment name must be a non-empty string")
    active = mlflow.active_run()
    if active is not None:
        mlflow.end_run(status="FAILED")
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(
            name, artifact_location=artifact_root(mlflow.get_tracking_uri()), tags=tags
        )
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == LifecycleStage.DELETED:
            client.restore_experiment(experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def artifact_name(text: str) -> str:
    """A file-name-safe form of ``text``: "T-shirt/top" -> "t-shirt_top".

    MLflow treats "/" in an artifact path as a folder, so class names are cleaned first.
    """
    cleaned = re.sub(r"[^0-9A-Za-z._-]+", "_", text.strip()).strip("_").lower()
    if not cleaned:
        raise ValueError(f"cannot make an artifact name from {text!r}")
    return cleaned


def log_class_samples(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    per_class: int = 1,
    size: int = 200,
    artifact_dir: str = "sample_images",
) -> list[str]:
    """Log the first ``per_class`` images of each class as PNG artifacts of the active run.

    Each image is upscaled to ``size`` x ``size`` pixels (nearest neighbour, 200x200 like the
    course) and saved as ``<artifact_dir>/<label>_<class>_<k>.png``, e.g.
    ``sample_images/0_t-shirt_top_0.png`` (no folder from the "/" in "T-shirt/top").

    Args:
        images: uint8 (0..255) or float (0..1) array, shape (n, 28, 28) or (n, 28, 28, 1).
        labels: integer labels, shape (n,).
        class_names: name of each label.
        per_class: images per class.
        size: side of the saved PNG, in pixels.
        artifact_dir: artifact folder in the run.

    Returns:
        The artifact paths written, in label order.

    Raises:
        ValueError: shapes do not match, or no run is active.
    """
    from PIL import Image

    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"expected images (n, h, w) and labels (n,), got {images.shape} and {labels.shape}"
        )
    if mlflow.active_run() is None:
        raise ValueError("no active MLflow run: call inside `with mlflow.start_run():`")
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    written = []
    for label, name in enumerate(class_names):
        for k, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            image = Image.fromarray(images[index], mode="L").resize(
                (size, size), Image.Resampling.NEAREST
            )
            path = f"{artifact_dir}/{label}_{artifact_name(name)}_{k}.png"
            mlflow.log_image(image, artifact_file=path)
            written.append(path)
    return written


@dataclass
class RunSummary:
    """What a run recorded, like the course's ``print_auto_logged_info``."""

    run_id: str
    experiment_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[str]
    model_uris: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"run_id: {self.run_id} (experiment {self.experiment_id}, {self.status})",
            f"params: {self.params}",
            "metrics: " + str({k: round(v, 4) for k, v in sorted(self.metrics.items())}),
            f"tags: {self.tags}",
            f"artifacts: {self.artifacts}",
            f"models: {self.model_uris}",
        ]
        return "\n".join(lines)


def _walk_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_walk_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def summarize_run(run_id: str | None = None) -> RunSummary:
    """Summarize ``run_id`` (default: the last run of this process).

    User tags only (``mlflow.*`` system tags are left out); artifacts listed recursively; model
    URIs are the ``models:/<model_id>`` of every model logged from the run (MLflow 3 stores
    models as their own entities, not as run artifacts).

    Raises:
        ValueError: no ``run_id`` given and no run was started in this process.
    """
    if run_id is None:
        last = mlflow.last_active_run()
        if last is None:
            raise ValueError("no run_id given and no run was started in this process")
        run_id = last.info.run_id
    client = MlflowClient()
    run = client.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    return RunSummary(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        artifacts=_walk_artifacts(client, run_id),
        model_uris=[f"models:/{m.model_id}" for m in models],
    )


def register_model(
    model_uri: str, name: str, alias: str = "champion", tags: dict[str, str] | None = None
) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it.

    MLflow 3 deprecates registry stages (Staging/Production) in favour of aliases: a mutable,
    named pointer to one version, used as ``models:/<name>@<alias>``. Re-running makes a new
    version and moves the alias to it.

    Returns:
        The new :class:`~mlflow.entities.model_registry.ModelVersion`.
    """
    version = mlflow.register_model(model_uri, name, tags=tags)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version
