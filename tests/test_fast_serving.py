"""dltrack.serving.fast and the client's bodies: the fast models give the framework's own
predictions and refuse what their signature does not describe; the Parquet body carries the same
float32 values MLflow's scoring server reads."""

import io
import json

import mlflow
import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from dltrack import serving
from dltrack.serving import fast as fast_serving
from dltrack.serving.pyfunc.base import as_image_batch, refuse_params

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
    with pytest.raises(mlflow.exceptions.MlflowException, match="expected no params"):
        loaded.predict(batch, params={"temperature": 0.5})  # MLflow drops the key; we refuse


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
    threads = torch.get_num_threads()
    for n in (1, 64, 256):
        batch = rng.random((n, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(loaded.predict(batch), expected, atol=1e-5)
        assert torch.get_num_threads() == threads  # one thread for small batches, then restored
    if threads > 1:  # what the forward pass runs on: one thread below 32 images
        served, seen = loaded.unwrap_python_model(), []
        module = served.module
        served.module = lambda x: (seen.append(torch.get_num_threads()), module(x))[1]
        loaded.predict(rng.random((1, 1, 28, 28), dtype=np.float32))
        loaded.predict(rng.random((32, 1, 28, 28), dtype=np.float32))
        assert seen == [1, threads]
    with pytest.raises(ValueError, match="at least 2"):
        fast_serving.log_torch_for_serving(
            model, name="x", signature=signature, input_example=batch[:1]
        )

    # what mlflow.pytorch.load_model returns for a pt2 model: exported again as it is
    example = torch.from_numpy(batch[:4])
    unlifted = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    ).module()
    with pytest.raises(NotImplementedError):
        unlifted.eval()
    with mlflow.start_run():
        again = fast_serving.log_torch_for_serving(
            unlifted, name="again", signature=signature, input_example=batch[:4]
        )
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_array_equal(
        mlflow.pyfunc.load_model(again.model_uri).predict(batch), expected
    )


def test_parquet_body_is_what_mlflow_reads_back():
    import pandas as pd
    from mlflow.models.utils import _enforce_tensor_schema  # what the scoring server runs

    batch = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    body = serving.parquet_body(batch)
    frame = pd.read_parquet(io.BytesIO(body))  # the scoring server's parse_parquet_input
    assert frame.shape == (5, 1) and frame.iloc[0, 0].dtype == np.float32
    schema = Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1))])
    np.testing.assert_array_equal(_enforce_tensor_schema(frame, schema), batch)
    assert len(body) < 4 * batch.size + 1000  # 4 bytes a value: no dictionary, no compression
    torch_layout = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    assert serving.parquet_body(torch_layout) == body  # one channel: the same bytes
    for dtype in (np.float64, np.bool_, np.uint8):  # sent as they are, for the server to judge
        frame = pd.read_parquet(io.BytesIO(serving.parquet_body(batch.astype(dtype))))
        assert frame.iloc[0, 0].dtype == dtype
    with pytest.raises(ValueError, match=r"shape \(n, ...\) with n >= 1, got shape \(784,\)"):
        serving.parquet_body(batch[0].ravel())


def test_predict_refuses_an_unknown_body_before_sending():
    with pytest.raises(ValueError, match='body must be "parquet" or "json", got \'csv\''):
        serving.predict("http://127.0.0.1:9", np.zeros((1, 28, 28, 1), np.float32), body="csv")


