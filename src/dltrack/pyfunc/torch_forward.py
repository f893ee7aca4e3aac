"""MLflow model-from-code: a PyTorch module exported with torch.export (``.pt2``), answering each
request with one forward pass under ``torch.inference_mode``.

Artifacts: ``exported_program``, a ``torch.export.save`` file (graph and weights, no pickle).
Input (n, *input_shape) float32; output the module's output, e.g. (n, 10) float32 logits.
"""

import mlflow

from dltrack.pyfunc.base import ImageClassifier, tune_gc_for_serving


class TorchForward(ImageClassifier):
    def load_context(self, context):
        import torch

        self._torch = torch
        program = torch.export.load(context.artifacts["exported_program"])
        self.image_shape = tuple(program.example_inputs[0][0].shape[1:])
        self.module = program.module()
        tune_gc_for_serving()

    def forward(self, batch):
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch)).numpy()


mlflow.models.set_model(TorchForward())
