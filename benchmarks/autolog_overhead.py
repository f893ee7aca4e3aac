"""What MLflow autolog itself costs: tracked and untracked fits alternating in one process.

    .venv/bin/python benchmarks/autolog_overhead.py            # or: make bench-autolog

``train_bench.py`` compares whole configurations, each in its own process. Here two processes
with the same Lightning code differed by 12-19 % in every epoch, once in each direction (docs/model-quality.md),
which hides a cost of a few per cent. This benchmark removes that: in one process
per framework it fits the notebook's network again and again, alternating
``autolog(disable=True)`` and autolog on exactly as the notebooks call it (tracked fits inside
``mlflow.start_run()`` against a SQLite store), each fit one epoch of ``--steps`` training
batches of the full data plus a short validation (2,000 images for Keras, 20 batches for
Lightning). Each pair runs in alternating order (untracked first, then tracked first), after
one warm-up fit of each kind. Short epochs make it an upper bound: autolog's cost
is per epoch and per run (metrics at epoch end, parameters at the start, run bookkeeping), so
it weighs more against 200 steps than against a real epoch of 860 or 1,875 (``--steps 1875``
for Keras, ``--steps 860`` for Lightning measure real epochs).

It prints, per framework, the median time of the tracked and untracked fits, the median of the
per-pair differences and ratios (each tracked fit against the untracked fit next to it),
and an upper bound for the notebook's full run (10 epochs of 1,875 batches for Keras, 5 of 860
for Lightning, at the untracked fits' speed): the whole cost of one fit paid again every epoch;
writes benchmarks/results/autolog_overhead.json.
Target (issue 3): tracking under 5 % of training time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import parser_with_data, write_results  # benchmarks/_results.py


def _pairs(fit, rounds: int) -> list[tuple[float, float]]:
    """Warm both paths up, then (untracked, tracked) seconds per round, order alternating."""
    fit(False), fit(True)  # first-time imports, tracing, MLflow's first writes
    pairs = []
    for round_ in range(rounds):
        if round_ % 2:
            tracked = fit(True)
            pairs.append((fit(False), tracked))
        else:
            untracked = fit(False)
            pairs.append((untracked, fit(True)))
    return pairs


def keras_fits(data_dir: str, steps: int, rounds: int) -> list[tuple[float, float]]:
    """(untracked seconds, tracked seconds) per round for the notebook 01 model."""
    import keras
    import mlflow

    from dltrack import data
    from dltrack.models.keras_cnn import build_course_cnn

    data.prepare_keras_fashion_mnist(data_dir)
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x = (x_train[: steps * 32] / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    y = keras.utils.to_categorical(y_train[: steps * 32], 10)
    val = (
        (x_test[:2000] / 255.0).astype("float32").reshape(-1, 28, 28, 1),
        keras.utils.to_categorical(y_test[:2000], 10),
    )

    def fit(tracked: bool) -> float:
        keras.backend.clear_session()  # no graphs piling up from one fit to the next
        keras.utils.set_random_seed(42)
        model = build_course_cnn(total_steps=steps)
        mlflow.tensorflow.autolog(log_models=False, checkpoint=False, disable=not tracked)
        started = time.perf_counter()
        if tracked:
            with mlflow.start_run():
                model.fit(x, y, epochs=1, batch_size=32, validation_data=val, verbose=0)
        else:
            model.fit(x, y, epochs=1, batch_size=32, validation_data=val, verbose=0)
        return time.perf_counter() - started

    return _pairs(fit, rounds)


def lightning_fits(data_dir: str, steps: int, rounds: int) -> list[tuple[float, float]]:
    """(untracked seconds, tracked seconds) per round for the notebook 02 model."""
    import lightning as L
    import mlflow

    from dltrack.models.lightning_cnn import FashionMNISTCNN, FashionMNISTDataModule

    datamodule = FashionMNISTDataModule(data_dir, batch_size=64, seed=42)
    datamodule.prepare_data()
    datamodule.setup()

    def fit(tracked: bool) -> float:
        L.seed_everything(42, verbose=False)
        model = FashionMNISTCNN()
        trainer = L.Trainer(
            max_epochs=1, limit_train_batches=steps, limit_val_batches=20, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        mlflow.pytorch.autolog(log_models=False, checkpoint=False, disable=not tracked)
        started = time.perf_counter()
        if tracked:
            with mlflow.start_run():
                trainer.fit(model, datamodule=datamodule)
        else:
            trainer.fit(model, datamodule=datamodule)
        return time.perf_counter() - started

    return _pairs(fit, rounds)


RUNNERS = {"keras": keras_fits, "lightning": lightning_fits}
#: The notebooks' full runs: (epochs, training batches per epoch).
FULL_RUN = {"keras": (10, 1875), "lightning": (5, 860)}


def main() -> None:
    parser = parser_with_data(__doc__)
    parser.add_argument("--models", default="keras,lightning", help="comma-separated")
    parser.add_argument("--steps", type=int, default=200, help="training batches per fit")
    parser.add_argument("--rounds", type=int, default=5, help="untracked/tracked pairs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import mlflow

        from dltrack import tracking

        for name in ("lightning.pytorch", "mlflow"):
            logging.getLogger(name).setLevel(logging.ERROR)
        mlflow.set_tracking_uri(tracking.tracking_uri())
        tracking.prepare_experiment(f"autolog-overhead-{args.child}")
        mlflow.set_experiment(f"autolog-overhead-{args.child}")
        pairs = RUNNERS[args.child](args.data, args.steps, args.rounds)
        print("RESULT " + json.dumps(pairs), flush=True)
        mlflow.end_run()
        return

    results = {}
    with tempfile.TemporaryDirectory() as store:
        for model in args.models.split(","):
            print(f"{model}: {args.rounds} pairs of {args.steps}-step fits ...", flush=True)
            env = dict(
                os.environ,
                MLFLOW_TRACKING_URI=f"sqlite:///{Path(store) / 'mlflow.db'}",
                TF_CPP_MIN_LOG_LEVEL="2",
            )
            command = [sys.executable, __file__, "--child", model, "--data", args.data,
                       "--steps", str(args.steps), "--rounds", str(args.rounds)]  # fmt: skip
            out = subprocess.run(command, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{model} failed:\n{out.stderr[-3000:]}")
            line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
            pairs = json.loads(line[len("RESULT ") :])
            results[model] = {
                "steps": args.steps,
                "pairs_seconds": pairs,
                "untracked_median_s": statistics.median(p[0] for p in pairs),
                "tracked_median_s": statistics.median(p[1] for p in pairs),
                "overhead": statistics.median(t / u for u, t in pairs) - 1,
                "cost_seconds": statistics.median(t - u for u, t in pairs),
            }
            # autolog's cost is per run and per epoch, not per step: at most one fit's cost
            # again in every epoch of the notebook's full run
            epochs, steps = FULL_RUN[model]
            full_run_s = epochs * steps * results[model]["untracked_median_s"] / args.steps
            bound = epochs * results[model]["cost_seconds"] / full_run_s
            results[model]["full_run_overhead_bound"] = bound
    for model, r in results.items():
        print(
            f"{model:10s} untracked {r['untracked_median_s']:6.2f} s, tracked "
            f"{r['tracked_median_s']:6.2f} s per {r['steps']}-step fit (median of "
            f"{len(r['pairs_seconds'])} pairs): autolog costs {r['cost_seconds']:+.2f} s per fit, "
            f"{100 * r['overhead']:+.1f} % of this fit, at most {100 * r['full_run_overhead_bound']:+.1f} %"
            f" of the notebook's full run (target < 5 %)"
        )
    write_results("autolog_overhead", results)


if __name__ == "__main__":
    main()
