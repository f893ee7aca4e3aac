"""Figures the notebooks show: image grids with titles (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["image_grid"]


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
            uint8 0..255 or float 0..1.
        titles: one title per image.
        columns: images per row.
        size: inches per image.
        colors: one title colour per image (e.g. green/red for right/wrong predictions).

    Returns:
        The matplotlib figure (shown inline in a notebook, or logged with ``mlflow.log_figure``).
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    elif images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"expected (n, h, w) grayscale images, got shape {images.shape}")
    count = len(images)
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
