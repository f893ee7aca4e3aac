"""dltrack: the few helpers the MLflow deep-learning tutorial notebooks need beside the
libraries they teach. One home per concept:

- :mod:`dltrack.config`      project paths and environment-overridable notebook parameters
- :mod:`dltrack.data`        offline, checksummed data: Fashion-MNIST for the framework loaders,
                             the labelled sentences of notebook 03
- :mod:`dltrack.models`      the course's Keras CNN, Lightning CNN and data module, their
                             learning-rate schedules, and which sentiment model to load
- :mod:`dltrack.tracking`    the MLflow store, re-run-safe experiments, registry lookups
- :mod:`dltrack.evaluation`  figures: image grids, misclassified images, training curves
- :mod:`dltrack.serving`     ``mlflow models serve`` started and stopped from Python, a client
                             (Parquet or JSON bodies), the fast pyfunc models, timing in turns
- :mod:`dltrack.azure`       Azure ML's inference server on 127.0.0.1, endpoint names, job YAML
- :mod:`dltrack.distributed` the DDP training script (one MLflow run whatever the processes)

The notebooks call MLflow, Keras, Lightning, Transformers and ``azure.ai.ml`` themselves;
these modules hold only what those libraries do not do. Framework modules import their
framework, so ``import dltrack`` is cheap.
"""

__version__ = "0.2.0"
