"""The shared part of dltrack's served image classifiers: refuse what the signature does not
describe, then forward.

What reaches ``predict`` inside ``mlflow models serve`` (MLflow 3.17, a model with an unnamed
``TensorSpec(float32, (-1, *image_shape))``):

- a JSON body (``{"inputs": ...}``): a float32 array that MLflow has already cast (booleans
  become 1.0/0.0, numeric strings are parsed, ``null`` becomes NaN), and ``params={}`` when the
  request carried ``"params"`` (MLflow drops unknown keys before the model);
- a Parquet body (one list column, one row of pixel values per image): an array of the
  column's own dtype, reshaped to ``(n, *image_shape)`` but never cast, and ``params=None``.

So the checks here cover the dtype, the shape, NaN and infinity, the batch size and params,
whichever body carried them. What MLflow changes before the model cannot be checked here (see
docs/serving.md, "Malformed requests").
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

#: Largest batch one request may carry (about 3 MB of Parquet, 10 MB of JSON per 1,024 images).
MAX_BATCH = 1024


def _kind(array: np.ndarray) -> str:
    """The dtype a client sent, in words: "float64", "bool", or for an object array the Python
    types of its elements, e.g. "str"."""
    if array.dtype != object:
        return str(array.dtype)
    kinds = sorted({type(value).__name__ for value in array.ravel()[:1000].tolist()})
    return " and ".join(kinds) or "object"


def as_image_batch(
    images: object, image_shape: tuple[int, ...], max_batch: int | None = None
) -> np.ndarray:
    """Check a batch of images against the served signature; return it as the model's input.

    Args:
        images: numpy array (or torch tensor) of shape (n, *image_shape), dtype float32, pixel
            values in [0, 1].
        image_shape: one image's shape, e.g. (28, 28, 1) for Keras or (1, 28, 28) for PyTorch.
        max_batch: largest n accepted (``None``: no limit).

    Returns:
        The same values as a C-contiguous float32 array of shape (n, *image_shape) (no copy
        when ``images`` already is one).

    Raises:
        ValueError: not an array; dtype other than float32 (booleans, integers, float16,
            float64, strings); shape not (n, *image_shape); n is 0 or above ``max_batch``; NaN
            or infinite values. The message says what was expected and what came.
    """
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    expected = f"a batch of shape (n, {', '.join(map(str, image_shape))}) of float32 pixel values"
    if not isinstance(images, np.ndarray):
        raise ValueError(f"expected {expected} as an array; got {type(images).__name__}")
    if images.dtype != np.float32:
        raise ValueError(
            f"expected {expected}; got {_kind(images)} values (send float32: JSON numbers, or "
            "a Parquet list<float> column)"
        )
    if images.shape[1:] != tuple(image_shape) or images.shape[0] == 0:
        raise ValueError(f"expected {expected} with n >= 1, got shape {images.shape}")
    if max_batch is not None and images.shape[0] > max_batch:
        raise ValueError(
            f"expected at most {max_batch} images per request, got {images.shape[0]}; "
            "split the batch"
        )
    if not np.isfinite(images).all():
        raise ValueError(f"expected {expected}; got NaN or infinite values")
    return np.ascontiguousarray(images)


def refuse_params(params: dict | None) -> None:
    """Refuse inference parameters: these models take none.

    MLflow 3.17 passes ``params=None`` when a request has none and ``{}`` when a JSON request
    carried ``"params"`` that the signature does not declare (it drops the keys before the
    model, logging them in the server log). A Parquet request cannot carry params.

    Raises:
        ValueError: ``params`` is not ``None``.
    """
    if params is not None:
        sent = f" {sorted(params)}" if params else ""
        raise ValueError(
            f"expected no params: this model takes none; the request carried params{sent} "
            "(MLflow drops keys its signature does not declare before the model sees them; "
            "the server log names them)"
        )


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """``predict``: (n, *image_shape) float32 -> (n, classes) float32; bad input -> HTTP 400.

    Subclasses set ``self.image_shape`` in ``load_context`` and implement ``forward``.
    """

    image_shape: tuple[int, ...] = ()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass: (n, *image_shape) float32 -> (n, classes) float32."""
        raise NotImplementedError

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Check ``model_input`` and ``params`` (:func:`as_image_batch`, :func:`refuse_params`),
        then :meth:`forward`.

        The type hints are the ones MLflow asks for (it warns "Add type hints to the `predict`
        method" without them). ``np.ndarray`` is a hint MLflow infers no signature from and
        validates nothing against (``type_hints_no_signature_inference`` in
        ``mlflow/types/type_hints.py``), so the logged ``TensorSpec`` signature stays the
        model's and these checks still see every request.

        Raises:
            MlflowException: INVALID_PARAMETER_VALUE (HTTP 400 from the scoring server) with
                the message of the check that failed.
        """
        try:
            refuse_params(params)
            batch = as_image_batch(model_input, self.image_shape, max_batch=MAX_BATCH)
        except ValueError as err:  # MLflow's server answers an MlflowException with its status
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        return self.forward(batch)
