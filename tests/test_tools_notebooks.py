"""tools/notebooks.py: the report `make demo` prints after running the notebooks."""

import time

import mlflow
from mlflow import MlflowClient

from notebooks import report  # tools/notebooks.py (pythonpath in pyproject.toml)


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_report_lists_the_runs_started_since(experiment):
    since = int(time.time() * 1000)
    experiment("demo-exp")
    with mlflow.start_run(run_name="keras-cnn") as run:
        mlflow.log_metric("accuracy_score", 0.8765)
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo())
        with mlflow.start_run(nested=True):  # a child run is not a notebook's run
            mlflow.log_metric("accuracy_score", 0.1)
    version = mlflow.register_model(info.model_uri, "demo-model")
    client = MlflowClient()
    client.set_registered_model_alias("demo-model", "champion", version.version)
    client.set_model_version_tag("demo-model", version.version, "promotion", "champion: first")
    assert report(since) == [
        "experiment      demo-exp",
        f"  run           keras-cnn {run.info.run_id} (FINISHED)",
        "  test accuracy 0.8765",
        f"  logged model  {info.model_uri} (model)",
        "  registered    demo-model version 1, aliases ['champion']: champion: first",
    ]
    assert report(int(time.time() * 1000) + 60_000) == []
