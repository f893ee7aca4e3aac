"""Serving: ``mlflow models serve`` started and stopped from Python (:mod:`.process`), a REST
client for it (:mod:`.client`: Parquet or JSON bodies), the fast pyfunc models (:mod:`.fast`),
and side-by-side timing (:mod:`.timing`).

    from dltrack.serving import ModelServer, predict
    with ModelServer("models:/fashion_mnist_prediction_model@champion") as server:
        probabilities = predict(server.url, images)
"""

from dltrack.serving import fast
from dltrack.serving.client import (
    PARQUET,
    ServingError,
    inputs_json,
    invoke,
    parquet_body,
    predict,
)
from dltrack.serving.process import BackgroundServer, ModelServer, ServerStartError, free_port
from dltrack.serving.timing import time_in_turns

__all__ = [
    "PARQUET",
    "BackgroundServer",
    "ModelServer",
    "ServerStartError",
    "ServingError",
    "fast",
    "free_port",
    "inputs_json",
    "invoke",
    "parquet_body",
    "predict",
    "time_in_turns",
]
