"""Log a classifier so that ``mlflow models serve`` answers fast, with the same requests and
responses as the framework flavors (``{"inputs": ...}`` or a Parquet body in,
``{"predictions": ...}`` out), and refuses what its signature does not describe.

Where the time of a request goes is measured in notebook 04 and ``benchmarks/serve_bench.py``
(docs/serving.md). What these models change, next to the framework flavors:

- ``mlflow.tensorflow``'s pyfunc calls ``keras.Model.predict`` per request: a data pipeline,
  callbacks and a progress bar on every call. :func:`log_keras_for_serving` logs a pyfunc model
  whose ``predict`` is one traced forward pass (a ``tf.function``).
- ``mlflow.pytorch`` runs the module per request with little overhead;
  :func:`log_torch_for_serving` logs the ``torch.export`` program with a forward pass under
  ``inference_mode``, and no pickle.
- Both check every batch (:func:`dltrack.serving.pyfunc.base.as_image_batch`: float32 dtype,
  shape, NaN/inf, at most :data:`dltrack.serving.pyfunc.base.MAX_BATCH` images) and refuse
  params, and answer bad input with HTTP 400 and a message that says what was expected.

The request body is MLflow's own handling and is not changed here: a Parquet body
(:func:`dltrack.serving.parquet_body`) reaches the model as the array it holds; a JSON body is
parsed into nested Python lists first, which is where most of a large JSON request's time goes.

Both are MLflow models from code: the small files in :mod:`dltrack.serving.pyfunc` are copied
into the logged model, with the dltrack modules they import (and nothing else of dltrack) as
code; nothing is pickled.
"""

from __future__ import annotations

import ast
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo

__all__ = ["log_floor_for_serving", "log_keras_for_serving", "log_torch_for_serving"]

_CODE = Path(__file__).with_name("pyfunc")
_SRC = Path(__file__).parents[2]  # the folder holding the dltrack package


def _dltrack_imports(source: Path) -> set[Path]:
    """The dltrack module files ``source`` imports, directly or through each other (relative to
    the folder holding the ``dltrack`` package)."""
    found: set[Path] = set()
    pending = [source]
    while pending:
        tree = ast.parse(pending.pop().read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                module = Path(*name.split(".")).with_suffix(".py")
                if name.startswith("dltrack.") and module not in found and (_SRC / module).is_file():
                    found.add(module)
                    pending.append(_SRC / module)
    return found


def _log(code: str, artifacts: dict[str, str], requirements: list[str], **kwargs: Any) -> ModelInfo:
    """Log ``pyfunc/<code>`` as a model from code, with only the dltrack modules it imports as
    its code (as namespace packages: no ``__init__`` of dltrack, and so nothing else, runs)."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # "add type hints": the signature is given explicitly
        warnings.filterwarnings("ignore", message=".*type hint.*")
        for module in _dltrack_imports(_CODE / code):
            (Path(tmp) / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(_SRC / module, Path(tmp) / module)
        code_paths = [str(Path(tmp) / "dltrack")] if (Path(tmp) / "dltrack").exists() else None
        return mlflow.pyfunc.log_model(
            python_model=str(_CODE / code),
            artifacts=artifacts,
            code_paths=code_paths,
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
    so any batch size is accepted; the caller's train/eval mode is restored afterwards.

    Args:
        module: ``torch.nn.Module``; input (n, *shape) float32. A module unlifted from an
            exported program (what ``mlflow.pytorch.load_model`` returns for a ``pt2`` model)
            works too: it is exported again as it is.
        name: the logged model's name.
        signature: e.g. ``TensorSpec(float32, (-1, 1, 28, 28)) -> TensorSpec(float32, (-1, 10))``.
        input_example: numpy array (n, *shape) float32 with n >= 2.
        **kwargs: passed to ``mlflow.pyfunc.log_model``.

    Returns:
        The ``ModelInfo``; ``model_uri`` is ``models:/<model_id>``.

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
    try:
        module.eval()
        restore = True
    except NotImplementedError:  # unlifted from an exported program: its mode is fixed already
        restore = False
    try:
        exported = torch.export.export(
            module,
            (torch.from_numpy(example),),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        )
    finally:
        if restore:
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


def log_floor_for_serving(name: str, signature: ModelSignature, **kwargs: Any) -> ModelInfo:
    """Log the MLflow floor: a pyfunc model that answers at once with zeros.

    Served by ``mlflow models serve``, a request to it costs only what MLflow's scoring server
    does around any model (HTTP, reading the body, enforcing the signature, writing the
    response): the least any model served this way can take.

    Args:
        name: the logged model's name.
        signature: the input signature to enforce, e.g. ``TensorSpec(float32, (-1, 28, 28, 1))``;
            the output's last dimension sets the width of the zeros, e.g. (-1, 10) -> (n, 10).
        **kwargs: passed to ``mlflow.pyfunc.log_model``.

    Returns:
        The ``ModelInfo``; ``model_uri`` is ``models:/<model_id>``.

    Raises:
        ValueError: the signature has no tensor output with a fixed last dimension.
    """
    outputs = signature.outputs.inputs if signature.outputs is not None else []
    shape = getattr(outputs[0], "shape", None) if outputs else None
    if not shape or shape[-1] in (-1, None):
        raise ValueError(
            f"expected a signature whose output is a tensor with a fixed last dimension, "
            f"e.g. (-1, 10); got outputs {signature.outputs}"
        )
    return _log("floor.py", {}, [], name=name, signature=signature,
                model_config={"width": int(shape[-1])}, **kwargs)  # fmt: skip
