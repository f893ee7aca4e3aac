import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from dltrack import evaluation, tracking
from dltrack.plots import image_grid


def test_to_class_ids():
    assert evaluation.to_class_ids(np.array([[0.1, 0.9], [0.8, 0.2]])).tolist() == [1, 0]
    assert evaluation.to_class_ids(np.array([2, 0])).tolist() == [2, 0]
    with pytest.raises(ValueError, match="expected"):
        evaluation.to_class_ids(np.array([0.5, 0.2]))


def test_per_class_accuracy_values():
    acc = evaluation.per_class_accuracy(
        np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b", "c"]
    )
    assert acc["a"] == 0.5 and acc["b"] == 1.0 and np.isnan(acc["c"])


def test_image_grid_layouts():
    for shape in [(5, 28, 28), (5, 28, 28, 1), (5, 1, 28, 28)]:
        fig = image_grid(np.zeros(shape), [str(i) for i in range(5)], columns=4)
        assert len(fig.axes) == 8
    with pytest.raises(ValueError, match="grayscale"):
        image_grid(np.zeros((2, 3, 28, 28)))


def test_log_evaluation_logs_metric_and_artifacts(mlflow_store, tmp_path):
    tracking.get_or_create_experiment("exp-eval")
    y_true = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    y_pred = y_true.copy()
    y_pred[:3] = 9  # three wrong
    images = np.zeros((10, 28, 28), np.uint8)
    with mlflow.start_run() as run:
        metrics = evaluation.log_evaluation(y_true, np.eye(10)[y_pred], images)
    assert metrics == {"test_accuracy": pytest.approx(0.7)}
    client = MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics["test_accuracy"] == pytest.approx(0.7)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert names == {
        "evaluation/confusion_matrix.png",
        "evaluation/per_class_accuracy.json",
        "evaluation/misclassified.png",
    }
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="evaluation/per_class_accuracy.json",
        dst_path=str(tmp_path),
    )
    per_class = json.loads(Path(path).read_text())
    assert per_class["T-shirt/top"] == 0.0 and per_class["Ankle boot"] == 1.0


def test_log_evaluation_length_mismatch(mlflow_store):
    tracking.get_or_create_experiment("exp-eval-errors")
    with mlflow.start_run(), pytest.raises(ValueError, match="differ in length"):
        evaluation.log_evaluation(np.arange(3), np.arange(2), np.zeros((3, 28, 28)))
