"""``tracking.promote``, the promotion gate notebooks 02, 05 and 06 call after 01 taught it: on a
real registry, the first version becomes champion, a better one takes the alias, a tie or a
worse one becomes challenger, and each decision is kept on the version as the tag ``promotion``."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from dltrack import tracking

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1])
IMAGES = np.zeros((len(LABELS), 1, 2, 2), np.float32)


class Answers(mlflow.pyfunc.PythonModel):
    """Scores (n, 3): one-hot rows of fixed answers, whatever the images."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[self.answers[: len(model_input)]]


def _register(name: str, correct: int) -> tuple[str, float]:
    """A version whose first ``correct`` answers are right; returns (version, its accuracy)."""
    answers = [int(label) if i < correct else (int(label) + 1) % 3 for i, label in enumerate(LABELS)]
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Answers(answers))
    version = mlflow.register_model(info.model_uri, name).version
    return version, correct / len(LABELS)


def test_the_gate_promotes_only_a_better_version(experiment):
    experiment("test-promote")
    name = "promote-me"
    client = MlflowClient()
    decisions = []
    for correct in (4, 6, 6, 5, 7):  # first, better, tie, worse, better
        version, accuracy = _register(name, correct)
        alias, reason = tracking.promote(name, version, accuracy, IMAGES, LABELS)
        tag = client.get_model_version(name, version).tags["promotion"]
        assert tag == f"{alias}: {reason}"
        decisions.append((version, alias))
    assert [alias for _, alias in decisions] == [
        "champion", "champion", "challenger", "challenger", "champion",
    ]  # fmt: skip
    assert tracking.version_by_alias(name, "champion").version == decisions[-1][0]
    assert tracking.version_by_alias(name, "challenger").version == decisions[3][0]
    assert reason == "test accuracy 0.8750 vs 0.7500 of champion v2 on 8 images"


def test_the_gate_refuses_what_it_cannot_compare(experiment):
    experiment("test-promote-bad")
    with pytest.raises(ValueError, match=r"accuracy must be a fraction in \[0, 1\], got 87.5"):
        tracking.promote("m", 1, 87.5, IMAGES, LABELS)
    with pytest.raises(ValueError, match="8 test images but 7 labels"):
        tracking.promote("m", 1, 0.5, IMAGES, LABELS[:7])
