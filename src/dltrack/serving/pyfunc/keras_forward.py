"""MLflow model-from-code: a Keras classifier answering each request with one forward pass of a
traced ``tf.function`` instead of ``keras.Model.predict`` (which builds a data pipeline, runs
callbacks and prints a progress bar on every call: about 40 ms per request).

Inside ``mlflow models serve`` (only there, see :func:`dltrack.serving.pyfunc.base.in_scoring_server`)
TensorFlow runs each op with one intra-op and one inter-op thread: for a one-image convolution a
thread pool's hand-off costs more than it saves. Measured here on 2 cores, in-process: one image
0.38 ms against 0.67 ms with ``predict_on_batch`` and the default pools; 256 images 20 ms
against 11 ms, small beside MLflow's own handling of a 256-image body (about 210 ms); and the
server's requests per second with 4 clients rose from 251 to 389 (benchmarks/serve_bench.py).
Loaded anywhere else (a notebook, a test), TensorFlow's threads are left as they are.

Artifacts: ``keras_model``, a ``.keras`` file. Input (n, *input_shape) float32; output the
model's output, e.g. (n, 10) float32 probabilities.
"""

import os

import mlflow
import numpy as np

from dltrack.serving.pyfunc.base import ImageClassifier, in_scoring_server, tune_gc_for_serving


class KerasForward(ImageClassifier):
    """(n, *input_shape) float32 -> the Keras model's output, e.g. (n, 10) probabilities."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the ``.keras`` artifact and trace the forward pass for any batch size."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        if in_scoring_server():
            try:  # possible only before TensorFlow's runtime starts, as in a fresh server
                tf.config.threading.set_intra_op_parallelism_threads(1)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # TensorFlow already ran in this process: keep its pools
                pass
        model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self.image_shape = tuple(model.input_shape[1:])
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, *self.image_shape], tf.float32)],
        )
        self.forward(np.zeros((1, *self.image_shape), np.float32))  # trace now
        tune_gc_for_serving()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """One traced forward pass: (n, *image_shape) float32 -> (n, classes) float32."""
        return self._forward(batch).numpy()


mlflow.models.set_model(KerasForward())
