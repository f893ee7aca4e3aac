"""Evaluation artifacts for a classifier: confusion matrix, per-class accuracy and a gallery of
misclassified test images, logged to the active MLflow run.

The confusion matrix and its figure come from scikit-learn (rows: true class, columns:
predicted class, its convention); the figures are matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

from dltrack.data import CLASS_NAMES
from dltrack.plots import image_grid

__all__ = ["log_evaluation", "per_class_accuracy", "to_class_ids"]


def to_class_ids(predictions: np.ndarray) -> np.ndarray:
    """Class ids from model outputs: argmax over the last axis of (n, classes) probabilities or
    logits; (n,) integer ids are returned as they are.

    Raises:
        ValueError: the array is neither (n,) integers nor (n, classes).
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        return predictions.argmax(axis=1)
    if predictions.ndim == 1 and np.issubdtype(predictions.dtype, np.integer):
        return predictions
    raise ValueError(
        f"expected (n, classes) scores or (n,) integer ids, got {predictions.dtype} "
        f"{predictions.shape}"
    )


def per_class_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, float]:
    """Accuracy within each true class (recall per class), in [0, 1], keyed by class name.

    A class absent from ``y_true`` gets NaN.
    """
    matrix = confusion_matrix(y_true, y_pred, labels=range(len(class_names)))
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.diag(matrix) / totals
    return {name: float(acc) for name, acc in zip(class_names, accuracy, strict=True)}


def log_evaluation(
    y_true: np.ndarray,
    predictions: np.ndarray,
    images: np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    prefix: str = "test",
    artifact_dir: str = "evaluation",
    max_misclassified: int = 16,
) -> dict[str, float]:
    """Log evaluation metrics and artifacts to the active run and return the metrics.

    Logged: metric ``<prefix>_accuracy``; ``<artifact_dir>/confusion_matrix.png``;
    ``<artifact_dir>/per_class_accuracy.json``; ``<artifact_dir>/misclassified.png`` (up to
    ``max_misclassified`` wrong predictions, titled predicted / actual).

    Args:
        y_true: true class ids, shape (n,).
        predictions: (n, classes) probabilities or logits, or (n,) class ids.
        images: the n images, any layout :func:`image_grid` accepts.

    Raises:
        ValueError: lengths differ, or no run is active.
    """
    y_true = np.asarray(y_true)
    y_pred = to_class_ids(predictions)
    if not (len(y_true) == len(y_pred) == len(images)):
        raise ValueError(
            f"y_true, predictions and images differ in length: {len(y_true)}, {len(y_pred)}, "
            f"{len(images)}"
        )
    if mlflow.active_run() is None:
        raise ValueError("no active MLflow run: call inside `with mlflow.start_run(...)`")
    accuracy = float((y_true == y_pred).mean())
    mlflow.log_metric(f"{prefix}_accuracy", accuracy)

    labels = list(range(len(class_names)))
    display = ConfusionMatrixDisplay(
        confusion_matrix(y_true, y_pred, labels=labels), display_labels=list(class_names)
    )
    fig, ax = plt.subplots(figsize=(8, 8))
    display.plot(ax=ax, xticks_rotation=45, colorbar=False, cmap="Blues")
    ax.set_title(f"{prefix} accuracy {accuracy:.3f}")
    fig.tight_layout()
    mlflow.log_figure(fig, f"{artifact_dir}/confusion_matrix.png")
    plt.close(fig)

    mlflow.log_dict(
        per_class_accuracy(y_true, y_pred, class_names),
        f"{artifact_dir}/per_class_accuracy.json",
    )

    wrong = np.flatnonzero(y_true != y_pred)[:max_misclassified]
    if len(wrong):
        titles = [f"{class_names[y_pred[i]]}\n(actual {class_names[y_true[i]]})" for i in wrong]
        fig = image_grid(np.asarray(images)[wrong], titles, colors=["red"] * len(wrong))
        mlflow.log_figure(fig, f"{artifact_dir}/misclassified.png")
        plt.close(fig)
    return {f"{prefix}_accuracy": accuracy}
