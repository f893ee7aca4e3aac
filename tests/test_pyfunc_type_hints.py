"""The served pyfunc models carry the type hints MLflow 3 asks for on ``predict``: logging and
loading them warns nothing about type hints, the signature logged is the one given (an
``np.ndarray`` hint infers none), and bad input still reaches the model's own checks."""

from __future__ import annotations

import warnings

import mlflow
import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from dltrack.serving import fast as fast_serving

IMAGES = Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1))])
SIGNATURE = ModelSignature(IMAGES, Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]))


def _type_hint_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message)[:80] for w in caught if "type hint" in str(w.message).lower()]


def test_the_floor_model_is_hinted_and_keeps_its_signature(experiment):
    experiment("test-pyfunc-type-hints")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow.start_run():
            info = fast_serving.log_floor_for_serving("floor", SIGNATURE)
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        answer = loaded.predict(np.zeros((3, 28, 28, 1), np.float32))
    assert _type_hint_warnings(caught) == []
    assert loaded.metadata.get_input_schema() == IMAGES  # the given signature, not inferred
    assert answer.shape == (3, 10) and answer.dtype == np.float32
    with pytest.raises(mlflow.exceptions.MlflowException, match="shape"):
        loaded.predict(np.zeros((3, 28, 28), np.float32))  # MLflow's signature check still runs


def test_the_image_classifier_checks_still_run_behind_the_hints():
    from dltrack.serving.pyfunc.base import ImageClassifier

    class Identity(ImageClassifier):
        image_shape = (28, 28, 1)

        def forward(self, batch: np.ndarray) -> np.ndarray:
            return batch.reshape(len(batch), -1)[:, :10]

    model = Identity()
    assert model.predict_type_hints.input is np.ndarray
    with pytest.raises(mlflow.exceptions.MlflowException, match="NaN or infinite"):
        model.predict(None, np.full((1, 28, 28, 1), np.nan, np.float32))
    with pytest.raises(mlflow.exceptions.MlflowException, match="expected no params"):
        model.predict(None, np.zeros((1, 28, 28, 1), np.float32), params={"x": 1})
