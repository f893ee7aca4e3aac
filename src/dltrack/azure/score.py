"""Scoring script for Azure ML's inference server, reproducing the request/response contract of
an Azure ML no-code MLflow deployment, so that contract can be tested on 127.0.0.1.

Azure ML serves a registered MLflow model (type ``mlflow_model``) without a scoring script of
yours: its own script loads the model with ``mlflow.pyfunc`` and answers ``POST /score`` with

- request: ``{"input_data": <tensor as nested lists>}``, or ``{"input_data": {"name": [...]}}``
  for named tensors, or ``{"input_data": {"columns": [...], "index": [...], "data": [...]}}``
  for a DataFrame (pandas "split" layout); optional ``"params": {...}``;
- response: the predictions as a JSON array (no ``"predictions"`` key).

This file does the same for ``azureml-inference-server-http`` (``azmlinfsrv``), the server
Azure runs in its inference images. It imports nothing from dltrack: the server runs in its own
virtual environment (see the Makefile's ``setup-azure-server``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from azureml.contrib.services.aml_response import AMLResponse

model = None


def _model_folder(root: Path) -> Path:
    """Azure mounts the model under AZUREML_MODEL_DIR, often one folder down; find its MLmodel."""
    for candidate in [root, *sorted(p.parent for p in root.rglob("MLmodel"))]:
        if (candidate / "MLmodel").is_file():
            return candidate
    raise FileNotFoundError(f"no MLmodel file under {root}")


def init() -> None:
    """Load the MLflow model once per worker."""
    global model
    model = mlflow.pyfunc.load_model(str(_model_folder(Path(os.environ["AZUREML_MODEL_DIR"]))))


def _bad_request(message: str) -> AMLResponse:
    return AMLResponse({"error": message}, 400, json_str=True)  # AMLResponse serialises it


def _named_tensors(input_data: dict, names: list, dtypes: list) -> dict:
    """Named tensors matched to the signature by name; ValueError (a 400) on a missing or an
    extra name."""
    missing = [n for n in names if n not in input_data]
    extra = [k for k in input_data if k not in names]
    if missing or extra or None in names:
        raise ValueError(
            f"expected the named inputs {names} of the model's signature; missing {missing}, "
            f"not in the signature {extra}"
        )
    by_name = dict(zip(names, dtypes, strict=True))
    return {name: np.asarray(value, dtype=by_name[name]) for name, value in input_data.items()}


def _to_model_input(input_data):
    schema = model.metadata.get_input_schema()
    if isinstance(input_data, dict) and {"columns", "data"} <= input_data.keys():
        return pd.DataFrame(**input_data)
    if schema is not None and schema.is_tensor_spec():
        dtypes = schema.numpy_types()
        if isinstance(input_data, dict):
            return _named_tensors(input_data, schema.input_names(), dtypes)
        return np.asarray(input_data, dtype=dtypes[0])
    return input_data


def run(raw_data: str):
    """Score one request; the reply is a JSON array of predictions, or a 400 with a message."""
    try:
        payload = json.loads(raw_data)
    except ValueError as err:
        return _bad_request(f"the body is not JSON: {err}")
    if not isinstance(payload, dict) or "input_data" not in payload:
        return _bad_request('expected a JSON object {"input_data": ...}')
    try:
        data = _to_model_input(payload["input_data"])
        predictions = model.predict(data, params=payload.get("params"))
    except (ValueError, TypeError, mlflow.exceptions.MlflowException) as err:
        return _bad_request(str(err)[-500:])
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    return np.asarray(predictions).tolist()
