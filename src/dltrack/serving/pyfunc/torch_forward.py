"""MLflow model-from-code: a PyTorch module exported with torch.export (``.pt2``), answering each
request with one forward pass under ``torch.inference_mode``.

Artifacts: ``exported_program``, a ``torch.export.save`` file (graph and weights, no pickle).
Input (n, *input_shape) float32; output the module's output, e.g. (n, 10) float32 logits.
"""

import mlflow
import numpy as np

from dltrack.serving.pyfunc.base import ImageClassifier, tune_gc_for_serving


class TorchForward(ImageClassifier):
    """(n, *input_shape) float32 -> the exported module's output, e.g. (n, 10) logits."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the exported program (no pickle) as a module."""
        import torch

        self._torch = torch
        program = torch.export.load(context.artifacts["exported_program"])
        self.image_shape = tuple(program.example_inputs[0][0].shape[1:])
        self.module = program.module()
        tune_gc_for_serving()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass under ``inference_mode``: (n, *image_shape) float32 -> (n, 10)."""
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch)).numpy()


mlflow.models.set_model(TorchForward())
