"""MLflow model-from-code: a PyTorch module exported with torch.export (``.pt2``), answering each
request with one forward pass under ``torch.inference_mode``.

Batches of fewer than :data:`ONE_THREAD_BELOW` images run on one thread (PyTorch's thread count
is set for the call and restored after it): a one-image forward pass is too small to share out,
and on a busy machine a team of threads waits for its slowest member (docs/serving.md);
larger batches use PyTorch's default.

Artifacts: ``exported_program``, a ``torch.export.save`` file (graph and weights, no pickle).
Input (n, *input_shape) float32; output the module's output, e.g. (n, 10) float32 logits.
"""

import mlflow
import numpy as np

from dltrack.serving.pyfunc.base import ImageClassifier

#: Batches smaller than this run on one thread.
ONE_THREAD_BELOW = 32


class TorchForward(ImageClassifier):
    """(n, *input_shape) float32 -> the exported module's output, e.g. (n, 10) logits."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the exported program (no pickle) as a module."""
        import torch

        self._torch = torch
        program = torch.export.load(context.artifacts["exported_program"])
        self.image_shape = tuple(program.example_inputs[0][0].shape[1:])
        self.module = program.module()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass under ``inference_mode``: (n, *image_shape) float32 -> (n, 10);
        on one thread when n < :data:`ONE_THREAD_BELOW`."""
        torch = self._torch
        threads = torch.get_num_threads()
        one_thread = len(batch) < ONE_THREAD_BELOW and threads > 1
        if one_thread:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return self.module(torch.from_numpy(batch)).numpy()
        finally:
            if one_thread:
                torch.set_num_threads(threads)


mlflow.models.set_model(TorchForward())
