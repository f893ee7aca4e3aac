import mlflow
import pytest
from mlflow import MlflowClient

from dltrack import tracking


def test_default_store_is_sqlite_in_project(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri()
    assert uri.startswith("sqlite:////") and uri.endswith("/mlruns/mlflow.db")
    assert tracking.artifact_root(uri).endswith("/mlruns/artifacts")
    assert tracking.artifact_root(uri).startswith("file:///")


def test_env_overrides_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
    assert tracking.artifact_root("http://127.0.0.1:5000") is None


def test_relative_sqlite_uri_is_taken_from_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert tracking.artifact_root("sqlite:///mlflow.db") == (tmp_path / "artifacts").as_uri()
    assert tracking.artifact_root("sqlite:////abs/dir/mlflow.db") == "file:///abs/dir/artifacts"


def test_prepare_creates_once_with_artifacts_beside_the_store(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = tracking.prepare_experiment("exp-a", tags={"team": "a"})
    assert tracking.prepare_experiment("exp-a", tags={"team": "b"}) == first
    experiment = mlflow.set_experiment("exp-a")
    assert experiment.experiment_id == first
    assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()
    assert experiment.tags["team"] == "a"  # an existing experiment keeps its settings


def test_set_experiment_alone_would_put_artifacts_in_the_current_directory(
    mlflow_store, tmp_path, monkeypatch
):
    """Why prepare_experiment exists: MLflow's own default for a SQLite store."""
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert mlflow.set_experiment("exp-plain").artifact_location.startswith(str(elsewhere))


def test_prepare_restores_a_deleted_experiment(mlflow_store):
    experiment_id = tracking.prepare_experiment("exp-deleted")
    MlflowClient().delete_experiment(experiment_id)
    with pytest.raises(mlflow.exceptions.MlflowException, match="deleted"):
        mlflow.set_experiment("exp-deleted")
    assert tracking.prepare_experiment("exp-deleted") == experiment_id
    assert mlflow.set_experiment("exp-deleted").lifecycle_stage == "active"


def test_prepare_ends_a_run_left_active_by_a_failed_cell(mlflow_store):
    tracking.prepare_experiment("exp-active")
    mlflow.set_experiment("exp-active")
    left_open = mlflow.start_run()
    with pytest.raises(Exception, match="already active"):
        mlflow.start_run()
    tracking.prepare_experiment("exp-active")
    assert mlflow.active_run() is None
    assert MlflowClient().get_run(left_open.info.run_id).info.status == "FAILED"
    with mlflow.start_run() as fresh:
        assert fresh.info.run_id != left_open.info.run_id


def test_prepare_rejects_an_empty_name(mlflow_store):
    with pytest.raises(ValueError, match="non-empty"):
        tracking.prepare_experiment("  ")


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_version_by_alias_is_none_until_the_alias_exists(experiment):
    experiment("exp-registry")
    assert tracking.version_by_alias("echo", "champion") is None  # no registered model yet
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo())
    version = mlflow.register_model(info.model_uri, "echo")
    assert tracking.version_by_alias("echo", "champion") is None  # a model, no alias
    MlflowClient().set_registered_model_alias("echo", "champion", version.version)
    found = tracking.version_by_alias("echo", "champion")
    assert found.version == version.version and found.aliases == ["champion"]


def test_version_by_alias_raises_other_registry_errors(mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # nothing listens; mlflow_store resets it
    with pytest.raises(mlflow.exceptions.MlflowException, match="127.0.0.1:9"):
        tracking.version_by_alias("echo", "champion")


def test_registry_url_quotes_the_model_name():
    url = tracking.registry_url("my model/v2?x#y", base="http://127.0.0.1:5000")
    assert url.startswith("http://127.0.0.1:5000/#/models/my%20model%2Fv2%3Fx%23y?")


def test_run_url_opens_a_tab_of_the_run_in_the_training_view():
    base = "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert tracking.run_url("3", "abc", base="http://127.0.0.1:5000") == (
        f"{base}?workflowType=machine_learning"
    )
    assert tracking.run_url("3", "abc", base="http://127.0.0.1:5000", tab="system-metrics") == (
        f"{base}/system-metrics?workflowType=machine_learning"
    )
