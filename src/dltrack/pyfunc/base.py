"""The shared part of dltrack's served image classifiers: check the batch, then forward."""

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from dltrack.data import as_image_batch

#: Largest batch one request may carry (about 3 MB of JSON per 256 images).
MAX_BATCH = 1024


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """``predict``: (n, *image_shape) float32 -> (n, classes) float32; bad input -> HTTP 400.

    Subclasses set ``self.image_shape`` in ``load_context`` and implement ``forward``.
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
