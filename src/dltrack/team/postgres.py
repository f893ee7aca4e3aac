"""A PostgreSQL cluster in a project folder, for the team tracking server: Debian's (or any)
PostgreSQL server binaries, ``initdb`` once, ``pg_ctl`` to start and stop, on 127.0.0.1.

Run as root, the cluster belongs to the ``postgres`` OS user (PostgreSQL refuses to run as
root): its folder is handed to that user and every server command runs through ``runuser``.
Run as anybody else, it belongs to that user. The superuser ``postgres`` authenticates with a
password (SCRAM) over TCP and the Unix socket alike, so this process (root or not) can create
the team's role and databases with psycopg2 without being the ``postgres`` OS user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from dltrack.processes import log_tail, port_in_use

__all__ = ["PostgresCluster", "PostgresError", "server_binaries", "write_private"]

INSTALL_HINT = (
    "Install the PostgreSQL server: `apt-get install postgresql` (Debian, Ubuntu; `make "
    "setup-postgres` does it as root), `brew install postgresql@15` (macOS), or set "
    "DLTRACK_PG_BINDIR to the folder holding initdb and pg_ctl."
)


#: Where Debian and Ubuntu put each PostgreSQL version's server binaries (``<version>/bin``).
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: Seconds any one PostgreSQL command (initdb, pg_ctl, psql) may take before it is given up on:
#: longer than ``pg_ctl start -t``'s own bound.
COMMAND_TIMEOUT = 600


class PostgresError(RuntimeError):
    """The cluster cannot be created, started or reached; the message names the cause."""


def server_binaries() -> Path:
    """The folder holding PostgreSQL's ``initdb``, ``pg_ctl`` and ``postgres``.

    Order: ``$DLTRACK_PG_BINDIR``; ``pg_config --bindir``; Debian's versioned folders
    ``/usr/lib/postgresql/<version>/bin`` (newest first); ``initdb`` on ``PATH``.

    Raises:
        PostgresError: none has the server binaries; the message says how to install them.
    """
    candidates: list[Path] = []
    if env := os.environ.get("DLTRACK_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=60
        )
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        DEBIAN_ROOT.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += debian
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresError(f"PostgreSQL server binaries not found. {INSTALL_HINT}")


def write_private(path: Path, text: str, replace: bool = False) -> None:
    """Write ``text`` to ``path``, readable by its owner only and whole or not at all: the text
    goes to a new temporary file in the same folder, created with mode 0600 (never widened and
    narrowed afterwards), flushed to disk (``fsync``), then put in place in one step
    (``os.replace``; ``os.link`` when an existing file must not be replaced). A reader sees the
    old file or the whole new one, never a part.

    Args:
        path: the file; its folder must exist.
        text: what it holds (a password).
        replace: replace an existing file; otherwise an existing file raises.

    Raises:
        FileExistsError: ``path`` exists and ``replace`` is false.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass
