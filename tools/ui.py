"""``make ui``: the MLflow UI on the project's store, and the links a learner should open.

    python tools/ui.py [--port 5000]

Prints one link per experiment (its training runs, in the UI's *Model training* view) and the
model registry, then replaces itself with ``mlflow ui`` on 127.0.0.1 (for a SQLite store, with
the store's artifact folder as default artifact root). Ctrl+C stops it.
"""

from __future__ import annotations

import argparse
import os
import sys

import mlflow

from dltrack import tracking


def main() -> None:
    """Print the links, then exec ``mlflow ui``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    uri = tracking.tracking_uri()
    mlflow.set_tracking_uri(uri)
    base = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI on {uri}\nOpen, once it listens:")
    for line in tracking.ui_links(base):
        print(f"  {line}")
    sys.stdout.flush()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    command += ["--backend-store-uri", uri]
    if root := tracking.artifact_root(uri):
        command += ["--default-artifact-root", root]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
