"""Training benchmark: the notebook models on the full Fashion-MNIST, with and without MLflow.

For each model it trains, side by side in one run, (a) the notebook's default path (MLflow
autolog on, the notebook's settings) and (b) the same network and settings without MLflow, and
reports seconds per epoch, training images per second and test accuracy, plus the tracking
overhead (a/b - 1); and (c) the course-style code for comparison. Each configuration runs in
its own subprocess (TensorFlow and torch are not imported together) against a throw-away MLflow
store, and the configurations take turns epoch by epoch (a1 b1 c1 a2 b2 c2 ...): only one trains
at any time, and the machine's drift (on a shared 2-core VM the same epoch took 20 s or 41 s
from one minute to the next) falls on all of them alike. Ratios are medians of per-epoch ratios
between neighbouring epochs. An epoch's time is everything its process does from the start of
that epoch to the start of the next: training, validation and the tracking calls at epoch end.

    .venv/bin/python benchmarks/train_bench.py --data ../shared/data/fashion-mnist
    .venv/bin/python benchmarks/train_bench.py --models keras --epochs 1   # quick look

Results are printed as a table and written to benchmarks/results/train_bench.json.
The figures are wall-clock seconds; a quiet machine still gives steadier ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import parser_with_data, write_results  # benchmarks/_results.py


def keras_run(data_dir: str, epochs: int, batch_size: int, variant: str) -> dict:
    """Train the course CNN; returns per-epoch seconds and test accuracy.

    variant "default": notebook 01 (autolog with log_models=False, checkpoint=False; cosine rate);
    "no-mlflow": the same without MLflow; "course": the course's way (autolog() with its
    defaults but log_models=False, which saves a checkpoint every epoch; constant rate).
    """
    tracked = variant != "no-mlflow"
    schedule = "constant" if variant == "course" else "cosine"
    import math

    import keras
    import mlflow

    from dltrack import data, tracking
    from dltrack.models.keras_cnn import build_course_cnn

    data.prepare_keras_fashion_mnist(data_dir)
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x_train, x_test = (
        (x / 255.0).astype("float32").reshape(-1, 28, 28, 1) for x in (x_train, x_test)
    )
    y_train_1h, y_test_1h = (keras.utils.to_categorical(y, 10) for y in (y_train, y_test))
    keras.utils.set_random_seed(42)
    steps = math.ceil(len(x_train) / batch_size)
    model = build_course_cnn(
        lr_schedule=schedule,
        total_steps=epochs * steps,
        steps_per_execution=1 if variant == "course" else 64,
    )

    class Turns(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            _wait_turn(f"epoch {epoch + 1}")

    def fit() -> None:
        model.fit(
            x_train, y_train_1h, epochs=epochs, batch_size=batch_size,
            validation_data=(x_test, y_test_1h), callbacks=[Turns()], verbose=0,
        )  # fmt: skip
        _wait_turn("test")  # inside the run, as for Lightning: closing it is timed in "test"

    if tracked:
        mlflow.set_tracking_uri(tracking.tracking_uri())
        tracking.prepare_experiment("bench-keras")
        mlflow.set_experiment("bench-keras")
        mlflow.tensorflow.autolog(log_models=False, checkpoint=variant == "course")
        with mlflow.start_run():
            fit()
    else:
        fit()
    _, accuracy = model.evaluate(x_test, y_test_1h, verbose=0)
    return {
        "train_images": len(x_train),
        "test_accuracy": float(accuracy),
    }


def lightning_run(data_dir: str, epochs: int, batch_size: int, variant: str) -> dict:
    """Train the course Lightning CNN; returns per-epoch seconds and test accuracy.

    variant "default": notebook 02 (in-memory tensors, no loader workers, per-epoch logging,
    Adam 1e-3, Dropout; autolog with log_models=False, checkpoint=False); "no-mlflow": the same
    without MLflow; "course": the course's way (ToTensor() datasets through 2 loader workers,
    Adam 0.02, Dropout2d, PyTorch's default memory format, autolog() defaults but
    log_models=False, Lightning's default logger
    and checkpointing).
    """
    import lightning as L
    import mlflow
    import torch
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets, transforms

    from dltrack import tracking
    from dltrack.models.lightning_cnn import (
        COURSE_LEARNING_RATE,
        FashionMNISTCNN,
        FashionMNISTDataModule,
    )

    L.seed_everything(42)

    class Turns(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            _wait_turn(f"epoch {trainer.current_epoch + 1}")

    datamodule = FashionMNISTDataModule(data_dir, batch_size=batch_size, seed=42)
    datamodule.prepare_data()
    datamodule.setup()
    if variant == "course":
        model = FashionMNISTCNN(
            learning_rate=COURSE_LEARNING_RATE,
            dropout="dropout2d",
            lr_schedule="constant",
            memory_format="contiguous",
        )
        full = datasets.FashionMNIST(datamodule.root, train=True, transform=transforms.ToTensor())
        test = datasets.FashionMNIST(datamodule.root, train=False, transform=transforms.ToTensor())
        n_val = round(len(full) / 12)
        train, val = random_split(
            full, [len(full) - n_val, n_val], torch.Generator().manual_seed(42)
        )
        loaders = dict(
            train_dataloaders=DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=2),
            val_dataloaders=DataLoader(val, batch_size=batch_size, num_workers=2),
        )
        test_loader = DataLoader(test, batch_size=batch_size, num_workers=2)
        trainer = L.Trainer(
            max_epochs=epochs,
            callbacks=[Turns()],
            enable_progress_bar=False,
            default_root_dir=tempfile.mkdtemp(),
        )
    else:
        model = FashionMNISTCNN()
        loaders = dict(datamodule=datamodule)
        test_loader = datamodule.test_dataloader()
        trainer = L.Trainer(
            max_epochs=epochs,
            callbacks=[Turns()],
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
        )

    def fit() -> float:
        trainer.fit(model, **loaders)
        _wait_turn("test")
        return trainer.test(model, dataloaders=test_loader, verbose=False)[0]["test_acc"]

    if variant == "no-mlflow":
        accuracy = fit()
    else:
        mlflow.set_tracking_uri(tracking.tracking_uri())
        tracking.prepare_experiment("bench-lightning")
        mlflow.set_experiment("bench-lightning")
        mlflow.pytorch.autolog(log_models=False, checkpoint=variant == "course")
        with mlflow.start_run():
            accuracy = fit()
    return {
        "train_images": len(datamodule.train_set),
        "test_accuracy": float(accuracy),
    }


RUNNERS = {"keras": keras_run, "lightning": lightning_run}
VARIANTS = {
    "default": "notebook default (MLflow autolog)",
    "no-mlflow": "same, no MLflow",
    "course": "course-style code (MLflow autolog)",
}
DEFAULT_EPOCHS = {"keras": 10, "lightning": 5}
DEFAULT_BATCH = {"keras": 32, "lightning": 64}


def _wait_turn(label: str) -> None:
    """In a child: tell the parent we reached ``label`` and wait until it says go."""
    print(f"TURN {label}", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("parent went away")


def _child(args: argparse.Namespace) -> None:
    result = RUNNERS[args.child](args.data, args.epochs, args.batch_size, args.variant)
    print("RESULT " + json.dumps(result), flush=True)


class Child:
    """One configuration in its own process, advanced one turn (epoch) at a time."""

    def __init__(self, model: str, variant: str, args: argparse.Namespace, store: Path) -> None:
        self.model, self.variant = model, variant
        self.epochs = args.epochs or DEFAULT_EPOCHS[model]
        if variant == "course" and args.course_epochs:
            self.epochs = args.course_epochs
        command = [
            sys.executable, __file__, "--child", model, "--data", args.data,
            "--epochs", str(self.epochs), "--batch-size", str(DEFAULT_BATCH[model]),
            "--variant", variant,
        ]  # fmt: skip
        env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=f"sqlite:///{store / f'{model}-{variant}.db'}",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as the child)
        self.process = subprocess.Popen(
            command, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log,
        )  # fmt: skip
        self.turns: dict[str, float] = {}
        self.result: dict | None = None
        self.waiting_at = self._read()  # set-up (imports, data, model) is not timed

    def _read(self) -> str | None:
        for line in self.process.stdout:
            if line.startswith("TURN "):
                return line[len("TURN ") :].strip()
            if line.startswith("RESULT "):
                self.result = json.loads(line[len("RESULT ") :])
                self.process.wait()
                return None
        self.log.seek(0)
        raise RuntimeError(f"{self.model} {self.variant} failed:\n{self.log.read()[-3000:]}")

    def take_turn(self) -> None:
        """Let the child run until its next turn point; time it (it runs alone meanwhile)."""
        label = self.waiting_at
        started = time.perf_counter()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self.waiting_at = self._read()
        self.turns[label] = time.perf_counter() - started

    def summary(self) -> dict:
        seconds = [t for label, t in self.turns.items() if label.startswith("epoch")]
        if not seconds:
            raise RuntimeError(f"{self.model} {self.variant}: no epoch was timed")
        return dict(
            self.result, model=self.model, variant=self.variant, path=VARIANTS[self.variant],
            epochs=self.epochs, batch_size=DEFAULT_BATCH[self.model], epoch_seconds=seconds,
            median_seconds_per_epoch=statistics.median(seconds),
            best_seconds_per_epoch=min(seconds),
            turn_seconds=self.turns,  # "epoch k": epoch k to k+1; "test": closing the run + test
            images_per_second=self.result["train_images"] / statistics.median(seconds),
        )  # fmt: skip


def run_interleaved(model: str, args: argparse.Namespace, store: Path) -> list[dict]:
    """Train every variant of ``model`` epoch by epoch in turn: A1 B1 C1 A2 B2 C2 ...

    Each epoch runs alone (the others wait at their next epoch), so the machine's drift from
    minute to minute hits all variants alike instead of whichever happened to run then.
    """
    children = []
    for variant in args.variants.split(","):
        print(f"starting {model}: {VARIANTS[variant]} ...", flush=True)
        children.append(Child(model, variant, args, store))
    while any(child.waiting_at for child in children):
        for child in children:
            if child.waiting_at:
                label = child.waiting_at
                child.take_turn()
                print(
                    f"  {model:9s} {child.variant:9s} {label:8s} {child.turns[label]:6.1f} s",
                    flush=True,
                )
    return [child.summary() for child in children]


def _paired_ratio(a: dict, b: dict) -> float:
    """Median over epochs of a's epoch time / b's same epoch (run next to each other)."""
    return statistics.median(
        x / y for x, y in zip(a["epoch_seconds"], b["epoch_seconds"], strict=False)
    )


def main() -> None:
    parser = parser_with_data(__doc__)
    parser.add_argument(
        "--models", default="keras,lightning", help="comma-separated: " + ", ".join(RUNNERS)
    )
    parser.add_argument(
        "--variants",
        default="default,no-mlflow,course",
        help="comma-separated: " + ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--epochs", type=int, default=0, help="0 = the notebook's (keras 10, lightning 5)"
    )
    parser.add_argument(
        "--course-epochs", type=int, default=0,
        help="epochs for the course-style variant (its speed only; 0 = same as the others)",
    )  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as store:
        for model in args.models.split(","):
            results += run_interleaved(model, args, Path(store))
    print(
        f"\n{'model':10s} {'path':36s} {'ep':>3s} {'s/epoch':>8s} {'best':>6s} {'img/s':>7s} "
        f"{'test acc':>9s}"
    )
    for r in results:
        print(
            f"{r['model']:10s} {r['path']:36s} {r['epochs']:3d} {r['median_seconds_per_epoch']:8.1f} "
            f"{r['best_seconds_per_epoch']:6.1f} {r['images_per_second']:7.0f} "
            f"{r['test_accuracy'] * 100:8.2f}%"
        )
    print("(s/epoch: median epoch; img/s: training images / median epoch; epochs interleaved)")
    by = {(r["model"], r["variant"]): r for r in results}
    for model in args.models.split(","):
        if (model, "default") in by and (model, "no-mlflow") in by:
            ratio = _paired_ratio(by[model, "default"], by[model, "no-mlflow"])
            by[model, "default"]["tracking_overhead"] = ratio - 1
            ends = [by[model, v]["turn_seconds"]["test"] for v in ("default", "no-mlflow")]
            print(
                f"{model}: tracking overhead {100 * (ratio - 1):+.1f} % of training time per epoch"
                f" (target < 5 %); closing the run + test: {ends[0]:.1f} s tracked, {ends[1]:.1f} s not"
            )
        if (model, "default") in by and (model, "course") in by:
            ratio = _paired_ratio(by[model, "default"], by[model, "course"])
            by[model, "default"]["time_vs_course"] = ratio
            print(f"{model}: default path / course-style time = {ratio:.2f} (target <= 1)")
    write_results("train_bench", results)


if __name__ == "__main__":
    main()
