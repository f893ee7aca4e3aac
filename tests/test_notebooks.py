"""The notebooks, end to end, twice against one tracking store (Restart & Run All, twice).

``make test`` first runs every notebook once with nbmake (``--nbmake notebooks``); this module
then runs each one again on the same store and checks what the two runs recorded. Run alone,
it executes each notebook twice itself. Parameters come from the environment
(``tests/conftest.py``: the test store, 2 epochs, the shipped subset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psutil
import pytest
from mlflow import MlflowClient

from dltrack import hf, tracking
from dltrack.config import project_root
from dltrack.demo import run_notebook

pytestmark = pytest.mark.notebook


@dataclass
class Expected:
    notebook: str
    experiment: str
    registered_model: str | None
    min_accuracy: float
    accuracy_metric: str = "test_accuracy"
    rest_check: str = "HTTP 200: "
    trained: bool = True  # logs an "epochs" param


NOTEBOOKS = [
    # 2 epochs on 2,000 images; chance is 0.1 for 10 classes
    Expected(
        "01_tensorflow_fashion_mnist.ipynb", "fashion_mnist_tensorflow", "fmnist-keras-cnn", 0.5
    ),
    Expected(
        "02_pytorch_lightning_fashion_mnist.ipynb",
        "fashion_mnist_lightning",
        "fmnist-image-predictor",
        0.5,
    ),
    # the pretrained model on 300 labelled sentences; the course's four sentences over REST
    Expected(
        "03_transformers_sentiment.ipynb",
        "sentiment_analysis_transformers",
        None,
        0.75,
        accuracy_metric="accuracy_score",
        rest_check="HTTP 200: POSITIVE, NEGATIVE, POSITIVE, NEGATIVE",
        trained=False,
    ),  # fmt: skip
]


def _main_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    return [r for r in runs if "rest_check" in r.data.tags]


def _servers_alive(model_name: str) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "models" in cmdline and "serve" in cmdline and model_name in cmdline:
            alive.append(proc)
    return alive


@pytest.mark.parametrize("expected", NOTEBOOKS, ids=[e.notebook for e in NOTEBOOKS])
def test_notebook_runs_twice_on_one_store(expected: Expected, tmp_path: Path):
    if expected.notebook.startswith("03_"):
        ok, why = hf.model_availability()
        if not ok:
            pytest.skip(why)
    tracking.setup_tracking()
    client = MlflowClient()
    before = len(_main_runs(client, expected.experiment))
    for _ in range(max(2 - before, 1)):
        run_notebook(project_root() / "notebooks" / expected.notebook, tmp_path)

    runs = _main_runs(client, expected.experiment)
    assert len(runs) >= 2
    epochs = os.environ["DLTRACK_EPOCHS"]
    for run in runs[:2]:
        assert run.info.status == "FINISHED"
        if expected.trained:
            assert run.data.params["epochs"] == epochs
        assert run.data.metrics[expected.accuracy_metric] > expected.min_accuracy
        assert run.data.tags["rest_check"].startswith(expected.rest_check)
        artifacts = tracking.summarize_run(run.info.run_id).artifacts
        assert any(a.endswith("confusion_matrix.png") for a in artifacts)
    assert not _servers_alive("models:/")
    if expected.registered_model is None:
        return

    versions = client.search_model_versions(f"name = '{expected.registered_model}'")
    assert len(versions) >= 2
    newest = max(int(v.version) for v in versions)
    champion = client.get_model_version_by_alias(expected.registered_model, "champion")
    assert int(champion.version) == newest
    assert champion.run_id == runs[0].info.run_id
    mlflow.set_tracking_uri(tracking.tracking_uri())
