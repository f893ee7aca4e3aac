"""dltrack: helpers for the MLflow deep-learning tutorial notebooks.

The package is split by concern; import what a notebook needs:

- :mod:`dltrack.config`     project paths and environment-overridable notebook parameters
- :mod:`dltrack.data`       Fashion-MNIST offline: checksums, framework loaders, subsets, scaling
- :mod:`dltrack.tracking`   MLflow store, experiments, sample images, run summaries, registry
- :mod:`dltrack.evaluation` confusion matrix, per-class accuracy, misclassified gallery
- :mod:`dltrack.models`     the course's Keras CNN
- :mod:`dltrack.serving`    ``mlflow models serve`` from Python and a REST client

Framework-specific modules import their framework lazily, so ``import dltrack`` is cheap.
"""

__version__ = "0.1.0"
