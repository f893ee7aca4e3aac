"""Serving benchmark: latency and throughput of `mlflow models serve` for the notebook models,
(a) logged the course's way and (b) logged and queried the way dltrack's notebooks do.

    .venv/bin/python benchmarks/serve_bench.py            # or: make bench-serve

For each model (the Keras CNN of notebook 01, the Lightning CNN of notebook 02; untrained,
seeded: latency does not depend on the weights) and each way, one server is started with
dltrack's serving helper on 127.0.0.1 and measured, one after another:
- p50/p95/p99 of 500 sequential 1-image requests and of 50 sequential 256-image requests
  (one keep-alive HTTP connection; bodies built once, before timing),
- requests per second with 4 concurrent clients (1-image requests, 250 each),
- the largest difference between served predictions and the framework's own forward pass.

(a) course: ``mlflow.tensorflow.log_model`` / ``mlflow.pytorch.log_model(...,
serialization_format="pickle")``, body ``json.dumps({"inputs": x.tolist()})``.
(b) dltrack: :mod:`dltrack.serving.fast` models, body :func:`dltrack.serving.inputs_json`.
A third row per model, "MLflow floor", serves a pyfunc model that returns zeros at once: what
MLflow's server costs per request (HTTP, JSON parsing, schema checks, response) with dltrack's
bodies. Results: a table with the ratios (b)/(a), and benchmarks/results/serve_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch  # noqa: F401  (import torch before TensorFlow: the other order crashes torchvision)
from _results import write_results  # benchmarks/_results.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _images(n: int):
    import keras

    from dltrack import data

    data.prepare_keras_fashion_mnist()
    (_, _), (x_test, _) = keras.datasets.fashion_mnist.load_data()
    return (x_test[:n] / 255.0).astype("float32").reshape(-1, 28, 28, 1)


class Zeros:
    """A pyfunc model that answers at once: MLflow's own cost per request."""


def log_models(store: Path) -> dict:
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from dltrack import tracking
    from dltrack.models.keras_cnn import build_course_cnn
    from dltrack.models.lightning_cnn import FashionMNISTCNN
    from dltrack.serving import fast as fast_serving

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    tracking.prepare_experiment("serve-bench")
    mlflow.set_experiment("serve-bench")
    images = _images(256)
    out = Schema([TensorSpec(np.dtype(np.float32), (-1, 10))])
    keras_sig = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1))]), out)
    torch_sig = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]), out)
    import keras

    keras.utils.set_random_seed(0)
    keras_model = build_course_cnn(lr_schedule="constant")
    torch.manual_seed(0)
    torch_model = FashionMNISTCNN().eval()
    torch_images = images.transpose(0, 3, 1, 2).copy()

    zeros_file = Path(tempfile.mkdtemp()) / "zeros.py"
    zeros_file.write_text(
        "import mlflow, numpy as np\n"
        "class Zeros(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return np.zeros((len(model_input), 10), np.float32)\n"
        "mlflow.models.set_model(Zeros())\n"
    )
    with mlflow.start_run():
        uris = {
            ("keras", "a"): mlflow.tensorflow.log_model(
                keras_model, name="keras-course", signature=keras_sig, input_example=images[:2]
            ).model_uri,
            ("keras", "b"): fast_serving.log_keras_for_serving(
                keras_model, name="keras-fast", signature=keras_sig, input_example=images[:2]
            ).model_uri,
            ("keras", "floor"): mlflow.pyfunc.log_model(
                name="keras-floor", python_model=str(zeros_file), signature=keras_sig
            ).model_uri,
            ("lightning", "a"): mlflow.pytorch.log_model(
                torch_model, name="torch-course", signature=torch_sig, serialization_format="pickle"
            ).model_uri,
            ("lightning", "b"): fast_serving.log_torch_for_serving(
                torch_model, name="torch-fast", signature=torch_sig, input_example=torch_images[:4]
            ).model_uri,
            ("lightning", "floor"): mlflow.pyfunc.log_model(
                name="torch-floor", python_model=str(zeros_file), signature=torch_sig
            ).model_uri,
        }
    with torch.no_grad():
        reference = {
            "keras": np.asarray(keras_model(images, training=False)),
            "lightning": torch_model(torch.from_numpy(torch_images)).numpy(),
        }
    return {
        "uris": uris,
        "images": {"keras": images, "lightning": torch_images},
        "reference": reference,
    }


