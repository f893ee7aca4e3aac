"""MLflow models-from-code used by :mod:`dltrack.serving.fast` (each file is copied into the
logged model and defines the model with ``mlflow.models.set_model``; nothing is pickled)."""
