"""Serving benchmark: how fast `mlflow models serve` answers for the notebook CNNs, by model and
request body, side by side in one run.

    .venv/bin/python benchmarks/serve_bench.py            # or: make bench-serve

For each CNN (the Keras CNN of notebook 01, the Lightning CNN of notebook 02; untrained and
seeded: latency does not depend on the weights) three models are logged and served at the same
time, each by the unchanged ``mlflow models serve`` on 127.0.0.1:

- flavor: ``mlflow.tensorflow.log_model`` / ``mlflow.pytorch.log_model(serialization_format="pt2")``,
  as notebooks 01 and 02 register them;
- fast: :mod:`dltrack.serving.fast` (one forward pass per request, input checks);
- MLflow floor: a pyfunc model that returns zeros at once (:func:`dltrack.serving.fast.log_floor_for_serving`):
  MLflow's own cost per request.

Rows, measured in one loop that takes them in turns (a1 b1 c1 ... a2 b2 c2 ...), so the
machine's changes of speed fall on all of them alike:

- (a) flavor + JSON, the course's request ``json.dumps({"inputs": x.tolist()})``;
- (b) flavor + Parquet (:func:`dltrack.serving.parquet_body`);
- (c) fast + Parquet, what :func:`dltrack.serving.predict` sends; (c') fast + JSON;
- MLflow floor + JSON, MLflow floor + Parquet;
- forward pass in process: the same network, same batch, no server (the floor for the model).

Each for 1 image and for 256 images (bodies built before timing; one keep-alive connection per
row; each turn starts with one untimed 1-image request to the same server, see
:mod:`dltrack.serving.timing`), as p50/p95 in ms; the largest difference between served predictions and the in-process
forward pass; requests per second with 4 concurrent 1-image clients for the served rows; the
target ratios with pass or fall-short. Results: a table (markdown, for docs/serving.md) and
benchmarks/results/serve_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

try:  # torch.export imports triton lazily; imported after TensorFlow, that crashes the process
    import triton  # noqa: F401
except ImportError:
    pass
from _results import write_results  # benchmarks/_results.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = (1, 256)
ROWS = {
    "a": "(a) flavor + JSON (course)",
    "b": "(b) flavor + Parquet",
    "c": "(c) fast + Parquet",
    "c_json": "(c') fast + JSON",
    "floor_json": "MLflow floor + JSON",
    "floor_parquet": "MLflow floor + Parquet",
    "forward": "forward pass in process",
}
#: The targets of issue 12, as ratios of p50s measured in this run.
TARGET_256_OVER_FORWARD = 2.0
TARGET_1_OVER_FLOOR = 1.5
TARGET_COURSE_OVER_FAST = 10.0


def _images(n: int):
    import keras

    from dltrack import data

    data.prepare_keras_fashion_mnist()
    (_, _), (x_test, _) = keras.datasets.fashion_mnist.load_data()
    return (x_test[:n] / 255.0).astype("float32").reshape(-1, 28, 28, 1)


def log_models(store: Path) -> dict:
    """Log the three models per CNN; return their URIs, the images and the forward passes."""
    import keras
    import mlflow
    import numpy as np
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from dltrack import tracking
    from dltrack.models.keras_cnn import build_course_cnn
    from dltrack.models.lightning_cnn import FashionMNISTCNN
    from dltrack.serving import fast

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    tracking.prepare_experiment("serve-bench")
    mlflow.set_experiment("serve-bench")
    images = _images(256)
    torch_images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    out = Schema([TensorSpec(np.dtype(np.float32), (-1, 10))])
    keras_sig = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1))]), out)
    torch_sig = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]), out)
    keras.utils.set_random_seed(0)
    keras_model = build_course_cnn(lr_schedule="constant")
    torch.manual_seed(0)
    torch_model = FashionMNISTCNN().eval()
    with mlflow.start_run():
        uris = {
            ("keras", "flavor"): mlflow.tensorflow.log_model(
                keras_model, name="keras-flavor", signature=keras_sig, input_example=images[:2]
            ).model_uri,
            ("keras", "fast"): fast.log_keras_for_serving(
                keras_model, name="keras-fast", signature=keras_sig, input_example=images[:2]
            ).model_uri,
            ("keras", "floor"): fast.log_floor_for_serving(
                name="keras-floor", signature=keras_sig, input_example=images[:2]
            ).model_uri,
            ("lightning", "flavor"): mlflow.pytorch.log_model(
                torch_model, name="torch-flavor", signature=torch_sig,
                input_example=torch_images[:4], serialization_format="pt2",
            ).model_uri,
            ("lightning", "fast"): fast.log_torch_for_serving(
                torch_model, name="torch-fast", signature=torch_sig, input_example=torch_images[:4]
            ).model_uri,
            ("lightning", "floor"): fast.log_floor_for_serving(
                name="torch-floor", signature=torch_sig, input_example=torch_images[:2]
            ).model_uri,
        }  # fmt: skip
    keras_forward = (
        tf.function(  # what the fast model runs (dltrack/serving/pyfunc/keras_forward.py)
            lambda x: keras_model(x, training=False),
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
        ).get_concrete_function()
    )
    exported = torch.export.export(
        torch_model,
        (torch.from_numpy(torch_images[:4]),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    ).module()

    def torch_forward(batch):
        with torch.inference_mode():
            return exported(torch.from_numpy(batch)).numpy()

    return {
        "uris": uris,
        "images": {"keras": images, "lightning": torch_images},
        "forward": {
            "keras": lambda batch: keras_forward(tf.constant(batch)).numpy(),
            "lightning": torch_forward,
        },
    }


def _pcts(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=20, method="inclusive")
    return {"p50": statistics.median(times), "p95": q[18], "n": len(times)}


def _requests(images, urls: dict[str, str]) -> dict[int, dict[str, tuple[str, bytes, str]]]:
    """Per batch size and row: (url, body, content type), built before any timing."""
    from dltrack.serving import PARQUET, inputs_json, parquet_body

    plans = {}
    for n in SIZES:
        batch = images[:n]
        course = json.dumps({"inputs": batch.tolist()}).encode()
        plans[n] = {
            "a": (urls["flavor"], course, "application/json"),
            "b": (urls["flavor"], parquet_body(batch), PARQUET),
            "c": (urls["fast"], parquet_body(batch), PARQUET),
            "c_json": (urls["fast"], inputs_json(batch), "application/json"),
            "floor_json": (urls["floor"], course, "application/json"),
            "floor_parquet": (urls["floor"], parquet_body(batch), PARQUET),
        }
    return plans


def measure(images, forward, urls: dict[str, str], reps: dict[int, int]) -> dict:
    """Every row in turns (:func:`dltrack.serving.time_in_turns`): per batch size, rounds of
    one untimed 1-image call to the row's server (or forward pass), then the timed calls
    (blocks of 5 for 1 image, 1 for 256 images). Returns the times (ms) and the largest
    difference between served predictions and the in-process forward pass."""
    import numpy as np
    import requests

    from dltrack.serving import time_in_turns

    plans = _requests(images, urls)
    sessions = {row: requests.Session() for row in ROWS}

    def post(row: str, n: int):
        url, body, content_type = plans[n][row]
        reply = sessions[row].post(
            url, data=body, headers={"Content-Type": content_type}, timeout=120
        )
        if reply.status_code != 200:
            raise RuntimeError(f"{row}: HTTP {reply.status_code}: {reply.text[:300]}")
        return reply

    results: dict = {}
    try:
        for n in SIZES:
            batch = images[:n]
            calls = {row: (lambda row=row, n=n: post(row, n)) for row in ROWS if row != "forward"}
            calls["forward"] = lambda batch=batch: forward(batch)
            primers = {row: (lambda row=row: post(row, 1)) for row in ROWS if row != "forward"}
            primers["forward"] = lambda: forward(images[:1])
            block = 5 if n == 1 else 1
            times = time_in_turns(
                calls, rounds=max(1, reps[n] // block), block=block, warmup=2, primers=primers
            )
            reference = forward(batch)
            diffs = {
                row: float(np.abs(np.asarray(post(row, n).json()["predictions"], np.float32) - reference).max())
                for row in ROWS if row not in ("forward", "floor_json", "floor_parquet")
            }  # fmt: skip
            results[n] = {"times": times, "max_abs_diff": diffs}
    finally:
        for session in sessions.values():
            session.close()
    return results


def throughput(url: str, body: bytes, content_type: str, clients: int, per_client: int) -> float:
    """Requests per second with ``clients`` concurrent keep-alive clients."""
    import requests

    errors: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            for _ in range(per_client):
                reply = session.post(
                    url, data=body, headers={"Content-Type": content_type}, timeout=120
                )
                if reply.status_code != 200:
                    errors.append(str(reply.status_code))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"errors under load: {errors[:5]}")
    return clients * per_client / (time.perf_counter() - start)


def encode_times(images) -> dict[str, float]:
    """Client side: p50 ms to build each 256-image body."""
    from dltrack.serving import inputs_json, parquet_body

    ways = {
        "JSON, json.dumps(x.tolist()) (course)": lambda: json.dumps({"inputs": images.tolist()}),
        "JSON, dltrack.serving.inputs_json (orjson)": lambda: inputs_json(images),
        "Parquet, dltrack.serving.parquet_body": lambda: parquet_body(images),
    }
    out = {}
    for name, make in ways.items():
        make()
        times = []
        for _ in range(10):
            start = time.perf_counter()
            make()
            times.append((time.perf_counter() - start) * 1000)
        out[name] = statistics.median(times)
    return out


def targets(results: dict) -> list[dict]:
    """The three target ratios of issue 12, from this run's p50s."""
    # (label, batch size, numerator row, denominator row, limit, the ratio must be at most the limit)
    checks = [
        (
            "256 images, (c) fast + Parquet / forward pass in process",
            256,
            "c",
            "forward",
            TARGET_256_OVER_FORWARD,
            True,
        ),
        (
            "1 image, (c) fast + Parquet / MLflow floor + Parquet",
            1,
            "c",
            "floor_parquet",
            TARGET_1_OVER_FLOOR,
            True,
        ),
        (
            "1 image, (c) fast + Parquet / MLflow floor + JSON (the lower floor)",
            1,
            "c",
            "floor_json",
            TARGET_1_OVER_FLOOR,
            True,
        ),
        (
            "1 image, (c') fast + JSON / MLflow floor + JSON (same body)",
            1,
            "c_json",
            "floor_json",
            TARGET_1_OVER_FLOOR,
            True,
        ),
    ]
    rows = []
    for model, r in results.items():
        p50 = {n: {row: r["latency"][n][row]["p50"] for row in ROWS} for n in SIZES}
        model_checks = checks + (
            [
                (
                    "256 images, (a) course's way / (c) fast + Parquet",
                    256,
                    "a",
                    "c",
                    TARGET_COURSE_OVER_FAST,
                    False,
                )
            ]
            if model == "keras"
            else []
        )
        for label, n, num, den, limit, at_most in model_checks:
            ratio = p50[n][num] / p50[n][den]
            rows.append(
                {
                    "target": f"{model}: {label}",
                    "ratio": ratio,
                    "limit": limit,
                    "at_most": at_most,
                    "met": ratio <= limit if at_most else ratio >= limit,
                }
            )
    return rows


