"""Log a classifier so that ``mlflow models serve`` answers fast, with the same request and
response as the framework flavors (``{"inputs": ...}`` in, ``{"predictions": ...}`` out).

Where the time of a request goes (measured in ``benchmarks/serve_bench.py``, README):

- ``mlflow.tensorflow``'s pyfunc calls ``keras.Model.predict`` per request: a data pipeline,
  callbacks and a progress bar, about 40 ms even for one image. :func:`log_keras_for_serving`
  logs a pyfunc model whose ``predict`` is one traced forward pass (a ``tf.function``, TensorFlow
  ops on the calling thread).
- ``mlflow.pytorch`` runs the module per request with little overhead;
  :func:`log_torch_for_serving` logs the ``torch.export`` program with a forward pass under
  ``inference_mode``, and no pickle.
- The JSON body: MLflow's server parses it (twice) and builds the array. That is MLflow's own
  request handling and is not changed here. :func:`dltrack.serving.predict` makes the body
  about half as long by writing each float32 with the shortest decimal that reads back to the
  same float32 (orjson), so the server gets the same values from fewer bytes.

Both are MLflow models from code: the small files in :mod:`dltrack.serving.pyfunc` are copied into the
logged model, with the ``dltrack`` package as code; nothing is pickled. Both check each batch
first (:func:`dltrack.serving.pyfunc.base.as_image_batch`: shape, numbers, NaN/inf, at most
:data:`dltrack.serving.pyfunc.base.MAX_BATCH` images) and answer bad input with HTTP 400 and a message
that says what was expected.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo

__all__ = ["log_keras_for_serving", "log_torch_for_serving"]

_CODE = Path(__file__).with_name("pyfunc")
_PACKAGE = Path(__file__).parents[1]  # dltrack, copied into the model for dltrack.serving.pyfunc


def _log(code: str, artifacts: dict[str, str], requirements: list[str], **kwargs: Any) -> ModelInfo:
    with warnings.catch_warnings():  # "add type hints": the signature is given explicitly
        warnings.filterwarnings("ignore", message=".*type hint.*")
        return mlflow.pyfunc.log_model(
            python_model=str(_CODE / code),
            artifacts=artifacts,
            code_paths=[str(_PACKAGE)],
            pip_requirements=[f"mlflow=={mlflow.__version__}", "numpy", *requirements],
            **kwargs,
        )


def log_keras_for_serving(
    model, name: str, signature: ModelSignature, input_example: Any = None, **kwargs: Any
) -> ModelInfo:
    """Log a Keras model as a pyfunc model that serves with one compiled forward pass.

    Args:
        model: a built ``keras.Model``; input (n, *shape) float32.
        name: the logged model's name (MLflow 3's ``name=``).
        signature: e.g. ``TensorSpec(float32, (-1, 28, 28, 1)) -> TensorSpec(float32, (-1, 10))``.
        input_example: a small batch, stored with the model.
        **kwargs: passed to ``mlflow.pyfunc.log_model`` (``registered_model_name``, ``tags``...).

    Returns:
        The ``ModelInfo``; ``model_uri`` is ``models:/<model_id>``.
    """
    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return _log(
            "keras_forward.py",
            {"keras_model": str(path)},
            [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
            name=name, signature=signature, input_example=input_example, **kwargs,
        )  # fmt: skip


def log_torch_for_serving(
    module, name: str, signature: ModelSignature, input_example, **kwargs: Any
) -> ModelInfo:
    """Log a PyTorch module (a LightningModule too) as a ``torch.export`` program served by a
    pyfunc model with one forward pass under ``inference_mode``.

    The module is exported in eval mode on ``input_example`` with a dynamic batch dimension,
    so any batch size is accepted.

    Args:
        module: ``torch.nn.Module``; input (n, *shape) float32.
        name: the logged model's name.
        signature: e.g. ``TensorSpec(float32, (-1, 1, 28, 28)) -> TensorSpec(float32, (-1, 10))``.
        input_example: numpy array (n, *shape) float32 with n >= 2.

    Raises:
        ValueError: the input example has fewer than 2 rows (the batch size would be fixed).
    """
    import numpy as np
    import torch

    example = np.asarray(input_example, dtype=np.float32)
    if example.shape[0] < 2:
        raise ValueError(
            "input_example needs a batch of at least 2 so the batch size stays dynamic"
        )
    was_training = module.training
    module.eval()
    try:
        exported = torch.export.export(
            module,
            (torch.from_numpy(example),),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        )
    finally:
        module.train(was_training)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt2"
        torch.export.save(exported, path)
        return _log(
            "torch_forward.py",
            {"exported_program": str(path)},
            [f"torch=={torch.__version__.split('+')[0]}"],
            name=name, signature=signature, input_example=example, **kwargs,
        )  # fmt: skip
