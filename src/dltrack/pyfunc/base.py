"""The shared part of dltrack's served image classifiers: check the batch, then forward; and,
inside MLflow's scoring server, tune the server process's garbage collector."""

import gc
import sys

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from dltrack.data import as_image_batch

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
