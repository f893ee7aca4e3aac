import time

import mlflow

from dltrack import demo, tracking


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_report_lists_the_notebook_runs_since_start(mlflow_store):
    since = int(time.time() * 1000)
    tracking.get_or_create_experiment("demo-exp")
    with mlflow.start_run():  # not a notebook's main run: no rest_check tag
        mlflow.log_metric("test_accuracy", 0.1)
    with mlflow.start_run() as run:
        mlflow.log_metric("test_accuracy", 0.8765)
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo())
        mlflow.set_tag("rest_check", "HTTP 200: Ankle boot")
    tracking.register_model(info.model_uri, "demo-model", alias="champion")
    lines = demo.report(since)
    assert lines == [
        "experiment      demo-exp",
        f"  run id        {run.info.run_id} (FINISHED)",
        "  test accuracy 0.8765",
        "  registered    demo-model version 1 aliases ['champion']",
        "  REST check    HTTP 200: Ankle boot",
    ]
    assert demo.report(int(time.time() * 1000) + 60_000) == []