def _bodies(images, way: str) -> dict[int, bytes]:
    from dltrack.serving import inputs_json

    if way == "a":
        return {n: json.dumps({"inputs": images[:n].tolist()}).encode() for n in (1, 256)}
    return {n: inputs_json(images[:n]) for n in (1, 256)}


def _timed(session, url: str, body: bytes, count: int) -> list[float]:
    headers = {"Content-Type": "application/json"}
    times = []
    for _ in range(count):
        start = time.perf_counter()
        response = session.post(url, data=body, headers=headers, timeout=60)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    return times


def _pcts(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=100, method="inclusive")
    return {"p50": statistics.median(times), "p95": q[94], "p99": q[98]}


def measure(uri: str, images, reference, way: str, clients: int = 4, per_client: int = 250) -> dict:
    import numpy as np
    import requests

    from dltrack.serving import ModelServer

    bodies = _bodies(images, "a" if way == "a" else "b")
    with ModelServer(uri) as server:
        url = f"{server.url}/invocations"
        with requests.Session() as session:
            _timed(session, url, bodies[1], 30)  # warm-up
            _timed(session, url, bodies[256], 3)
            one = _timed(session, url, bodies[1], 500)
            many = _timed(session, url, bodies[256], 50)
            served = np.asarray(
                session.post(
                    url, data=bodies[256], headers={"Content-Type": "application/json"}
                ).json()["predictions"]
            )
        errors: list[str] = []

        def client() -> None:
            with requests.Session() as own:
                try:
                    _timed(own, url, bodies[1], per_client)
                except Exception as err:  # counted, reported
                    errors.append(str(err))

        threads = [threading.Thread(target=client) for _ in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
    return {
        "one_image_ms": _pcts(one),
        "batch_256_ms": _pcts(many),
        "rps_4_clients": clients * per_client / seconds,
        "errors": len(errors),
        "max_abs_diff": None if way == "floor" else float(np.abs(served - reference).max()),
        "body_bytes": {str(n): len(b) for n, b in bodies.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="keras,lightning", help="comma-separated")
    parser.add_argument("--ways", default="a,b,floor", help="comma-separated: a, b, floor")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as store:
        logged = log_models(Path(store))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(store) / 'mlflow.db'}"
        for (model, way), uri in logged["uris"].items():
            if model not in args.models.split(",") or way not in args.ways.split(","):
                continue
            print(f"serving {model} ({way}) ...", flush=True)
            results[f"{model}/{way}"] = measure(
                uri, logged["images"][model], logged["reference"][model], way
            )
    names = {"a": "(a) course", "b": "(b) dltrack", "floor": "MLflow floor"}
    print(
        f"\n{'model':10s} {'way':13s} {'1 img p50':>9s} {'p95':>7s} {'p99':>7s} {'256 p50':>8s} {'p95':>7s} {'p99':>7s} {'req/s x4':>8s} {'maxdiff':>8s}"
    )
    for key, r in results.items():
        model, way = key.split("/")
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        print(
            f"{model:10s} {names[way]:13s} {r['one_image_ms']['p50']:9.1f} {r['one_image_ms']['p95']:7.1f} "
            f"{r['one_image_ms']['p99']:7.1f} {r['batch_256_ms']['p50']:8.1f} {r['batch_256_ms']['p95']:7.1f} "
            f"{r['batch_256_ms']['p99']:7.1f} {r['rps_4_clients']:8.0f} {diff:>8s}"
        )
    print("\nratios (b)/(a):")
    for model in ("keras", "lightning"):
        if f"{model}/a" not in results or f"{model}/b" not in results:
            continue
        a, b = results[f"{model}/a"], results[f"{model}/b"]
        print(
            f"  {model:10s} 1-image p50 {b['one_image_ms']['p50'] / a['one_image_ms']['p50']:.3f}, "
            f"256-image p50 {b['batch_256_ms']['p50'] / a['batch_256_ms']['p50']:.3f}, "
            f"req/s {b['rps_4_clients'] / a['rps_4_clients']:.2f}x"
        )
    write_results("serve_bench", results)
    if any(r["errors"] for r in results.values()):
        sys.exit("errors under load: see the JSON")


if __name__ == "__main__":
    main()