def report(results: dict, goals: list[dict], encode: dict[str, float], reps: dict[int, int]) -> str:
    """The docs/serving.md table (markdown) and the target lines."""
    lines = [
        "| model | request | 1 image p50 / p95 (ms) | 256 images p50 / p95 (ms) | "
        "req/s, 4 clients | max abs diff |",
        "|---|---|---|---|---:|---:|",
    ]
    for model, r in results.items():
        for row, label in ROWS.items():
            one, many = r["latency"][1][row], r["latency"][256][row]
            rps = r["rps"].get(row)
            diff = r["max_abs_diff"].get(row)
            lines.append(
                f"| {model} | {label} | {one['p50']:.1f} / {one['p95']:.1f} | "
                f"{many['p50']:.0f} / {many['p95']:.0f} | {'-' if rps is None else f'{rps:.0f}'} | "
                f"{'-' if diff is None else f'{diff:.0e}'} |"
            )
    lines += ["", f"Requests per row: {reps[1]} x 1 image, {reps[256]} x 256 images, in turns.", ""]
    for goal in goals:
        sign = "<=" if goal["at_most"] else ">="
        verdict = "met" if goal["met"] else "FALLS SHORT"
        lines.append(
            f"- {goal['target']}: **{goal['ratio']:.2f}** (target {sign} {goal['limit']:g}): {verdict}"
        )
    lines += ["", "Client side, building a 256-image body (p50 ms): " + ", ".join(
        f"{name} {ms:.1f}" for name, ms in encode.items())]  # fmt: skip
    return "\n".join(lines)


