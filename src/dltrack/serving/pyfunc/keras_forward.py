"""MLflow model-from-code: a Keras classifier answering each request with one forward pass of a
traced ``tf.function`` instead of ``keras.Model.predict`` (which builds a data pipeline, runs
callbacks and prints a progress bar on every call). The traced graph is called as a concrete
function: the same graph and the same values as calling the ``tf.function``, without its
per-call dispatch (which signature, retrace or not), a cost only small batches notice.

Artifacts: ``keras_model``, a ``.keras`` file. Input (n, *input_shape) float32; output the
model's output, e.g. (n, 10) float32 probabilities. TensorFlow's thread pools are left at their
defaults (benchmarks/serve_bench.py compares the served request with the same forward pass in
process).
"""

import os

import mlflow
import numpy as np

from dltrack.serving.pyfunc.base import ImageClassifier


class KerasForward(ImageClassifier):
    """(n, *input_shape) float32 -> the Keras model's output, e.g. (n, 10) probabilities."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the ``.keras`` artifact and trace the forward pass for any batch size."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self.image_shape = tuple(model.input_shape[1:])
        self._tf = tf
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, *self.image_shape], tf.float32)],
        ).get_concrete_function()  # traced now, for any batch size
        self.forward(np.zeros((1, *self.image_shape), np.float32))  # graph optimised now

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """One traced forward pass: (n, *image_shape) float32 -> (n, classes) float32."""
        return self._forward(self._tf.constant(batch)).numpy()


mlflow.models.set_model(KerasForward())
