import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from dltrack import tracking


def test_default_store_is_sqlite_in_project(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri()
    assert uri.startswith("sqlite:///") and uri.endswith("/mlruns/mlflow.db")
    assert tracking.artifact_root(uri).endswith("/mlruns/artifacts")
    assert tracking.artifact_root(uri).startswith("file:///")


def test_env_overrides_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
    assert tracking.artifact_root() is None


def test_get_or_create_reuses_and_keeps_artifacts_in_store(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = tracking.get_or_create_experiment("exp-a")
    second = tracking.get_or_create_experiment("exp-a")
    assert first == second
    location = MlflowClient().get_experiment(first).artifact_location
    assert location == (tmp_path / "artifacts").as_uri()


def test_get_or_create_restores_deleted(mlflow_store):
    experiment_id = tracking.get_or_create_experiment("exp-deleted")
    MlflowClient().delete_experiment(experiment_id)
    assert tracking.get_or_create_experiment("exp-deleted") == experiment_id
    assert MlflowClient().get_experiment(experiment_id).lifecycle_stage == "active"


def test_get_or_create_ends_a_run_left_active(mlflow_store):
    tracking.get_or_create_experiment("exp-active")
    left_open = mlflow.start_run()
    tracking.get_or_create_experiment("exp-active")
    assert mlflow.active_run() is None
    assert MlflowClient().get_run(left_open.info.run_id).info.status == "FAILED"
    with mlflow.start_run():  # and a new run starts normally
        pass


def test_get_or_create_rejects_empty_name(mlflow_store):
    with pytest.raises(ValueError, match="non-empty"):
        tracking.get_or_create_experiment("  ")


def test_artifact_name_has_no_folder():
    assert tracking.artifact_name("T-shirt/top") == "t-shirt_top"
    assert tracking.artifact_name("Ankle boot") == "ankle_boot"


def test_log_class_samples_pngs(mlflow_store, tmp_path):
    tracking.get_or_create_experiment("exp-samples")
    labels = np.repeat(np.arange(10), 3)
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    with mlflow.start_run() as run:
        paths = tracking.log_class_samples(images, labels, per_class=2)
    assert len(paths) == 20
    assert paths[0] == "sample_images/0_t-shirt_top_0.png"
    listed = [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "sample_images")]
    assert sorted(listed) == sorted(paths)  # no sub-folder from "T-shirt/top"
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=paths[0], dst_path=str(tmp_path)
    )
    with Image.open(local) as image:
        assert image.size == (200, 200)
        assert np.asarray(image)[0, 0] == images[0, 0, 0]


def test_log_class_samples_needs_a_run_and_matching_shapes(mlflow_store):
    tracking.get_or_create_experiment("exp-samples-errors")
    with pytest.raises(ValueError, match="no active MLflow run"):
        tracking.log_class_samples(np.zeros((10, 28, 28), np.uint8), np.arange(10))
    with mlflow.start_run(), pytest.raises(ValueError, match="expected images"):
        tracking.log_class_samples(np.zeros((10, 28, 28), np.uint8), np.arange(9))


def test_summarize_run_reports_what_was_logged(mlflow_store):
    tracking.get_or_create_experiment("exp-summary")
    with mlflow.start_run() as run:
        mlflow.log_params({"epochs": 3, "batch_size": 32})
        mlflow.log_metric("test_accuracy", 0.875)
        mlflow.set_tag("purpose", "test")
        mlflow.log_text("hello", "notes/hello.txt")
    summary = tracking.summarize_run(run.info.run_id)
    assert summary.params == {"epochs": "3", "batch_size": "32"}
    assert summary.metrics == {"test_accuracy": 0.875}
    assert summary.tags == {"purpose": "test"}
    assert summary.artifacts == ["notes/hello.txt"]
    assert summary.status == "FINISHED"
    assert "test_accuracy" in str(summary) and run.info.run_id in str(summary)


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_register_model_moves_alias(mlflow_store):
    tracking.get_or_create_experiment("exp-registry")
    versions = []
    for _ in range(2):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=_Echo())
        versions.append(tracking.register_model(info.model_uri, "echo", alias="champion"))
    assert [int(v.version) for v in versions] == [1, 2]
    assert str(MlflowClient().get_model_version_by_alias("echo", "champion").version) == "2"
    summary = tracking.summarize_run(versions[-1].run_id)
    assert summary.model_uris == [info.model_uri]


def test_relative_sqlite_uri_is_taken_from_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert tracking.artifact_root("sqlite:///mlflow.db") == (tmp_path / "artifacts").as_uri()
    assert tracking.artifact_root("sqlite:////abs/dir/mlflow.db") == "file:///abs/dir/artifacts"
