"""Serving: ``mlflow models serve`` started and stopped from Python (:mod:`.process`), and a
REST client for it (:mod:`.client`).

    from dltrack.serving import ModelServer, predict
    with ModelServer("models:/fmnist-keras-cnn@champion") as server:
        probabilities = predict(server.url, images)
"""

from dltrack.serving.client import ServingError, inputs_json, invoke, predict
from dltrack.serving.process import BackgroundServer, ModelServer, ServerStartError, free_port

__all__ = [
    "BackgroundServer",
    "ModelServer",
    "ServerStartError",
    "ServingError",
    "free_port",
    "inputs_json",
    "invoke",
    "predict",
]
