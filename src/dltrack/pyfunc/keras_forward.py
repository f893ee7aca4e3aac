"""MLflow model-from-code: a Keras classifier answering each request with one forward pass of a
traced ``tf.function`` instead of ``keras.Model.predict`` (which builds a data pipeline, runs
callbacks and prints a progress bar on every call: about 40 ms per request).

The served process runs one request at a time, so TensorFlow runs each op on the calling
thread when it can set that (in a fresh process, as ``mlflow models serve`` starts) (one intra-op and one inter-op thread): handing a one-image convolution to a thread pool
costs more than it saves. Measured here on 2 cores, in-process: one image 0.38 ms against
0.67 ms (``predict_on_batch``, default threads); 256 images 20 ms against 11 ms, which is small
beside MLflow's own handling of a 256-image body (benchmarks/serve_bench.py, README).

Artifacts: ``keras_model``, a ``.keras`` file. Input (n, *input_shape) float32; output the
model's output, e.g. (n, 10) float32 probabilities.
"""

import os

import mlflow
import numpy as np

from dltrack.pyfunc.base import ImageClassifier, tune_gc_for_serving


class KerasForward(ImageClassifier):
    def load_context(self, context):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        try:  # only possible before TensorFlow's runtime starts, as in a fresh server
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # loaded into a process that already ran TensorFlow: keep its pools
            pass
        model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self.image_shape = tuple(model.input_shape[1:])
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, *self.image_shape], tf.float32)],
        )
        self.forward(np.zeros((1, *self.image_shape), np.float32))  # trace now
        tune_gc_for_serving()

    def forward(self, batch):
        return self._forward(batch).numpy()


mlflow.models.set_model(KerasForward())
