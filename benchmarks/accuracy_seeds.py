"""Test accuracy of notebooks 01 and 02 on the full data, over several seeds, by profile.

    .venv/bin/python benchmarks/accuracy_seeds.py --data ../shared/data/fashion-mnist   # or: make bench-accuracy
    .venv/bin/python benchmarks/accuracy_seeds.py --data ... --profiles default,course  # make bench-profiles

Each notebook runs end to end, as a learner runs it (nbclient, its own kernel, a throw-away
MLflow store), once per seed with ``DLTRACK_SEED`` and per profile with ``DLTRACK_PROFILE``
("default", or "course": every value as the course recorded it); nothing else is changed.
``--epochs`` and ``--models`` shrink a trial run. The accuracy is the
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

#: The parameters a profile sets; each would override it.
OVERRIDES = (
    "DLTRACK_LEARNING_RATE", "DLTRACK_LR_SCHEDULE", "DLTRACK_DROPOUT", "DLTRACK_MEMORY_FORMAT",
    "DLTRACK_STEPS_PER_EXECUTION", "DLTRACK_BATCH_SIZE",
)  # fmt: skip

NOTEBOOKS = {
    "keras": ("01_tensorflow_fashion_mnist.ipynb", "fashion_images_prediction_tf", "keras-cnn"),
    "lightning": (
        "02_pytorch_lightning_fashion_mnist.ipynb",
        "fashion_images_prediction_pytorch",
        "lightning-cnn",
    ),
}


def run_seed(
    model: str,
    seed: int,
    data_dir: Path,
    store: Path,
    profile: str = "default",
    epochs: int | None = None,
) -> tuple[float, float]:
    """Run the model's notebook with ``seed`` and ``profile`` (``tools/notebooks.py``, as
    ``make demo`` does), with the notebook's epochs unless ``epochs``; return (test accuracy,
    seconds).

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
        DLTRACK_PROFILE=profile,
    )
    env.pop("DLTRACK_EPOCHS", None)  # the notebook's default
    for name in OVERRIDES:  # the profile's values, not a variable left in the shell
        env.pop(name, None)
    if epochs is not None:
        env["DLTRACK_EPOCHS"] = str(epochs)
    started = time.perf_counter()
    root = project_root()
    subprocess.run(
        [sys.executable, str(root / "tools" / "notebooks.py"), str(root / "notebooks" / notebook)],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name(experiment).experiment_id],
        filter_string=(
            f"attributes.run_name = '{run_name}' and params.seed = '{seed}'"
            f" and params.profile = '{profile}'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].data.metrics["accuracy_score"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the full data set")
    parser.add_argument("--models", default="keras,lightning")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--profiles", default="default", help="default, course, or both")
    parser.add_argument("--epochs", type=int, default=None, help="default: the notebook's")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="dltrack-accuracy-") as tmp:
        for profile in args.profiles.split(","):
            for model in args.models.split(","):
                accuracies = {}
                for seed in seeds:
                    accuracy, seconds = run_seed(
                        model, seed, args.data.resolve(), Path(tmp), profile, args.epochs
                    )
                    accuracies[seed] = accuracy
                    print(f"{profile} {model} seed {seed}: test accuracy {accuracy:.4f}"
                          f" ({seconds:.0f} s)")  # fmt: skip
                values = list(accuracies.values())
                summary = {
                    "seeds": accuracies,
                    "mean": statistics.mean(values),
                    "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "epochs": args.epochs or "notebook default",
                }
                results[f"{profile}/{model}"] = summary
                print(
                    f"{profile} {model}: mean {summary['mean']:.2%}, standard deviation "
                    f"{summary['stdev']:.2%}, lowest {summary['min']:.2%} over seeds {seeds}"
                )
    name = "accuracy_seeds" if args.profiles == "default" else "accuracy_profiles"
    write_results(name, results)


if __name__ == "__main__":
    main()
