"""Test accuracy of notebooks 01 and 02 with their defaults on the full data, over several seeds.

    .venv/bin/python benchmarks/accuracy_seeds.py --data ../shared/data/fashion-mnist   # or: make bench-accuracy

Each notebook runs end to end, as a learner runs it (nbclient, its own kernel, a throw-away
MLflow store), once per seed with ``DLTRACK_SEED``; nothing else is changed. The accuracy is the
``accuracy_score`` that ``mlflow.models.evaluate`` logged for the run (10,000 test images).
Prints each seed, the mean, the sample standard deviation and the lowest seed, and writes
benchmarks/results/accuracy_seeds.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _results import write_results  # benchmarks/_results.py

NOTEBOOKS = {
    "keras": ("01_tensorflow_fashion_mnist.ipynb", "fashion_images_prediction_tf", "keras-cnn"),
    "lightning": (
        "02_pytorch_lightning_fashion_mnist.ipynb",
        "fashion_images_prediction_pytorch",
        "lightning-cnn",
    ),
}


def run_seed(model: str, seed: int, data_dir: Path, store: Path) -> tuple[float, float]:
    """Run the model's notebook with ``seed`` (``tools/notebooks.py``, as ``make demo`` does);
    return (test accuracy, seconds).

    Raises:
        subprocess.CalledProcessError: the notebook failed.
    """
    import subprocess
    import sys

    import mlflow

    from dltrack.config import project_root

    notebook, experiment, run_name = NOTEBOOKS[model]
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=uri,
        DLTRACK_SEED=str(seed),
        DLTRACK_FASHION_MNIST_DIR=str(data_dir),
        KERAS_HOME=str(store / "keras"),
    )
    env.pop("DLTRACK_EPOCHS", None)  # the notebook's default
    started = time.perf_counter()
    root = project_root()
    subprocess.run(
        [sys.executable, str(root / "tools" / "notebooks.py"), str(root / "notebooks" / notebook)],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name(experiment).experiment_id],
        filter_string=f"attributes.run_name = '{run_name}' and params.seed = '{seed}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].data.metrics["accuracy_score"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the full data set")
    parser.add_argument("--models", default="keras,lightning")
    parser.add_argument("--seeds", default="42,43,44")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="dltrack-accuracy-") as tmp:
        for model in args.models.split(","):
            accuracies = {}
            for seed in seeds:
                accuracy, seconds = run_seed(model, seed, args.data.resolve(), Path(tmp))
                accuracies[seed] = accuracy
                print(f"{model} seed {seed}: test accuracy {accuracy:.4f} ({seconds:.0f} s)")
            values = list(accuracies.values())
            results[model] = {
                "seeds": accuracies,
                "mean": statistics.mean(values),
                "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
            }
            summary = results[model]
            print(
                f"{model}: mean {summary['mean']:.2%}, standard deviation "
                f"{summary['stdev']:.2%}, lowest {summary['min']:.2%} over seeds {seeds}"
            )
    write_results("accuracy_seeds", results)


if __name__ == "__main__":
    main()
