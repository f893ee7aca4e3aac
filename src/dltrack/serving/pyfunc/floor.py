"""MLflow model-from-code: the MLflow floor, a model that answers at once.

``predict`` returns zeros of shape (n, width) float32 without looking at the input, so a request
to it costs only what MLflow's scoring server does around a model: HTTP, reading the body,
enforcing the signature (for a tensor signature: the reshape of a Parquet body, the parsing and
cast of a JSON one) and writing the response. Model config: ``width``, the output width.
"""

from typing import Any

import mlflow
import numpy as np


class Floor(mlflow.pyfunc.PythonModel):
    """(n, ...) -> zeros (n, width) float32, at once."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Read the output width from the model config."""
        self.width = int((context.model_config or {}).get("width", 1))

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Zeros (len(model_input), width) float32."""
        return np.zeros((len(model_input), self.width), np.float32)


mlflow.models.set_model(Floor())