def machine() -> str:
    """The CPU model and count, e.g. "AMD EPYC 7B13, 2 CPUs"."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="keras,lightning", help="comma-separated")
    parser.add_argument("--small", type=int, default=200, help="1-image requests per row")
    parser.add_argument("--large", type=int, default=20, help="256-image requests per row")
    parser.add_argument("--clients", type=int, default=4, help="0: skip the req/s measurement")
    parser.add_argument("--per-client", type=int, default=100, help="1-image requests per client")
    args = parser.parse_args()
    from dltrack.serving import ModelServer

    reps = {1: args.small, 256: args.large}
    models = args.models.split(",")
    results: dict = {}
    with tempfile.TemporaryDirectory() as store:
        logged = log_models(Path(store))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(store) / 'mlflow.db'}"
        encode = encode_times(logged["images"]["keras"])
        for model in models:
            servers = {
                kind: ModelServer(logged["uris"][(model, kind)])
                for kind in ("flavor", "fast", "floor")
            }
            print(f"{model}: starting 3 servers ...", flush=True)
            try:
                for server in servers.values():
                    server.start()
                urls = {kind: f"{s.url}/invocations" for kind, s in servers.items()}
                images, forward = logged["images"][model], logged["forward"][model]
                print(f"{model}: measuring ...", flush=True)
                measured = measure(images, forward, urls, reps)
                rps = {}
                if args.clients:
                    plans = _requests(images, urls)[1]
                    for row in ("a", "b", "c", "c_json"):
                        rps[row] = throughput(*plans[row], args.clients, args.per_client)
            finally:
                for server in servers.values():
                    server.stop()
            results[model] = {
                "latency": {n: {row: _pcts(t) for row, t in measured[n]["times"].items()} for n in SIZES},
                "max_abs_diff": measured[256]["max_abs_diff"],
                "max_abs_diff_1": measured[1]["max_abs_diff"],
                "rps": rps,
            }  # fmt: skip
    goals = targets(results)
    print()
    print(report(results, goals, encode, reps))
    print(f"\nmachine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end")
    write_results(
        "serve_bench",
        {
            "results": results,
            "targets": goals,
            "client_encode_ms": encode,
            "requests": reps,
            "machine": machine(),
        },
    )
    if not all(goal["met"] for goal in goals):
        print("some targets fall short: see above", file=sys.stderr)


if __name__ == "__main__":
    main()
