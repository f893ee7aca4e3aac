"""Training benchmark: the notebook models on the full Fashion-MNIST, with and without MLflow.

For each model it trains, side by side in one run, (a) the notebook's default path (MLflow
autolog on, the notebook's settings) and (b) the same network and settings without MLflow, and
reports seconds per epoch, training images per second and test accuracy, plus the tracking
overhead (a/b - 1). Each configuration runs in its own subprocess (TensorFlow and torch are not
imported together) against a throw-away MLflow store.

    .venv/bin/python benchmarks/train_bench.py --data ../shared/data/fashion-mnist
    .venv/bin/python benchmarks/train_bench.py --models keras --epochs 1   # quick look

Results are printed as a table and written to benchmarks/results/train_bench.json.
Run it on a quiet machine: the figures are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def keras_run(data_dir: str, epochs: int, batch_size: int, tracked: bool, schedule: str) -> dict:
    """Train the course CNN as notebook 01 does; returns timings and test accuracy."""
    import math

    import keras
    import mlflow

    from dltrack import data, models, tracking

    data.prepare_keras_fashion_mnist(data_dir)
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x_train, x_test = data.scale_images(x_train), data.scale_images(x_test)
    y_train_1h, y_test_1h = (keras.utils.to_categorical(y, 10) for y in (y_train, y_test))
    keras.utils.set_random_seed(42)
    steps = math.ceil(len(x_train) / batch_size)
    model = models.build_course_cnn(lr_schedule=schedule, total_steps=epochs * steps)

    epoch_times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    def fit() -> None:
        model.fit(
            x_train, y_train_1h, epochs=epochs, batch_size=batch_size,
            validation_data=(x_test, y_test_1h), callbacks=[Timer()], verbose=0,
        )  # fmt: skip

    if tracked:
        tracking.setup_tracking()
        tracking.get_or_create_experiment("bench-keras")
        mlflow.tensorflow.autolog(log_models=False, checkpoint=False)
        with mlflow.start_run():
            fit()
    else:
        fit()
    _, accuracy = model.evaluate(x_test, y_test_1h, verbose=0)
    return {
        "epoch_seconds": epoch_times,
        "train_images": len(x_train),
        "test_accuracy": float(accuracy),
    }


RUNNERS = {"keras": keras_run}
DEFAULT_EPOCHS = {"keras": 10, "lightning": 5}
DEFAULT_BATCH = {"keras": 32, "lightning": 64}


def _child(args: argparse.Namespace) -> None:
    result = RUNNERS[args.child](
        args.data, args.epochs, args.batch_size, args.tracked, args.schedule
    )
    print("RESULT " + json.dumps(result))


def _spawn(model: str, tracked: bool, args: argparse.Namespace, store: Path) -> dict:
    epochs = args.epochs or DEFAULT_EPOCHS[model]
    command = [
        sys.executable, __file__, "--child", model, "--data", args.data,
        "--epochs", str(epochs), "--batch-size", str(DEFAULT_BATCH[model]),
        "--schedule", args.schedule,
    ] + (["--tracked"] if tracked else [])  # fmt: skip
    env = dict(
        os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}", TF_CPP_MIN_LOG_LEVEL="2"
    )
    started = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{model} tracked={tracked} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    seconds = result["epoch_seconds"]
    # the first epoch includes graph tracing / warm-up; report the mean of the others too
    steady = seconds[1:] or seconds
    result.update(
        model=model, path="notebook default (MLflow autolog)" if tracked else "same, no MLflow",
        epochs=epochs, batch_size=DEFAULT_BATCH[model], wall_seconds=time.perf_counter() - started,
        seconds_per_epoch=sum(seconds) / len(seconds),
        steady_seconds_per_epoch=sum(steady) / len(steady),
        images_per_second=result["train_images"] / (sum(steady) / len(steady)),
    )  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("DLTRACK_FASHION_MNIST_DIR", "../shared/data/fashion-mnist"),
    )
    parser.add_argument("--models", default="keras", help="comma-separated: " + ", ".join(RUNNERS))
    parser.add_argument(
        "--epochs", type=int, default=0, help="0 = the notebook's (keras 10, lightning 5)"
    )
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--tracked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as store:
        for model in args.models.split(","):
            for tracked in (True, False):
                print(
                    f"training {model} ({'with' if tracked else 'without'} MLflow) ...", flush=True
                )
                results.append(_spawn(model, tracked, args, Path(store)))
    print(f"\n{'model':10s} {'path':36s} {'ep':>3s} {'s/epoch':>8s} {'img/s':>8s} {'test acc':>9s}")
    for r in results:
        print(
            f"{r['model']:10s} {r['path']:36s} {r['epochs']:3d} {r['steady_seconds_per_epoch']:8.1f} "
            f"{r['images_per_second']:8.0f} {r['test_accuracy'] * 100:8.2f}%"
        )
    for model in args.models.split(","):
        a, b = (
            next(r for r in results if r["model"] == model and r["path"].startswith(p))
            for p in ("notebook", "same")
        )
        print(
            f"{model}: tracking overhead {100 * (a['steady_seconds_per_epoch'] / b['steady_seconds_per_epoch'] - 1):+.1f} %"
        )
    out = HERE / "results" / "train_bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
