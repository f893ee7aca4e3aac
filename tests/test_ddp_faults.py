"""Faults of notebook 05's DDP training, injected for real: ``torchrun`` starts 2 processes on
the CPU (gloo, 1 thread each) on the shipped subset, against a fresh SQLite store per test; the
tests stop (SIGSTOP) or kill (SIGKILL) a process in the middle of an epoch, or relaunch into a
run that holds other params, and read what the run holds afterwards. Each test is bounded: a
regression that hangs fails at its timeout instead of hanging CI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import mlflow
import pytest
from mlflow import MlflowClient

EXPERIMENT = "tests-ddp-faults"


def torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            f"--max-restarts={restarts}", "-m", "dltrack.distributed.train", "--experiment",
            EXPERIMENT, "--system-metrics-interval", "1", *args]  # fmt: skip


def environment(uri: str, **extra: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DLTRACK_FASHION_MNIST_DIR": "", **extra}
    if "MLFLOW_RUN_ID" not in extra:
        env.pop("MLFLOW_RUN_ID", None)
    return env


def run_bounded(command: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a session of its own, the whole session (torchrun and its workers)
    SIGKILLed if it outlives ``timeout``: a hung training leaves no process behind.

    Raises:
        subprocess.TimeoutExpired: the training outlived ``timeout``.
    """
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def launch_and_signal(command: list[str], env: dict, sig: signal.Signals, timeout: float):
    """Run ``command``; once rank 0 says epoch 1 starts (the 2nd of 3), wait a second and send
    ``sig`` to rank 1, the pid it printed. Returns (exit code, log, pid signalled).

    The training is killed (SIGKILL to torchrun's process group) if it outlives ``timeout``."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    lines, pids, signalled = [], {}, None
    try:
        for line in process.stdout:
            lines.append(line)
            started = re.search(r"rank (\d) \(pid (\d+)\): epoch (\d) starts", line)
            if started:
                pids[int(started[1])] = int(started[2])
                if signalled is None and started[1] == "0" and started[3] == "1":
                    time.sleep(1.0)  # into the epoch's batches
                    signalled = pids[1]
                    os.kill(signalled, sig)
        return process.wait(), "".join(lines), signalled
    finally:
        watchdog.cancel()
        if signalled is not None and sig == signal.SIGSTOP:
            try:  # never leave a stopped process behind
                os.kill(signalled, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def uri(tmp_path) -> str:
    """A fresh SQLite store, the tracking URI of this process while the test runs."""
    previous, fresh = mlflow.get_tracking_uri(), f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(fresh)
    yield fresh
    mlflow.set_tracking_uri(previous)


def only_run(uri: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    return run


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


@pytest.mark.timeout(180)
def test_a_relaunch_into_a_run_with_other_params_fails_fast_and_leaves_the_run_alone(uri):
    """Before: rank 0 raised in setup, rank 1 waited in the broadcast, rank 0 in the barrier of
    ``finally``; the job hung (gloo's 30 minutes)."""
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment(EXPERIMENT))  # a training of 1 epoch
    client.log_param(run.info.run_id, "epochs", "1")
    client.set_terminated(run.info.run_id, "FINISHED")
    env = environment(uri, MLFLOW_RUN_ID=run.info.run_id)
    done = run_bounded(torchrun("--epochs", "2", "--limit-batches", "2"), env, 150)
    assert done.returncode != 0
    assert "holds other params (epochs: run has '1', this launch '2')" in done.stderr
    after = client.get_run(run.info.run_id)
    assert after.info.status == "FINISHED" and after.data.params == {"epochs": "1"}
    assert artifacts(client, run.info.run_id) == []


