"""Team mode's cost: notebooks 01 and 02 against the team server and against the local SQLite
store, side by side in one run, and the server's cost per request.

    .venv/bin/python benchmarks/team_bench.py            # or: make bench-team

A throw-away team stack (PostgreSQL + ``mlflow server`` with basic auth and proxied artifacts,
dltrack.team.TeamServer) starts on free ports with one learner account. Each notebook then runs
end to end (``tools/notebooks.py``: train, track, log, evaluate, register, serve) alternately
against the local store and the team server, ``--rounds`` times each, the order swapped every
round so the machine's drift falls on both, after one untimed warm-up run of each notebook on a
third store (the first run of a notebook on a machine is slower, whatever its store). The
notebook's whole wall time is taken, training and tracking included. The client uses what ``make server-env`` sets (buffered asynchronous
logging).

Per request: median latency of 50 sequential requests over one keep-alive connection:
``/health`` (no authentication), an authenticated read (``experiments/get``), an authenticated
write (``runs/log-metric``), and a wrong password (a full password-hash check, which MLflow's
auth cache cannot skip).

Prints a table with the ratios team/local and writes benchmarks/results/team_bench.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from _results import write_results  # benchmarks/_results.py

from dltrack.config import project_root
from dltrack.serving.process import free_port
from dltrack.team import TeamServer

NOTEBOOKS = ["01_tensorflow_fashion_mnist.ipynb", "02_pytorch_lightning_fashion_mnist.ipynb"]


def run_notebook(notebook: str, env: dict[str, str]) -> float:
    """Wall time in seconds of one end-to-end run of ``notebook`` with ``env``."""
    root = project_root()
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(root / "tools" / "notebooks.py"), str(root / "notebooks" / notebook)],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def per_request(server: TeamServer, user: str, password: str, count: int = 50) -> dict:
    """Median milliseconds of ``count`` requests of each kind, one keep-alive session each."""
    api = f"{server.url}/api/2.0/mlflow"
    with requests.Session() as session:
        session.auth = (user, password)
        experiment = session.post(
            f"{api}/experiments/create", json={"name": f"bench-{time.time_ns()}"}, timeout=30
        ).json()["experiment_id"]
        run = session.post(
            f"{api}/runs/create", json={"experiment_id": experiment}, timeout=30
        ).json()["run"]["info"]["run_id"]
    kinds = {
        "health, no authentication": ("GET", f"{server.url}/health", None, None),
        "authenticated read": (
            "GET",
            f"{api}/experiments/get",
            {"experiment_id": experiment},
            None,
        ),
        "authenticated write": ("POST", f"{api}/runs/log-metric", None, "metric"),
        "wrong password": ("GET", f"{api}/experiments/get", {"experiment_id": experiment}, "wrong"),
    }
    medians = {}
    for name, (method, url, params, special) in kinds.items():
        times = []
        with requests.Session() as session:
            session.auth = (user, "not-the-password" if special == "wrong" else password)
            for step in range(count):
                body = (
                    {"run_id": run, "key": "m", "value": 1.0, "timestamp": 0, "step": step}
                    if special == "metric"
                    else None
                )
                started = time.perf_counter()
                session.request(method, url, params=params, json=body, timeout=60)
                times.append((time.perf_counter() - started) * 1000)
        medians[name] = statistics.median(times)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs per notebook and store")
    parser.add_argument("--epochs", default="", help="DLTRACK_EPOCHS (default: the notebooks')")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="dltrack-team-bench-"))
    scratch.chmod(0o755)  # PostgreSQL runs as 'postgres' when we are root
    server = TeamServer(scratch / "team", port=free_port(), pg_port=free_port())
    results: dict = {"notebooks": {}, "per_request_ms": {}}
    try:
        server.start()
        server.add_user("bench")
        team_env = server.client_env("bench")
        base = dict(os.environ, KERAS_HOME=str(scratch / "keras"))
        if args.epochs:
            base["DLTRACK_EPOCHS"] = args.epochs
        envs = {
            "local": dict(base, MLFLOW_TRACKING_URI=f"sqlite:///{scratch / 'local' / 'mlflow.db'}"),
            "team": dict(base, **team_env),
        }
        (scratch / "local").mkdir()
        (scratch / "warmup").mkdir()
        warmup = dict(base, MLFLOW_TRACKING_URI=f"sqlite:///{scratch / 'warmup' / 'mlflow.db'}")
        for notebook in NOTEBOOKS:
            print(f"{notebook} warm-up: {run_notebook(notebook, warmup):.1f} s", flush=True)
        for notebook in NOTEBOOKS:
            times: dict[str, list[float]] = {"local": [], "team": []}
            for round_ in range(args.rounds):
                order = ["local", "team"] if round_ % 2 == 0 else ["team", "local"]
                for target in order:
                    times[target].append(run_notebook(notebook, envs[target]))
                    print(f"{notebook} {target}: {times[target][-1]:.1f} s", flush=True)
            results["notebooks"][notebook] = {
                **times,
                "ratio_median": statistics.median(times["team"])
                / statistics.median(times["local"]),
            }
        results["per_request_ms"] = per_request(
            server, "bench", team_env["MLFLOW_TRACKING_PASSWORD"]
        )
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print("\n| notebook | local store, s (median) | team server, s (median) | team / local |")
    print("|---|---:|---:|---:|")
    for notebook, row in results["notebooks"].items():
        print(
            f"| {notebook} | {statistics.median(row['local']):.1f} | "
            f"{statistics.median(row['team']):.1f} | {row['ratio_median']:.3f} |"
        )
    health = results["per_request_ms"]["health, no authentication"]
    print("\n| request to the team server | median ms | / health |")
    print("|---|---:|---:|")
    for name, ms in results["per_request_ms"].items():
        print(f"| {name} | {ms:.1f} | {ms / health:.1f} |")
    write_results("team_bench", results)


if __name__ == "__main__":
    main()
