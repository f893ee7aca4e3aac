"""Figures for looking at a classifier and its training: image grids, the misclassified test
images, and training curves drawn from a run's metric history (matplotlib).

The metrics themselves come from MLflow (``mlflow.models.evaluate``: accuracy, precision,
recall, F1, the confusion matrix, per-class metrics) and from the run's metric history
(``MlflowClient().get_metric_history``); these functions only draw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from mlflow.entities import Metric

__all__ = ["image_grid", "misclassified_figure", "plot_training_curves"]


def image_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    size: float = 2.0,
    colors: Sequence[str] | None = None,
) -> plt.Figure:
    """A grid of grayscale images with optional titles, like the course's 4x4 figure.

    Args:
        images: (n, h, w), (n, h, w, 1) channels-last or (n, 1, h, w) channels-first;
            uint8 0..255 or float 0..1; a numpy array or anything ``np.asarray`` takes.
        titles: one title per image.
        columns: images per row.
        size: inches per image.
        colors: one title colour per image (e.g. green/red for right/wrong predictions).

    Returns:
        The matplotlib figure (shown inline in a notebook, or logged with ``mlflow.log_figure``).

    Raises:
        ValueError: the images are not grayscale in one of the layouts above, or ``titles``
            or ``colors`` does not have one entry per image.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    elif images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"expected (n, h, w) grayscale images, got shape {images.shape}")
    count = len(images)
    for what, values in (("titles", titles), ("colors", colors)):
        if values is not None and len(values) != count:
            raise ValueError(f"expected one of {what} per image: {len(values)} for {count} images")
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 1.1))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < count:
            ax.imshow(images[i], cmap="gray_r")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8, color=colors[i] if colors else "black")
    fig.tight_layout()
    return fig


def misclassified_figure(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    max_images: int = 16,
) -> plt.Figure:
    """A grid of the first ``max_images`` wrongly predicted images, titled
    "<predicted> (actual <true>)" in red.

    Args:
        images: n images, any layout :func:`image_grid` takes.
        y_true: true class ids, int, shape (n,).
        y_pred: predicted class ids, int, shape (n,).
        class_names: the name of each class id.
        max_images: most images shown.

    Raises:
        ValueError: the three arrays differ in length.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if not len(images) == len(y_true) == len(y_pred):
        raise ValueError(
            f"images, y_true and y_pred differ in length: {len(images)}, {len(y_true)}, "
            f"{len(y_pred)}"
        )
    wrong = np.flatnonzero(y_true != y_pred)[:max_images]
    titles = [f"{class_names[y_pred[i]]}\n(actual {class_names[y_true[i]]})" for i in wrong]
    fig = image_grid(np.asarray(images)[wrong], titles, colors=["red"] * len(wrong))
    fig.suptitle(f"{len(wrong)} of {int((y_true != y_pred).sum())} misclassified test images")
    fig.tight_layout()
    return fig


def plot_training_curves(history: Mapping[str, Sequence[Metric]]) -> plt.Figure:
    """Training curves from a run's metric history, one panel per quantity.

    Keys that differ only by a ``train_`` or ``val_`` prefix share a panel ("loss" and
    "val_loss"; "train_acc" and "val_acc"), each drawn against its step (the epoch, for
    per-epoch metrics).

    Args:
        history: metric key -> the list ``MlflowClient().get_metric_history(run_id, key)``
            returns (``Metric`` entities with ``.step`` and ``.value``).

    Returns:
        The figure: one panel per quantity, x axis "epoch".

    Raises:
        ValueError: ``history`` is empty or a key has no values (nothing was logged under it).
    """
    empty = [key for key, metrics in history.items() if not metrics]
    if not history or empty:
        raise ValueError(f"no metric values logged for {empty or 'any key'}")
    panels: dict[str, list[str]] = {}
    for key in history:
        panels.setdefault(key.removeprefix("val_").removeprefix("train_"), []).append(key)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (quantity, keys) in zip(axes[0], panels.items(), strict=True):
        for key in keys:
            points = sorted((m.step, m.value) for m in history[key])
            ax.plot(*zip(*points, strict=True), marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(quantity)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