@pytest.mark.timeout(240)
def test_a_stopped_rank_fails_the_job_and_the_run_says_which(uri):
    """SIGSTOP rank 1 mid-epoch: rank 0 fails in its next collective after the process group's
    timeout (10 s here; 20 s by default), records why and ends the run FAILED; torchrun stops
    rank 1 (SIGKILL, after its 30 s of grace) and exits non-zero. Before: gloo's default timeout,
    30 minutes."""
    command = torchrun("--epochs", "3", "--checkpoints", "none", "--process-group-timeout", "10")
    code, log, stopped = launch_and_signal(command, environment(uri), signal.SIGSTOP, 200)
    assert stopped is not None and code != 0, log[-3000:]
    run = only_run(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure"].startswith("rank 0, attempt 0: ")
    assert f"rank 1 (pid {stopped}) is stopped" in run.data.tags["failure"]
    client = MlflowClient(uri)
    assert artifacts(client, run.info.run_id) == ["failures/attempt-0/rank-0.log"]
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/failures/attempt-0/rank-0.log")
    assert "--- last log lines of rank 0 ---" in text and "epoch 1 starts" in text
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [0]


@pytest.mark.timeout(420)
def test_a_killed_rank_is_restarted_and_the_training_resumes_into_the_same_run(uri, tmp_path):
    """SIGKILL rank 1 in the middle of epoch 2 of 3 under ``torchrun --max-restarts=1``: the
    restarted processes resume the same run from epoch 1's checkpoint, each epoch's metrics and
    checkpoint model are logged once, with its metrics linked to the datasets, and the test
    accuracy is within 0.3 points of an uninterrupted training with the same seed. Before: no
    resume (epoch 0 again, in a new run), the restart hung in gloo's connectFullMesh, and the
    resumed epoch drew other dropout masks (0.8 points lower)."""
    code, log, killed = launch_and_signal(
        torchrun("--epochs", "3", restarts=1), environment(uri), signal.SIGKILL, 380
    )
    assert killed is not None and code == 0, log[-3000:]
    run = only_run(uri)  # one run for both attempts
    client = MlflowClient(uri)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [3]
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert sorted(model.name for model in models) == [f"checkpoint-{e}" for e in range(3)]
    assert sorted(artifacts(client, run.info.run_id)) == [
        "checkpoints/epoch-0.ckpt", "checkpoints/epoch-1.ckpt", "checkpoints/epoch-2.ckpt",
        "failures/attempt-0/rank-0.log",
    ]  # fmt: skip
    # gone, or a zombie until torchrun reaps it
    assert re.search(rf"rank 1 \(pid {killed}\) is (gone|zombie)", run.data.tags["failure"])
    assert "resuming after epoch 0" in log
    nodes = {key.split("/")[1] for key in run.data.metrics if key.startswith("system/")}
    assert nodes == {"node-0"}  # one machine, sampled once
    contexts = {
        d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"]
        for d in run.inputs.dataset_inputs
    }  # logged once, though the run was opened twice
    assert contexts == {"fashion-mnist-train": "training", "fashion-mnist-validation": "validation",
                        "fashion-mnist-test": "test"}  # fmt: skip
    assert len(run.inputs.dataset_inputs) == 3
    last = next(model for model in models if model.name == "checkpoint-2")
    assert {(m.key, m.dataset_name) for m in last.metrics if m.key.endswith("_acc")} == {
        ("train_acc", "fashion-mnist-train"), ("val_acc", "fashion-mnist-validation"),
        ("test_acc", "fashion-mnist-test"),
    }  # fmt: skip

    fresh = f"sqlite:///{tmp_path / 'uninterrupted.db'}"
    done = run_bounded(torchrun("--epochs", "3", "--checkpoints", "none"), environment(fresh), 300)
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted = only_run(fresh).data.metrics["test_acc"]
    # Measured: 0.814 both (each batch seeds its dropout). Before the batch seeds: 0.814 against
    # 0.822, since a resumed fit made the epoch's loader at another point of the random stream.
    assert abs(run.data.metrics["test_acc"] - uninterrupted) <= 0.003
