"""Query a served MLflow model over REST: ``POST <url>/invocations``.

:func:`predict` sends a numpy batch as MLflow's tensor input, ``{"inputs": [...]}``, and
returns the ``predictions`` as numpy; an HTTP error becomes a :class:`ServingError` carrying the
server's message.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import requests

__all__ = ["ServingError", "inputs_json", "invoke", "predict"]


class ServingError(RuntimeError):
    """The server answered with an HTTP error; ``status`` and the server's ``message`` are kept."""

    def __init__(self, status: int, message: str, body: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body

    @property
    def reason(self) -> str:
        """The server's message without the echo of the request data.

        MLflow's schema errors read "Failed to enforce schema of data '<the whole array>' with
        schema '...'. Error: <reason>"; this returns the part after the last "Error: ".
        """
        head, sep, tail = self.message.rpartition("Error: ")
        return tail.strip() if sep else self.message


def _post(url: str, body: bytes, content_type: str, timeout: float) -> Any:
    response = requests.post(
        f"{url.rstrip('/')}/invocations",
        data=body,
        headers={"Content-Type": content_type},
        timeout=timeout,
    )
    if response.status_code >= 400:
        try:
            reply = response.json()
        except ValueError:
            reply = None
        message = reply.get("message", response.text) if isinstance(reply, dict) else response.text
        raise ServingError(response.status_code, message, response.text)
    return response.json()


def invoke(url: str, payload: Any, timeout: float = 60.0) -> Any:
    """POST ``payload`` as JSON to ``<url>/invocations`` and return the decoded JSON reply.

    Raises:
        ServingError: the server answered 4xx or 5xx; carries its status and message.
    """
    return _post(url, json.dumps(payload).encode(), "application/json", timeout)


def inputs_json(batch: np.ndarray) -> bytes:
    """The request body ``{"inputs": batch}`` as compact JSON.

    orjson writes each float32 with the shortest decimal that reads back to the same float32
    ("0.003921569", not ``tolist()``'s "0.003921568859368563"): the server gets exactly the same
    values from about half the bytes.
    """
    array = np.ascontiguousarray(batch)
    return orjson.dumps({"inputs": array}, option=orjson.OPT_SERIALIZE_NUMPY)


def predict(url: str, batch: np.ndarray, timeout: float = 60.0) -> np.ndarray:
    """Send a numpy batch as ``{"inputs": batch}`` and return ``predictions`` as numpy.

    Args:
        url: server base URL (``ModelServer.url``).
        batch: the model's input, batch first, e.g. (n, 28, 28, 1) float32 for notebook 01 or
            (n, 1, 28, 28) for notebook 02.
        timeout: seconds to wait for the reply.

    Returns:
        The ``predictions`` of the reply as float32, e.g. (n, 10).

    Raises:
        ServingError: the server rejected the request (e.g. wrong shape); the message says why.
    """
    reply = _post(url, inputs_json(np.asarray(batch)), "application/json", timeout)
    predictions = reply["predictions"] if isinstance(reply, dict) else reply
    return np.asarray(predictions, dtype=np.float32)
