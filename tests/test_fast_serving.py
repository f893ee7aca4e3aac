"""dltrack.fast_serving: the faster-serving models give the framework's own predictions."""

import json

import mlflow
import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from dltrack import serving
from dltrack.serving import fast as fast_serving
from dltrack.serving.pyfunc.base import as_image_batch

OUT = Schema([TensorSpec(np.dtype(np.float32), (-1, 10))])


def test_inputs_json_is_exact_and_shorter():
    batch = (np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)) / 255).astype(np.float32)
    body = serving.inputs_json(batch)
    decoded = np.asarray(json.loads(body)["inputs"], dtype=np.float32)
    assert np.array_equal(decoded, batch)  # the same float32 values
    assert len(body) < 0.7 * len(json.dumps({"inputs": batch.tolist()}))


def test_keras_model_served_by_one_forward_pass(experiment):
    keras = pytest.importorskip("keras")
    from dltrack.models.keras_cnn import build_course_cnn

    experiment("test-fast-keras")
    keras.utils.set_random_seed(0)
    model = build_course_cnn(lr_schedule="constant")
    signature = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1))]), OUT)
    rng = np.random.default_rng(0)
    with mlflow.start_run():
        info = fast_serving.log_keras_for_serving(
            model,
            name="fast",
            signature=signature,
            input_example=rng.random((2, 28, 28, 1), dtype=np.float32),
        )
    assert "python_function" in info.flavors
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    for n in (1, 256):
        batch = rng.random((n, 28, 28, 1), dtype=np.float32)
        np.testing.assert_allclose(
            loaded.predict(batch), np.asarray(model(batch, training=False)), atol=1e-5
        )


def test_torch_model_served_by_exported_program(experiment):
    torch = pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from dltrack.models.lightning_cnn import FashionMNISTCNN

    experiment("test-fast-torch")
    torch.manual_seed(0)
    model = FashionMNISTCNN()
    model.train()
    signature = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]), OUT)
    rng = np.random.default_rng(0)
    with mlflow.start_run():
        info = fast_serving.log_torch_for_serving(
            model,
            name="fast",
            signature=signature,
            input_example=rng.random((4, 1, 28, 28), dtype=np.float32),
        )
    assert model.training  # the caller's mode is restored
    model.eval()
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    for n in (1, 64, 256):
        batch = rng.random((n, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(loaded.predict(batch), expected, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        fast_serving.log_torch_for_serving(
            model, name="x", signature=signature, input_example=batch[:1]
        )


def test_gc_tuned_only_inside_mlflows_scoring_server():
    import gc
    import subprocess
    import sys

    from dltrack.serving.pyfunc.base import (
        SERVING_GC_THRESHOLD,
        in_scoring_server,
        tune_gc_for_serving,
    )

    before = gc.get_threshold()
    assert in_scoring_server() is False  # so KerasForward leaves TensorFlow's threads alone too
    assert tune_gc_for_serving() is False  # a notebook or test process is left alone
    assert gc.get_threshold() == before

    # What `mlflow models serve` runs: the model is loaded while the app module is imported.
    script = (
        "import gc, sys, types\n"
        "sys.modules['mlflow.pyfunc.scoring_server.app'] = types.ModuleType('app')\n"
        "from dltrack.serving.pyfunc.base import in_scoring_server, tune_gc_for_serving\n"
        "assert in_scoring_server()\n"
        "print(tune_gc_for_serving(), gc.get_threshold()[0], gc.get_freeze_count() > 1000)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", str(SERVING_GC_THRESHOLD), "True"]


def test_as_image_batch_casts_float64_and_tensors():
    batch = as_image_batch(np.random.default_rng(0).random((2, 1, 28, 28)), (1, 28, 28))
    assert batch.dtype == np.float32 and batch.shape == (2, 1, 28, 28)
    torch = pytest.importorskip("torch")
    assert as_image_batch(torch.zeros(3, 28, 28, 1), (28, 28, 1)).shape == (3, 28, 28, 1)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((1, 28, 28)), r"shape \(n, 1, 28, 28\)"),
        (np.zeros((0, 1, 28, 28)), "n >= 1"),
        (np.zeros((5, 1, 28, 28)), "at most 4 images"),
        (np.full((1, 1, 28, 28), np.nan), "NaN"),
        ([["a"]], "not numbers"),
    ],
)
def test_as_image_batch_rejects_with_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        as_image_batch(bad, (1, 28, 28), max_batch=4)
