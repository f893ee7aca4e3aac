"""Child processes that serve on a port: started in a process group of their own with their
output in a log file, waited for until they answer, the log's last lines for error messages,
and stopped with every process they started. The one home for this in dltrack: the model
server (:class:`dltrack.serving.ModelServer`), Azure's local inference server and the team
servers (:mod:`dltrack.team`) all use it.

A process another command started (``make server``, then ``make server-stop``) is found again
by its :class:`ProcessRecord`: its pid, its start time and its command line, all three checked
with psutil before it is signalled, so a pid the OS has since given to another program is never
signalled. psutil reads processes on Linux and macOS alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "HOST",
    "ProcessRecord",
    "free_port",
    "log_tail",
    "port_in_use",
    "start",
    "stop",
    "wait_until",
]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something listens on ``host:port`` (a TCP connection is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` non-empty lines of the text file ``path`` ("" when it is missing)."""
    if path is None or not Path(path).is_file():
        return ""
    text = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(text[-lines:])


@dataclass(frozen=True)
class ProcessRecord:
    """What identifies one process for as long as it lives: pid, start time (seconds since the
    epoch, as psutil reads it) and the command it was started with.

    Args:
        pid: the process id.
        create_time: ``psutil.Process(pid).create_time()``.
        command: the command line it was started with; a process matches when its command line
            ends with it (a wrapper such as ``setpriv ... --`` may still be running it).
    """

    pid: int
    create_time: float
    command: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, pid: int, command: Sequence[str]) -> ProcessRecord:
        """The record of the running process ``pid``, started with ``command``.

        Raises:
            psutil.NoSuchProcess: it has already exited.
        """
        return cls(pid, psutil.Process(pid).create_time(), [str(c) for c in command])

    @classmethod
    def from_dict(cls, data: dict) -> ProcessRecord | None:
        """The record kept by :meth:`to_dict`, or ``None`` when ``data`` does not hold one."""
        try:
            return cls(int(data["pid"]), float(data["create_time"]), list(data["command"]))
        except (KeyError, TypeError, ValueError):
            return None

    def to_dict(self) -> dict:
        """A JSON-ready dict (for a state file)."""
        return asdict(self)

    def process(self) -> psutil.Process | None:
        """The live process this record names, or ``None`` when it has exited (a zombie
        counts as exited) or the pid now belongs to another program."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.create_time) > 0.01:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = process.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        if self.command and cmdline[-len(self.command) :] != self.command:
            return None
        return process

    @property
    def alive(self) -> bool:
        """True while the recorded process runs."""
        return self.process() is not None


def start(
    command: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    append: bool = False,
) -> tuple[subprocess.Popen, ProcessRecord]:
    """Start ``command`` in a new session (its own process group, so :func:`stop` reaches every
    process it starts, and it outlives the terminal that started it), stdin closed, stdout and
    stderr into ``log_path``.

    Args:
        command: the program and its arguments.
        log_path: the log file; truncated first unless ``append``.
        env: the environment (default: this process's).
        cwd: the working folder.
        append: add to the log instead of starting it anew.

    Returns:
        The ``Popen`` and the :class:`ProcessRecord` to find the process again.

    Raises:
        OSError: the program cannot be run.
    """
    with Path(log_path).open("ab" if append else "wb") as log:
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    try:
        record = ProcessRecord.of(process.pid, command)
    except psutil.NoSuchProcess:  # exited at once: a record that matches nothing
        record = ProcessRecord(process.pid, 0.0, list(command))
    return process, record


def wait_until(ready: Callable[[], bool], alive: Callable[[], bool], timeout: float) -> bool:
    """Poll ``ready()`` every 0.25 s until it is true (``True``), the process exits
    (``alive()`` false) or ``timeout`` seconds pass (``False``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        if ready():
            return True
        time.sleep(0.25)
    return False


def _group_members(leader: psutil.Process) -> list[psutil.Process]:
    """The processes of ``leader``'s process group (when it leads one) and its descendants."""
    members = {leader.pid: leader}
    try:
        group = os.getpgid(leader.pid)
        for child in leader.children(recursive=True):
            members.setdefault(child.pid, child)
    except (ProcessLookupError, psutil.NoSuchProcess):
        return list(members.values())
    if group == leader.pid:
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == group:
                    members.setdefault(process.pid, process)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
    return list(members.values())


def stop(
    record: ProcessRecord, process: subprocess.Popen | None = None, timeout: float = 10.0
) -> None:
    """Stop the recorded process and every process of its group: SIGTERM to all of them, then
    SIGKILL to each one still alive after ``timeout`` seconds (psutil's ``wait_procs``), so a
    member that ignores SIGTERM or outlives the leader is killed too. Nothing is signalled
    unless the pid is still the recorded process (start time and command line checked with
    psutil). ``process``, when this process started it, is reaped.
    """
    target = record.process()
    if target is not None:
        members = _group_members(target)
        try:
            leads_group = os.getpgid(target.pid) == target.pid
        except ProcessLookupError:
            leads_group = False
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if leads_group:  # also a member started since the list was made
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(target.pid, sig)
            for member in members:
                try:
                    member.send_signal(sig)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            _, members = psutil.wait_procs(members, timeout=timeout)
            if not members:
                break
    if process is not None:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
