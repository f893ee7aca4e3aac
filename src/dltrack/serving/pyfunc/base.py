"""The shared part of dltrack's served image classifiers: check the batch, then forward; and,
inside MLflow's scoring server, tune the server process's garbage collector."""

import gc
import sys

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

#: Largest batch one request may carry (about 3 MB of JSON per 256 images).
MAX_BATCH = 1024

#: Allocations between young-generation collections in a serving process (CPython's is 700).
SERVING_GC_THRESHOLD = 50_000

#: The module ``mlflow models serve`` starts (``uvicorn mlflow.pyfunc.scoring_server.app:app``);
#: it loads the model while it is being imported.
SCORING_SERVER_APP = "mlflow.pyfunc.scoring_server.app"


def in_scoring_server() -> bool:
    """True in the process ``mlflow models serve`` starts, while (or after) it loads the model."""
    return SCORING_SERVER_APP in sys.modules


def tune_gc_for_serving() -> bool:
    """In MLflow's scoring server process, make request parsing cheaper for the collector.

    MLflow parses each JSON body into nested Python lists (twice) and deep-copies them before
    building the array: 200,704 lists for 256 Keras images. Each list is a new object the
    garbage collector tracks, so collections run many times per request, and every full one
    walks all long-lived objects of the process too (TensorFlow and Keras alone add about
    320,000). Measured here for one 256-image body, MLflow's parsing only: 830 ms in a process
    with MLflow's server imported, 1,110 ms with TensorFlow and Keras too (the Keras server),
    360 ms after ``gc.freeze()``, 220 ms with the young-generation threshold raised as well,
    210 ms with the collector off.

    After loading: one collection, ``gc.freeze()`` (the model, the frameworks and MLflow are
    kept for the life of the process; the collector stops walking them), and a young-generation
    threshold of :data:`SERVING_GC_THRESHOLD` (Python's own docs on ``gc.freeze`` and
    ``gc.set_threshold``); one line on stderr (the server log) says so. Garbage made while
    serving is still collected. Nothing happens when the model is loaded anywhere else (a
    notebook, a test, ``mlflow.pyfunc.load_model``).

    Returns:
        True when it tuned the process (it runs inside MLflow's scoring server).
    """
    if not in_scoring_server():
        return False
    gc.collect()
    gc.freeze()
    gc.set_threshold(SERVING_GC_THRESHOLD, *gc.get_threshold()[1:])
    print(
        f"dltrack: garbage collector tuned for serving ({gc.get_freeze_count()} objects frozen, "
        f"threshold {SERVING_GC_THRESHOLD})",
        file=sys.stderr,
        flush=True,
    )
    return True


def as_image_batch(
    images: object, image_shape: tuple[int, ...], max_batch: int | None = None
) -> np.ndarray:
    """A model-ready batch: float32, C-contiguous, shape (n, *image_shape).

    Args:
        images: array-like (numpy array, torch tensor, nested lists) of pixel values in [0, 1].
        image_shape: one image's shape, e.g. (28, 28, 1) for Keras or (1, 28, 28) for PyTorch.
        max_batch: largest n accepted (``None``: no limit).

    Returns:
        float32 array of shape (n, *image_shape).

    Raises:
        ValueError: not numbers, the shape is not (n, *image_shape), n is 0 or above
            ``max_batch``, or values are NaN or infinite. The message says what was expected.
    """
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    expected = f"a batch of shape (n, {', '.join(map(str, image_shape))}) float32 pixel values"
    try:
        batch = np.ascontiguousarray(images, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"expected {expected}; got values that are not numbers ({err})") from None
    if batch.shape[1:] != tuple(image_shape) or batch.shape[0] == 0:
        raise ValueError(f"expected {expected} with n >= 1, got shape {batch.shape}")
    if max_batch is not None and batch.shape[0] > max_batch:
        raise ValueError(
            f"expected at most {max_batch} images per request, got {batch.shape[0]}; "
            "split the batch"
        )
    if not np.isfinite(batch).all():
        raise ValueError(f"expected {expected}; got NaN or infinite values")
    return batch


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """``predict``: (n, *image_shape) float32 -> (n, classes) float32; bad input -> HTTP 400.

    Subclasses set ``self.image_shape`` in ``load_context``, call :func:`tune_gc_for_serving`
    at its end, and implement ``forward``.
    """

    image_shape: tuple[int, ...] = ()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, context, model_input, params=None):
        try:
            batch = as_image_batch(model_input, self.image_shape, max_batch=MAX_BATCH)
        except ValueError as err:  # MLflow's server answers an MlflowException with its status
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        return self.forward(batch)
