"""Notebook 06's sweep, side by side in one run: the same N trials with 1 worker process and with
2, the cores split fairly (1 worker: 2 torch threads; 2 workers: 1 thread each), in a throw-away
store. The N points of the search space are drawn once (a seeded random sampler) and enqueued in
both studies, so both runs train exactly the same trials. Reports the wall-time ratio (target:
2 workers <= 0.6x of 1 worker on 2 cores) and the best accuracy the sweep found against
notebook 02's defaults trained on the same budget (the same data and seed, N x epochs epochs),
on the validation images the sweep selects by and on the test images.

Pruning is off (``--prune-below 0``) so that both runs train every trial to the end: the timing
compares the same work. The machine's load average is printed before and after: on a shared
machine the ratio moves with it.

    python benchmarks/sweep_bench.py [--data DIR] [--trials 4] [--epochs 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import torch
from _results import write_results

from dltrack import sweeps, tracking
from dltrack.models.lightning_cnn import FashionMNISTCNN, FashionMNISTDataModule

#: Notebook 02's defaults, as one trial of the search space.
NOTEBOOK_02 = {"learning_rate": 1e-3, "dropout_rate": 0.25, "batch_size": 64, "hidden_units": 600}


def draw_trials(trials: int, seed: int = 0) -> list[dict]:
    """``trials`` points of notebook 06's search space (:func:`dltrack.sweeps.suggest`), drawn
    by Optuna's random sampler with ``seed``."""
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points = []
    for _ in range(trials):
        trial = draws.ask()
        points.append(sweeps.suggest(trial))
        draws.tell(trial, 0.0)
    return points


def sweep(
    name: str, points: list[dict], workers: int, epochs: int, data: str, threads: int
) -> dict:
    """Train the trials ``points`` (enqueued in a new study) with ``workers`` worker processes;
    wall time and the best completed trial."""
    storage = sweeps.default_storage()
    study = optuna.create_study(
        study_name=name, storage=sweeps.study_storage(storage), direction="maximize"
    )
    for point in points:
        study.enqueue_trial(point)
    trials = len(points)
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    with mlflow.start_run(run_name=name) as parent:
        launched = datetime.datetime.now()
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, *sweeps.worker_command(
                    name, parent.info.run_id, trials=share, epochs=epochs, data_dir=data,
                    seed=i, threads=max(1, threads // workers), prune_below=0)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, **{sweeps.STORAGE_ENV_VAR: storage}),
            )
            for i, share in enumerate(shares)
        ]  # fmt: skip
        errors = [process.communicate()[1] for process in processes]
        seconds = time.perf_counter() - started
    if any(process.returncode for process in processes):
        raise RuntimeError(f"a worker of {name} failed:\n" + "\n".join(e[-2000:] for e in errors))
    best = study.best_trial
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trial_seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    return {
        "workers": workers, "threads_per_worker": max(1, threads // workers), "trials": trials,
        "seconds": round(seconds, 1),
        # launch to the first trial's start: importing torch, Lightning, MLflow, joining the study
        "start_up_seconds": round((min(t.datetime_start for t in done) - launched).total_seconds(), 1),
        "trial_seconds_mean": round(sum(trial_seconds) / len(trial_seconds), 1),
        "best_val_acc": round(best.value, 4), "best_params": best.params,
        "best_test_acc": round(test_accuracy(best, data), 4),
    }  # fmt: skip


def test_accuracy(trial: optuna.trial.FrozenTrial, data: str) -> float:
    """Test accuracy of a completed trial's weights (from its child run)."""
    weights = mlflow.artifacts.download_artifacts(
        run_id=trial.user_attrs["mlflow_run_id"], artifact_path=sweeps.WEIGHTS
    )
    model = FashionMNISTCNN(
        dropout_rate=trial.params["dropout_rate"], hidden_units=trial.params["hidden_units"]
    )
    model.load_state_dict(torch.load(weights))
    model.eval()
    datamodule = FashionMNISTDataModule(data)
    datamodule.setup()
    images, labels = datamodule.test_set.tensors
    with torch.inference_mode():
        return float((model(images).argmax(dim=1) == labels).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="", help='Fashion-MNIST folder ("" = shipped subset)')
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dltrack-sweep-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ.pop("DLTRACK_OPTUNA_STORAGE", None)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(experiment_id=tracking.prepare_experiment("sweep-bench"))
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} (1 min) on {os.cpu_count()} cores")
    points = draw_trials(args.trials)
    one = sweep("one-worker", points, 1, args.epochs, args.data, args.threads)
    two = sweep("two-workers", points, 2, args.epochs, args.data, args.threads)
    defaults = sweep("notebook-02-defaults", [NOTEBOOK_02], 1, args.epochs * args.trials, args.data,
                     args.threads)  # fmt: skip
    load_after = os.getloadavg()
    ratio = two["seconds"] / one["seconds"]
    for row in (one, two, defaults):
        print(row)
    print(f"wall time, 2 workers / 1 worker: {ratio:.2f} (target <= 0.6: "
          f"{'met' if ratio <= 0.6 else 'not met'})")  # fmt: skip
    # The ceiling of 2 workers on 2 cores: each trains its half of the trials on 1 thread, so
    # their wall time is at best half the trials x a 1-thread trial, against all trials x a
    # 2-thread trial: the ratio cannot beat (1-thread trial) / (2 x 2-thread trial).
    ceiling = two["trial_seconds_mean"] / (2 * one["trial_seconds_mean"])
    print(
        f"a trial: {one['trial_seconds_mean']} s on 2 threads, {two['trial_seconds_mean']} s on 1 "
        f"thread beside the other worker; best ratio 2 workers can reach: {ceiling:.2f}; "
        f"start-up {one['start_up_seconds']} s (1 worker), {two['start_up_seconds']} s (2)"
    )
    print(f"best val_acc: sweep {two['best_val_acc']:.4f} vs notebook 02's defaults "
          f"{defaults['best_val_acc']:.4f}; test accuracy {two['best_test_acc']:.4f} vs "
          f"{defaults['best_test_acc']:.4f}")  # fmt: skip
    print(f"load average after: {load_after[0]:.2f} (1 min)")
    write_results("sweep_bench", {
        "data": args.data or "shipped subset", "epochs": args.epochs, "trials": points,
        "runs": [one, two], "notebook_02_defaults": defaults, "ratio_two_to_one": round(ratio, 3),
        "ratio_ceiling_from_trial_times": round(ceiling, 3),
        "load_average_before": load_before, "load_average_after": load_after,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