class PostgresCluster:
    """One PostgreSQL cluster: data in ``folder / "data"``, its socket in ``folder / "run"``,
    its log in ``folder / "postgres.log"``, listening on 127.0.0.1:``port`` only.

    Args:
        folder: the cluster's own folder (created; handed to the ``postgres`` user as root).
        port: TCP port on 127.0.0.1.
        superuser_password: the password of the ``postgres`` superuser (set by :meth:`init`).
    """

    folder: Path
    port: int
    superuser_password: str

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server puts its Unix socket."""
        return self.folder / "run"

    @property
    def log_file(self) -> Path:
        """The server's log (``pg_ctl -l``)."""
        return self.folder / "postgres.log"

    @property
    def service_user(self) -> str | None:
        """The OS user the server runs as: ``postgres`` when we are root, else ourselves."""
        return "postgres" if os.geteuid() == 0 else None

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(server_binaries() / program), *args]
        return (
            ["runuser", "-u", self.service_user, "--", *command] if self.service_user else command
        )

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            self._command(program, *args), capture_output=True, text=True, check=False,
            timeout=COMMAND_TIMEOUT,
        )
        if check and out.returncode != 0:
            raise PostgresError(
                f"{program} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()}"
                f"{self._log_hint()}"
            )
        return out

    def _log_hint(self) -> str:
        tail = log_tail(self.log_file, 6)
        return f"\nPostgreSQL log, last lines:\n{tail}" if tail else ""

    @property
    def initialized(self) -> bool:
        """True once ``initdb`` has made the cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    def _check_writable(self) -> None:
        """The service user must be able to write the cluster's folder."""
        if self.service_user is None:
            ok = os.access(self.folder, os.W_OK | os.X_OK)
        else:
            probe = ["runuser", "-u", self.service_user, "--", "test", "-w", str(self.folder)]
            ok = subprocess.run(probe, check=False, timeout=60).returncode == 0
        if not ok:
            who = f"the {self.service_user!r} OS user" if self.service_user else "this user"
            raise PostgresError(
                f"The PostgreSQL folder {self.folder} is not writable by {who} (check the "
                "permissions of it and of every folder above it; as root, PostgreSQL runs as "
                "'postgres', which cannot enter a folder such as /root). Move the project, or "
                "set DLTRACK_TEAM_HOME to a folder it can write."
            )

    def init(self) -> None:
        """Create the cluster with ``initdb`` (once): UTF-8, SCRAM password authentication for
        every connection, the superuser ``postgres`` with :attr:`superuser_password`.

        Raises:
            PostgresError: the folder is not writable by the service user, or initdb failed.
        """
        if self.initialized:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.socket_dir.mkdir(exist_ok=True)
        except OSError as err:
            raise PostgresError(
                f"Cannot create the PostgreSQL folder {self.folder}: {err}"
            ) from None
        password_file = self.folder / ".initdb-password"
        write_private(password_file, self.superuser_password, replace=True)
        if self.service_user:
            shutil.chown(self.folder, self.service_user, self.service_user)
            for path in (self.socket_dir, password_file):
                shutil.chown(path, self.service_user, self.service_user)
        self.folder.chmod(0o700)
        try:
            self._check_writable()
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8",
                "--auth=scram-sha-256", f"--pwfile={password_file}",
            )  # fmt: skip
        finally:
            password_file.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        """True while the server runs and accepts TCP connections on its port."""
        if not self.initialized:
            return False
        status = self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False)
        return status.returncode == 0 and port_in_use(self.port)

    def _wait_for_old_postmaster(self, timeout: float = 30.0) -> None:
        """After a crash, wait until the old server process is gone, also as a zombie: its
        lock file names its PID, and PostgreSQL refuses to start while that PID exists.

        Raises:
            PostgresError: the old process is still there after ``timeout`` seconds.
        """
        pid = self.postmaster_pid()
        try:
            if pid is None or "postgres" not in psutil.Process(pid).name():
                return  # gone, or the PID now belongs to another program: PostgreSQL copes
        except psutil.Error:
            return
        deadline = time.monotonic() + timeout
        while psutil.pid_exists(pid):
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"The old PostgreSQL process {pid} of {self.data_dir} has not exited after "
                    f"{timeout:.0f} s; stop it (kill {pid}) and start again."
                )
            time.sleep(0.2)

    def start(self, timeout: int = 60) -> None:
        """Start the server (initdb first if needed); no-op when it already runs.

        Raises:
            PostgresError: the port is taken by something else, the folder is not writable, or
                the server did not start; the message names the cause and shows its log.
        """
        self.init()
        if self.running:
            return
        if port_in_use(self.port):
            raise PostgresError(
                f"Port {self.port} on 127.0.0.1 is already in use, so PostgreSQL cannot listen "
                "there; stop what uses it or choose another port (DLTRACK_TEAM_PG_PORT)."
            )
        self._wait_for_old_postmaster()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} "
            f"-c unix_socket_directories={self.socket_dir} -c max_connections=200"
        )
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
            "-t", str(timeout), "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast shutdown: open transactions roll back); no-op if stopped."""
        if self.initialized and self.running:
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")

    def postmaster_pid(self) -> int | None:
        """The server's main process id while it runs."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def connection_params(self, dbname: str = "postgres") -> dict[str, object]:
        """What ``psycopg2.connect(**params)`` needs to reach ``dbname`` as the superuser
        ``postgres`` over TCP on 127.0.0.1 (the password included: keep it in this process)."""
        return {
            "host": "127.0.0.1", "port": self.port, "user": "postgres",
            "password": self.superuser_password, "dbname": dbname, "connect_timeout": 10,
        }  # fmt: skip

    def connect(self, dbname: str = "postgres"):
        """A psycopg2 connection as the superuser over TCP (autocommit on).

        Raises:
            psycopg2.OperationalError: the server is not running or refused the login.
        """
        import psycopg2

        connection = psycopg2.connect(**self.connection_params(dbname))
        connection.autocommit = True
        return connection

    @staticmethod
    def create_login_role(connection, name: str, password: str) -> None:
        """``CREATE ROLE name LOGIN PASSWORD ...`` with the password's SCRAM-SHA-256 hash, made
        here (``psycopg2.extensions.encrypt_password``): the password itself never reaches the
        server, so a failed statement cannot put it in PostgreSQL's log.

        Raises:
            psycopg2.errors.DuplicateObject: the role exists.
        """
        from psycopg2 import sql
        from psycopg2.extensions import encrypt_password

        hashed = encrypt_password(password, name, connection, "scram-sha-256")
        connection.cursor().execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)), (hashed,)
        )

    def ensure_database(self, name: str, owner: str, password: str) -> None:
        """Create the login role ``owner`` (with ``password``) and the database ``name`` it
        owns, unless they exist."""
        from psycopg2 import sql

        connection = self.connect()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,))
            if cursor.fetchone() is None:
                self.create_login_role(connection, owner, password)
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(owner)
                    )
                )
        finally:
            connection.close()
