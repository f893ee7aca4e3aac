"""``make demo``: run the notebooks headless on the shipped subset and report what they tracked.

Each notebook is executed with nbclient in ``notebooks/`` (as Jupyter would), against the
project's MLflow store; the executed copies go to ``build/executed/`` (git-ignored). Then, for
every run the notebooks made, the report prints the experiment, run id, test accuracy, the
registered model version and its aliases, the REST check, and how to open the MLflow UI.

Usage: ``python -m dltrack.demo [NOTEBOOK ...]`` (default: every notebook in ``notebooks/``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dltrack.config import project_root

__all__ = ["main", "report", "run_notebook"]


def run_notebook(path: Path, output_dir: Path, timeout: int = 1800) -> Path:
    """Execute ``path`` with its folder as working directory; write the executed copy.

    Returns:
        The executed notebook's path in ``output_dir``.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed; the message shows the cell and
            the traceback. The partially executed copy is still written.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / path.name
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(notebook, target)
    return target


def report(since_ms: int) -> list[str]:
    """Lines describing every run started since ``since_ms`` (epoch milliseconds)."""
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
        if "rest_check" not in run.data.tags:  # only the notebooks' main runs
            continue
        experiment = client.get_experiment(run.info.experiment_id).name
        metrics = run.data.metrics
        accuracy = next(
            (metrics[k] for k in ("test_accuracy", "test_acc", "accuracy_score") if k in metrics),
            None,
        )
        versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
        lines.append(f"experiment      {experiment}")
        lines.append(f"  run id        {run.info.run_id} ({run.info.status})")
        lines.append(
            f"  test accuracy {accuracy:.4f}" if accuracy is not None else "  test accuracy -"
        )
        for version in versions:
            aliases = client.get_model_version(version.name, version.version).aliases
            lines.append(
                f"  registered    {version.name} version {version.version} aliases {aliases}"
            )
        lines.append(f"  REST check    {run.data.tags['rest_check']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks and print the report; exit status 1 if a notebook failed."""
    from dltrack import tracking

    argv = sys.argv[1:] if argv is None else argv
    root = project_root()
    notebooks = [Path(a).resolve() for a in argv] or sorted((root / "notebooks").glob("*.ipynb"))
    uri = tracking.setup_tracking()
    print(f"MLflow store: {uri}")
    since = int(time.time() * 1000)
    failed = []
    for path in notebooks:
        if path.name.startswith("03_"):
            from dltrack import hf

            ok, why = hf.model_availability()
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
    print("Open the MLflow UI on this store: make ui   (then http://127.0.0.1:5000)")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
