"""Query a served MLflow model over REST: ``POST <url>/invocations``.

:func:`predict` sends a numpy batch and returns the ``predictions`` as numpy; an HTTP error
becomes a :class:`ServingError` carrying the server's message. Two request bodies, both read by
MLflow's own scoring server (``mlflow models serve``):

- **Parquet** (``Content-Type: application/vnd.apache.parquet``, the default for a batch of
  tensors): one column, one row per image holding its pixel values in C order (784 float32 for
  a 28x28 image). MLflow reads it with ``pandas.read_parquet``, and a model's tensor signature
  reshapes the rows to ``(n, 28, 28, 1)`` or ``(n, 1, 28, 28)``. :func:`parquet_body` writes it.
- **JSON**, MLflow's tensor input ``{"inputs": [...]}`` (nested lists, one per dimension), which
  the notebooks' REST cells teach. :func:`inputs_json` writes it.
"""

from __future__ import annotations

import io
import json
from typing import Any, Literal

import numpy as np
import orjson
import requests

__all__ = [
    "PARQUET",
    "ServingError",
    "inputs_json",
    "invoke",
    "parquet_body",
    "predict",
]

#: The Parquet content type MLflow's scoring server reads.
PARQUET = "application/vnd.apache.parquet"


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

        MLflow's schema errors read "Failed to predict data '<the whole array>'. Error: <reason>";
        this returns the part after the last "Error: ".
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

    Args:
        batch: numpy array of any shape and numeric dtype.
    """
    array = np.ascontiguousarray(batch)
    return orjson.dumps({"inputs": array}, option=orjson.OPT_SERIALIZE_NUMPY)


def parquet_body(batch: np.ndarray, column: str = "inputs") -> bytes:
    """A batch of tensors as a Parquet file: one list column, one row per tensor.

    Row i holds ``batch[i]`` flattened in C order, in the batch's own dtype (float32 for
    MLflow's float32 tensor signatures; other dtypes are sent as they are, for the server to
    refuse or cast). Written without compression or dictionary encoding: the server reads it
    faster, and the values are as compact as float32 gets (4 bytes each).

    Args:
        batch: numpy array (n, *shape), n >= 1, numeric or boolean dtype.
        column: the column's name. MLflow ignores it for a signature with one unnamed tensor;
            for a named one it must be the input's name.

    Returns:
        The Parquet file's bytes (about 4 bytes per float32 value plus a few hundred).

    Raises:
        ValueError: ``batch`` has fewer than 2 dimensions (no per-row tensor) or no rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    array = np.ascontiguousarray(batch)
    if array.ndim < 2 or array.shape[0] == 0:
        raise ValueError(f"expected a batch of shape (n, ...) with n >= 1, got shape {array.shape}")
    flat = array.reshape(array.shape[0], -1)
    offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int64)
    rows = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat.ravel()))
    sink = io.BytesIO()
    pq.write_table(
        pa.table({column: rows}),
        sink,
        compression="none",
        use_dictionary=False,
        write_statistics=False,
    )
    return sink.getvalue()


def _as_numpy(batch: Any) -> np.ndarray:
    if hasattr(batch, "detach"):  # a torch tensor
        batch = batch.detach().cpu().numpy()
    return np.asarray(batch)


def predict(
    url: str,
    batch: Any,
    body: Literal["parquet", "json"] | None = None,
    timeout: float = 60.0,
) -> np.ndarray:
    """Send a batch to ``<url>/invocations`` and return the ``predictions`` as numpy.

    Args:
        url: server base URL (``ModelServer.url``).
        batch: the model's input, batch first, as numpy or a torch tensor: e.g. (n, 28, 28, 1)
            float32 for notebook 01's model, (n, 1, 28, 28) float32 for notebook 02's. Sent in
            its own dtype.
        body: the request body: ``"parquet"`` (:func:`parquet_body`) or ``"json"``
            (``{"inputs": ...}``, :func:`inputs_json`). Default: Parquet for a numeric array
            with a batch dimension (ndim >= 2), JSON for anything else.
        timeout: seconds to wait for the reply.

    Returns:
        The ``predictions`` of the reply as float32, e.g. (n, 10).

    Raises:
        ValueError: ``body`` is neither "parquet" nor "json", or Parquet was asked for a batch
            that is not an array of shape (n, ...).
        ServingError: the server rejected the request (e.g. wrong shape or dtype); ``reason``
            says what was expected.
    """
    array = _as_numpy(batch)
    if body is None:
        tensors = array.ndim >= 2 and array.dtype.kind in "biuf"
        body = "parquet" if tensors else "json"
    if body == "parquet":
        reply = _post(url, parquet_body(array), PARQUET, timeout)
    elif body == "json":
        reply = _post(url, inputs_json(array), "application/json", timeout)
    else:
        raise ValueError(f'body must be "parquet" or "json", got {body!r}')
    predictions = reply["predictions"] if isinstance(reply, dict) else reply
    return np.asarray(predictions, dtype=np.float32)
