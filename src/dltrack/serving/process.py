"""Run a model server from Python: started on 127.0.0.1, ready when it answers, always stopped.

:class:`ModelServer` runs the standard ``mlflow models serve -m <model uri> --env-manager local``
in a subprocess bound to 127.0.0.1, on a free port unless one is given, waits until ``/ping``
answers, and always stops the server with every process it started: on ``stop()``, at the end
of a ``with`` block (also when a cell inside it fails), when the Python process exits, and,
where util-linux's ``setpriv`` exists (Linux), when the process that started it is killed.

What ``mlflow models serve`` alone does not do: pick a free port, wait until the model is
loaded, stop on its own, and find ``uvicorn`` from a kernel whose virtual environment is not
activated (this interpreter's ``bin`` folder is put first on ``PATH``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

import requests

from dltrack import processes
from dltrack.processes import HOST, free_port

__all__ = ["BackgroundServer", "ModelServer", "ServerStartError", "free_port"]


class ServerStartError(RuntimeError):
    """The model server did not come up; the message holds the end of its log."""


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """``command`` run by util-linux's ``setpriv --pdeathsig TERM`` where it exists: the server
    gets SIGTERM when the process that started it dies (a killed notebook kernel), which no
    ``atexit`` handler can catch."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


class BackgroundServer:
    """A local HTTP server in a subprocess: started on 127.0.0.1 (a free port unless one is
    given), ready when ``GET <ready_path>`` answers 200, always stopped with every process it
    started. Subclasses say what to run (:meth:`command`).

    Args:
        port: TCP port; ``None`` picks a free one. A given port that is in use raises
            :class:`ServerStartError` before anything starts.
        host: address to bind; 127.0.0.1 (this machine only) by default. See docs/serving.md before
            binding anything else: these servers have no authentication.
        timeout: seconds to wait until the server is ready.
        extra_env: extra environment variables for the server.
    """

    ready_path = "/ping"
    name = "server"

    def __init__(
        self,
        port: int | None = None,
        host: str = HOST,
        timeout: float = 180.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.timeout = timeout
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen | None = None
        self.record: processes.ProcessRecord | None = None
        self.log_path: Path | None = None
        self._finalizer: weakref.finalize | None = None

    def command(self) -> list[str]:
        """The command line to run; ``self.host`` and ``self.port`` are set."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        import mlflow

        env = dict(os.environ)
        # Servers are started by name (mlflow starts `uvicorn`): put this interpreter's bin
        # folder first on PATH, so a kernel running from a venv that is not activated works.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # the store this process uses (a notebook's mlflow.set_tracking_uri), for models:/ URIs
        env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log (stdout and stderr)."""
        return processes.log_tail(self.log_path, lines)

    def start(self) -> BackgroundServer:
        """Start the server and wait until ``GET <ready_path>`` answers 200.

        Raises:
            ServerStartError: the port is taken, the process exited, or the server was not
                ready within ``timeout`` seconds. The server is stopped and its log tail included.
        """
        if self.process is not None and self.process.poll() is None:
            return self
        if self.requested_port is not None and processes.port_in_use(
            self.requested_port, self.host
        ):
            raise ServerStartError(
                f"port {self.requested_port} on {self.host} is already in use; stop what uses "
                "it or pass port=None to pick a free port"
            )
        self.port = self.requested_port or free_port(self.host)
        fd, log = tempfile.mkstemp(prefix=f"dltrack-{self.name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        command = self.command()
        self.process, self.record = processes.start(
            _with_parent_death_signal(command), self.log_path, env=self._env()
        )
        self.record = processes.ProcessRecord(self.record.pid, self.record.create_time, command)
        self._finalizer = weakref.finalize(self, processes.stop, self.record, self.process)
        atexit.register(self._finalizer)
        if processes.wait_until(self._ready, lambda: self.process.poll() is None, self.timeout):
            return self
        exited = self.process.poll()
        self.stop()
        reason = (
            f"exited with code {exited}"
            if exited is not None
            else f"was not ready within {self.timeout:.0f} s"
        )
        raise ServerStartError(
            f"{self!r} on {self.host}:{self.port} {reason}. "
            f"Server log ({self.log_path}), last lines:\n{self.log_tail()}"
        )

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """Stop the server and every process it started (SIGTERM, then SIGKILL after 10 s)."""
        if self.record is not None:
            processes.stop(self.record, self.process)
        if self._finalizer is not None:
            self._finalizer.detach()

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = self.url if self.port else "-"
        return f"{type(self).__name__}({where}, {state})"


class ModelServer(BackgroundServer):
    """``mlflow models serve -m <model uri> --env-manager local``, as a context manager.

    Example::

        with ModelServer("models:/fashion_mnist_prediction_model@champion") as server:
            probabilities = predict(server.url, x_test[:1])

    Args:
        model_uri: any MLflow model URI: ``models:/<model_id>``, ``models:/<name>@<alias>``,
            ``models:/<name>/<version>``, ``runs:/<run_id>/<path>``.
        workers: uvicorn worker processes.
        **kwargs: ``port``, ``host``, ``timeout``, ``extra_env`` of :class:`BackgroundServer`.
    """

    name = "mlflow-serve"

    def __init__(self, model_uri: str, workers: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_uri = model_uri
        self.workers = workers

    def command(self) -> list[str]:  # noqa: D102
        return [
            sys.executable, "-m", "mlflow", "models", "serve",
            "-m", self.model_uri,
            "-h", self.host,
            "-p", str(self.port),
            "-w", str(self.workers),
            "--env-manager", "local",
        ]  # fmt: skip

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = self.url if self.port else "-"
        return f"ModelServer({self.model_uri!r}, {where}, {state})"