def test_as_image_batch_keeps_float32_and_takes_tensors():
    batch = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    assert as_image_batch(batch, (1, 28, 28)) is batch  # no copy
    torch = pytest.importorskip("torch")
    assert as_image_batch(torch.zeros(3, 28, 28, 1), (28, 28, 1)).shape == (3, 28, 28, 1)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((1, 28, 28), np.float32), r"shape \(n, 1, 28, 28\)"),
        (np.zeros((0, 1, 28, 28), np.float32), "n >= 1"),
        (np.zeros((5, 1, 28, 28), np.float32), "at most 4 images"),
        (np.full((1, 1, 28, 28), np.nan, np.float32), "NaN"),
        (np.full((1, 1, 28, 28), -np.inf, np.float32), "infinite"),
        (np.zeros((1, 1, 28, 28)), "got float64 values"),
        (np.zeros((1, 1, 28, 28), np.float16), "got float16 values"),
        (np.zeros((1, 1, 28, 28), bool), "got bool values"),
        (np.zeros((1, 1, 28, 28), np.uint8), "got uint8 values"),
        (np.full((1, 1, 28, 28), "0.5", object), "got str values"),
        ([[0.5]], "as an array; got list"),
    ],
)
def test_as_image_batch_rejects_with_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        as_image_batch(bad, (1, 28, 28), max_batch=4)


def test_params_are_refused():
    refuse_params(None)  # no params: fine
    for params in ({}, {"temperature": 0.5}):  # {}: what MLflow hands over after dropping keys
        with pytest.raises(ValueError, match="expected no params: this model takes none"):
            refuse_params(params)


def test_time_in_turns_takes_turns_primes_and_drops_warmup():
    log = []
    calls = {name: (lambda name=name: log.append(name)) for name in ("a", "b")}
    primers = {"b": lambda: log.append("prime-b")}
    times = serving.time_in_turns(calls, rounds=2, block=2, warmup=1, primers=primers)
    assert log == ["a", "a", "prime-b", "b", "b"] * 3  # 1 warm-up round + 2 kept
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4}
    assert all(ms >= 0 for t in times.values() for ms in t)
    with pytest.raises(ValueError, match="expected rounds >= 1"):
        serving.time_in_turns(calls, rounds=0)


def test_floor_model_answers_zeros_of_the_output_width(experiment):
    experiment("test-fast-floor")
    images = TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1))
    with mlflow.start_run():
        info = fast_serving.log_floor_for_serving(
            name="floor", signature=ModelSignature(Schema([images]), OUT)
        )
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out = loaded.predict(np.ones((3, 28, 28, 1), np.float32))
    assert out.dtype == np.float32 and out.shape == (3, 10) and not out.any()
    open_width = Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    with pytest.raises(ValueError, match="fixed last dimension"):
        fast_serving.log_floor_for_serving(
            name="x", signature=ModelSignature(Schema([images]), open_width)
        )


#: Loads a served model the way a deployment does, where dltrack is not installed: no site
#: folder, no PYTHONPATH, so dltrack can come only from the model's own code folder.
LOAD_WITHOUT_DLTRACK = """
import sys
sys.path = [p for p in sys.path if p] + [sys.argv[2]]
import mlflow, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
print(model.predict(np.zeros((2, 1, 28, 28), np.float32)).shape)
print(sorted(name for name in sys.modules if name.split(".")[0] == "dltrack"))
"""


def test_a_served_model_carries_only_the_modules_it_imports(experiment):
    import os
    import subprocess
    import sys
    import sysconfig
    from pathlib import Path

    torch = pytest.importorskip("torch")
    experiment("test-fast-code")
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    signature = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]), OUT)
    with mlflow.start_run():
        info = fast_serving.log_torch_for_serving(
            module, "fast", signature, np.zeros((2, 1, 28, 28), np.float32)
        )
    folder = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    code = folder / "code"
    assert sorted(p.relative_to(code).as_posix() for p in code.rglob("*.py")) == [
        "dltrack/serving/pyfunc/base.py"
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-S", "-c", LOAD_WITHOUT_DLTRACK, str(folder),
         sysconfig.get_paths()["purelib"]],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == [
        "(2, 10)", "['dltrack', 'dltrack.serving', 'dltrack.serving.pyfunc', "
        "'dltrack.serving.pyfunc.base']",
    ]  # fmt: skip
