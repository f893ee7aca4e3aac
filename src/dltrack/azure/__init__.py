"""Azure Machine Learning, what notebook 01b needs beside the ``azure.ai.ml`` SDK it calls:

- :func:`endpoint_name`: an endpoint name that is unique per learner and the same on re-runs;
- :class:`LocalInferenceServer` (:mod:`.local_server`): Azure's own inference server on
  127.0.0.1 with :mod:`.score`, the no-code MLflow deployment's request/response contract,
  to check a request without an Azure subscription.

Notebook 05's command job needs nothing from here: ``azure.ai.ml.command`` builds it and
``print(job)`` shows it.
"""

from __future__ import annotations

import getpass
import hashlib

from dltrack.azure.local_server import LocalInferenceServer, inference_server_python
from dltrack.config import project_root

__all__ = ["LocalInferenceServer", "endpoint_name", "inference_server_python"]


def endpoint_name(prefix: str = "fmnist") -> str:
    """A unique, stable endpoint name: ``<prefix>-<8 hex>`` from the user and project folder.

    Endpoint names are unique per Azure region, so a fixed name collides between learners; a
    name with a timestamp (as Azure's examples use) makes every re-run create, and bill, a new
    endpoint. This one stays the same for one person and checkout: 3-32 characters, starting
    with a letter, letters, digits and '-' (Azure's rule), provided ``prefix`` starts with a
    letter.

    Raises:
        ValueError: ``prefix`` does not start with a letter or holds other characters.
    """
    if not prefix[:1].isalpha() or not all(c.isalnum() or c == "-" for c in prefix):
        raise ValueError(
            f"prefix must start with a letter and hold letters, digits or '-': {prefix!r}"
        )
    digest = hashlib.sha256(f"{getpass.getuser()}:{project_root()}".encode()).hexdigest()[:8]
    return f"{prefix[:23]}-{digest}"

