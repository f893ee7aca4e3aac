"""Run the tutorial notebooks headless and report what they tracked (``make demo``).

Each notebook is executed with nbclient in ``notebooks/`` (as Jupyter would) against the MLflow
store of the environment; the executed copies go to ``build/executed/`` (git-ignored). Then,
for every run the notebooks started, the report prints the experiment, the run, its test
accuracy, the models it logged, and the registered versions with their aliases.

    python tools/notebooks.py [NOTEBOOK ...]     # default: every notebook in notebooks/

This runner is a project tool, not part of the installed ``dltrack`` package; the tests import
it (``pythonpath = ["tools"]`` in pyproject.toml).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dltrack.config import project_root

__all__ = ["main", "report", "run_notebook"]

ACCURACY_KEYS = ("accuracy_score", "test_acc", "test_accuracy")


def run_notebook(
    path: Path, output_dir: Path, timeout: int = 1800, env: dict[str, str] | None = None
) -> Path:
    """Execute ``path`` with its folder as working directory, in the kernel its metadata
    names; write the executed copy to ``output_dir``.

    Args:
        timeout: seconds any one cell may run before the execution fails.
        env: the kernel's whole environment; default: this process's.

    Returns:
        The executed notebook's path in ``output_dir``.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed; the message shows the cell and
            the traceback. The partly executed copy is still written.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / path.name
    client = NotebookClient(
        notebook, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute(**({"env": env} if env is not None else {}))
    finally:
        nbformat.write(notebook, target)
    return target


def report(since_ms: int) -> list[str]:
    """Lines describing every top-level run started since ``since_ms`` (epoch milliseconds)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"attributes.start_time >= {since_ms}",
        output_format="list",
        order_by=["attributes.start_time ASC"],
    )
    lines = []
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags:
            continue
        experiment = client.get_experiment(run.info.experiment_id).name
        metrics = run.data.metrics
        accuracy = next((metrics[k] for k in ACCURACY_KEYS if k in metrics), None)
        models = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            output_format="list",
        )
        lines.append(f"experiment      {experiment}")
        lines.append(f"  run           {run.info.run_name} {run.info.run_id} ({run.info.status})")
        lines.append(
            f"  test accuracy {accuracy:.4f}" if accuracy is not None else "  test accuracy -"
        )
        for model in models:
            lines.append(f"  logged model  models:/{model.model_id} ({model.name})")
        for version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            found = client.get_model_version(version.name, version.version)
            lines.append(
                f"  registered    {found.name} version {found.version}, aliases {found.aliases}"
                + (f": {found.tags['promotion']}" if "promotion" in found.tags else "")
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks and print the report; exit status 1 if a notebook failed."""
    import mlflow

    from dltrack import tracking
    from dltrack.models import sentiment

    argv = sys.argv[1:] if argv is None else argv
    root = project_root()
    notebooks = [Path(a).resolve() for a in argv] or sorted((root / "notebooks").glob("*.ipynb"))
    mlflow.set_tracking_uri(tracking.tracking_uri())
    print(f"MLflow store: {mlflow.get_tracking_uri()}")
    since = int(time.time() * 1000)
    failed = []
    for path in notebooks:
        if path.name.startswith("03_"):
            ok, why = sentiment.model_availability()
            if not ok:
                print(f"skipping {path.name}: {why}")
                continue
        started = time.perf_counter()
        print(f"running {path.relative_to(root)} ...", flush=True)
        try:
            executed = run_notebook(path, root / "build" / "executed")
            print(
                f"  done in {time.perf_counter() - started:.0f} s -> {executed.relative_to(root)}"
            )
        except Exception as err:  # report every notebook, then fail
            failed.append(path.name)
            print(f"  FAILED after {time.perf_counter() - started:.0f} s: {str(err)[-2000:]}")
    print()
    print("\n".join(report(since)) or "no runs recorded")
    print()
    where = "" if mlflow.get_tracking_uri().startswith("http") else "make ui, then "
    print(f"Open the MLflow UI: {where}{tracking.ui_url()}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
