"""The team tracking server: MLflow's own ``mlflow server`` with a PostgreSQL backend store,
proxied artifacts and MLflow's basic-auth app, on 127.0.0.1, with its state in one folder.

What ``mlflow server`` alone does not do, and :class:`TeamServer` adds: a PostgreSQL cluster
with the team's role and databases, generated secrets kept in files only this user can read
(mode 0600), a configuration where a new user sees nothing of another user's work until it is
granted, a server that outlives the command that started it (``make server``) and is found
again by the next command, and clear errors when a port is taken or a folder is unwritable.

The folder is this user's only (0700; as root 0710 with the group ``postgres``, so that
PostgreSQL, which runs as the ``postgres`` user then, can enter it to reach its own folder and
nothing else); the artifacts are read through the server only, never from disk by others.

The folder (``<project>/.team`` by default, git-ignored; ``DLTRACK_TEAM_HOME`` overrides)::

    postgres/           the PostgreSQL cluster (data, socket, log); owned by 'postgres' as root
    artifacts/          0700: the artifact store the server proxies (--artifacts-destination)
    basic_auth.ini      MLflow's auth configuration (no secrets in it)
    secrets/            0700: admin-password, flask-secret-key, postgres-password,
                        mlflow-db-password, pgpass, users/<name> (each 0600)
    server.json         ports and the server's process (pid, start time, command line)
    mlflow-server.log   the server's log
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from dltrack import processes
from dltrack.config import project_root
from dltrack.processes import port_in_use
from dltrack.team.postgres import PostgresCluster, PostgresError, write_private

__all__ = ["TeamServer", "TeamServerError", "check_username", "secret", "team_home"]

#: What a new user may do with another user's experiments and models: nothing, until the
#: owner (who gets MANAGE on what they create) or an admin grants READ, EDIT or MANAGE.
DEFAULT_PERMISSION = "NO_PERMISSIONS"
#: Seconds a verified password stays verified in a server worker: MLflow checks a password
#: hash (PBKDF2, deliberately slow) on every request otherwise.
AUTH_CACHE_TTL_SECONDS = 60
ADMIN = "admin"
DB_ROLE = "mlflow"
TRACKING_DB = "mlflow"
AUTH_DB = "mlflow_auth"
#: A user name: a lower-case ASCII letter or digit, then those, '.', '_' or '-'; at most 64.
#: Lower case only: on a case-insensitive disk (macOS) ``Alice`` and ``alice`` would be two
#: accounts sharing one password file.
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: Seconds ``start`` waits for another ``start`` of the same folder beyond its own timeout.
START_LOCK_MARGIN = 120


class TeamServerError(RuntimeError):
    """The team server cannot start or be reached; the message names the cause."""


def team_home() -> Path:
    """``$DLTRACK_TEAM_HOME``, else ``<project>/.team``."""
    env = os.environ.get("DLTRACK_TEAM_HOME")
    return Path(env).expanduser().resolve() if env else project_root() / ".team"


def check_username(name: str) -> str:
    """``name`` if it is a valid user name, for every command that takes one.

    Names are refused, not changed, when they hold upper-case letters: the message names the
    lower-case form to use.

    Raises:
        ValueError: it is empty, longer than 64 characters, starts with something other than
            a lower-case ASCII letter or digit, or holds characters other than those, '.', '_'
            and '-'.
    """
    if not isinstance(name, str) or USERNAME.fullmatch(name) is None:
        shown = name if len(str(name)) <= 40 else f"{str(name)[:40]}... ({len(name)} characters)"
        lower = (
            f" (user names are lower case, so that two names never differ by case only: use "
            f"{name.lower()!r})"
            if isinstance(name, str) and USERNAME.fullmatch(name.lower())
            else ""
        )
        raise ValueError(
            f"{shown!r} is not a user name: expected 1 to 64 characters, lower-case ASCII "
            f"letters, digits, '.', '_' or '-', starting with a letter or digit{lower}"
        )
    return name


def _private_dir(path: Path, group_enters: bool = False) -> Path:
    """``path`` created if missing (its parent must exist), with no permission for others:
    the owner's bits kept (0700 when created), the group's cleared, or set to enter only
    (0710) when ``group_enters``."""
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(path.stat().st_mode & 0o700 | (0o010 if group_enters else 0))
    return path


def secret(path: Path, length: int = 24) -> str:
    """The secret stored in ``path``; generated (URL-safe, ``length`` random bytes) and written
    with mode 0600 from the first byte the first time.

    Raises:
        OSError: the file or its folder cannot be read or written.
    """
    if path.is_file():
        return path.read_text().strip()
    _private_dir(path.parent)
    value = secrets.token_urlsafe(length)
    try:
        write_private(path, value)
    except FileExistsError:  # another process made it meanwhile: theirs is the secret
        return path.read_text().strip()
    return value


@dataclass
class TeamServer:
    """PostgreSQL plus ``mlflow server --app-name basic-auth``, both on 127.0.0.1.

    Args:
        home: the state folder (see the module docstring); default :func:`team_home`.
        port: the MLflow server's port (``$DLTRACK_TEAM_PORT``, default 5050).
        pg_port: PostgreSQL's port (``$DLTRACK_TEAM_PG_PORT``, default 54329).
        workers: MLflow server worker processes.
    """

    home: Path
    port: int = 5050
    pg_port: int = 54329
    workers: int = 2

    @classmethod
    def from_env(cls, home: Path | None = None) -> TeamServer:
        """The server of ``home`` (default :func:`team_home`) on ``$DLTRACK_TEAM_PORT`` /
        ``$DLTRACK_TEAM_PG_PORT`` when set (so ``start`` can pick its ports), else the ports it
        was last started with (``server.json``), else the defaults.

        Raises:
            TeamServerError: a port is not a whole number from 1 to 65535.
        """
        home = home or team_home()
        state = cls._read_state(home)

        def port(variable: str, key: str, default: int) -> int:
            value = os.environ.get(variable) or state.get(key) or default
            try:
                number = int(value)
            except (TypeError, ValueError):
                number = -1
            if not 1 <= number <= 65535:
                raise TeamServerError(
                    f"{variable}={value!r} is not a TCP port: expected a whole number from 1 to "
                    "65535, e.g. 5050"
                )
            return number

        return cls(
            home=home,
            port=port("DLTRACK_TEAM_PORT", "port", 5050),
            pg_port=port("DLTRACK_TEAM_PG_PORT", "pg_port", 54329),
        )

    # -- where things are -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The tracking URI clients use, e.g. ``http://127.0.0.1:5050``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets_dir(self) -> Path:
        """The secrets folder (mode 0700)."""
        return self.home / "secrets"

    @property
    def log_file(self) -> Path:
        """The MLflow server's log."""
        return self.home / "mlflow-server.log"

    @property
    def artifacts_dir(self) -> Path:
        """Where the server stores the artifacts it proxies."""
        return self.home / "artifacts"

    @property
    def postgres(self) -> PostgresCluster:
        """The PostgreSQL cluster in ``home/postgres`` (its superuser's password is generated by
        :meth:`start`)."""
        path = self.secrets_dir / "postgres-password"
        password = path.read_text().strip() if path.is_file() else ""
        return PostgresCluster(self.home / "postgres", self.pg_port, password)

    def admin_password(self) -> str:
        """The admin's password (generated at first start; ``secrets/admin-password``)."""
        return secret(self.secrets_dir / "admin-password")

    def password_file(self, username: str) -> Path:
        """Where a user's password is kept (``secrets/users/<name>``, mode 0600).

        Raises:
            ValueError: ``username`` is not a user name (:func:`check_username`).
        """
        return self.secrets_dir / "users" / check_username(username)

    @staticmethod
    def _read_state(home: Path) -> dict:
        try:
            return json.loads((home / "server.json").read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, record: processes.ProcessRecord) -> None:
        state = {"port": self.port, "pg_port": self.pg_port, "process": record.to_dict()}
        write_private(self.home / "server.json", json.dumps(state), replace=True)

    def _record(self) -> processes.ProcessRecord | None:
        return processes.ProcessRecord.from_dict(self._read_state(self.home).get("process", {}))

    # -- state ------------------------------------------------------------------------------
    def server_pid(self) -> int | None:
        """The MLflow server's process id, while the process recorded in ``server.json`` (pid,
        start time and command line) is alive; ``None`` once its pid names another program."""
        record = self._record()
        return record.pid if record is not None and record.alive else None

    def healthy(self) -> bool:
        """True when the MLflow server answers ``/health`` on its port."""
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def status(self) -> list[str]:
        """What runs where, one line each (no secrets)."""
        pg = self.postgres
        return [
            f"state folder   {self.home}",
            f"postgresql     127.0.0.1:{self.pg_port} "
            + ("running" if pg.running else "stopped")
            + f" (data {pg.data_dir}, log {pg.log_file})",
            f"mlflow server  {self.url} "
            + ("running" if self.healthy() else "stopped")
            + f" (pid {self.server_pid() or '-'}, log {self.log_file})",
            f"artifacts      {self.artifacts_dir}",
            f"admin          {ADMIN}, password in {self.secrets_dir / 'admin-password'}",
        ]

    # -- start and stop ---------------------------------------------------------------------
    def _auth_config(self) -> Path:
        """MLflow's basic-auth configuration: users and permissions in PostgreSQL too."""
        path = self.home / "basic_auth.ini"
        path.write_text(
            "[mlflow]\n"
            f"default_permission = {DEFAULT_PERMISSION}\n"
            f"database_uri = postgresql+psycopg2://{DB_ROLE}@127.0.0.1:{self.pg_port}/{AUTH_DB}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = false\n"
            f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_SECONDS}\n"
        )
        return path

    def _pgpass(self, password: str) -> Path:
        """libpq's password file for the team's role: no password in any URI or command line."""
        path = self.secrets_dir / "pgpass"
        write_private(path, f"127.0.0.1:{self.pg_port}:*:{DB_ROLE}:{password}\n", replace=True)
        return path

    def command(self) -> list[str]:
        """The ``mlflow server`` command line (it holds no secret)."""
        backend = f"postgresql+psycopg2://{DB_ROLE}@127.0.0.1:{self.pg_port}/{TRACKING_DB}"
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            "--backend-store-uri", backend,
            "--artifacts-destination", str(self.artifacts_dir), "--serve-artifacts",
            "--app-name", "basic-auth",
            # uvicorn's workers on asyncio's loop leave Nagle's algorithm on: each response on
            # a reused connection then waits for a delayed ACK (Kludex/uvicorn#3149); uvloop not
            "--uvicorn-opts", "--loop uvloop",
        ]  # fmt: skip

    def start(self, timeout: float = 180.0) -> None:
        """Start PostgreSQL and the MLflow server, or leave them running if they already do.

        One ``start`` at a time per folder: it holds the folder's lock (``filelock``,
        ``start.lock``); a second one waits for the first, then finds both servers running and
        leaves them.

        Raises:
            TeamServerError: a folder is not writable, a port is taken, PostgreSQL or the
                server failed to start, or another ``start`` held the lock for ``timeout`` +
                :data:`START_LOCK_MARGIN` seconds; the message names the cause (and the log).
        """
        from filelock import FileLock, Timeout

        try:
            self._make_home()
        except (OSError, LookupError) as err:
            raise TeamServerError(f"Cannot create the team folder {self.home}: {err}") from None
        lock = FileLock(str(self.home / "start.lock"), timeout=timeout + START_LOCK_MARGIN)
        try:
            with lock:
                self._start(timeout)
        except Timeout:
            raise TeamServerError(
                f"Another start of the team server in {self.home} has held {lock.lock_file} "
                f"for {timeout + START_LOCK_MARGIN:.0f} s; wait for it to finish, then run "
                "make server-status."
            ) from None

    def _start(self, timeout: float) -> None:
        """:meth:`start`, with the folder's lock held."""
        try:
            secret(self.secrets_dir / "postgres-password")
        except OSError as err:
            raise TeamServerError(f"Cannot create the team folder {self.home}: {err}") from None
        if not self.postgres.running and port_in_use(self.pg_port):
            raise TeamServerError(
                f"Port {self.pg_port} on 127.0.0.1 is already in use, so PostgreSQL cannot "
                "listen there; stop what uses it or choose another port (DLTRACK_TEAM_PG_PORT)."
            )
        if not (self.server_pid() and self.healthy()) and port_in_use(self.port):
            raise TeamServerError(
                f"Port {self.port} on 127.0.0.1 is already in use, so the MLflow server cannot "
                "listen there; stop what uses it or choose another port (DLTRACK_TEAM_PORT)."
            )
        import psycopg2

        try:
            self.postgres.start()
            db_password = secret(self.secrets_dir / "mlflow-db-password")
            for database in (TRACKING_DB, AUTH_DB):
                self.postgres.ensure_database(database, DB_ROLE, db_password)
            if self.server_pid() and self.healthy():
                return
            env = self._server_env(db_password)
        except (PostgresError, psycopg2.Error) as err:
            raise TeamServerError(f"PostgreSQL on 127.0.0.1:{self.pg_port}: {err}") from None
        self.log_file.touch(mode=0o600)
        try:
            process, record = processes.start(
                self.command(), self.log_file, env=env, cwd=self.home, append=True
            )
        except OSError as err:
            raise TeamServerError(f"Cannot run the MLflow server: {err}") from None
        self._write_state(record)
        if processes.wait_until(self.healthy, lambda: process.poll() is None, timeout):
            return
        self.stop_server()
        raise TeamServerError(
            f"The MLflow server on {self.url} did not start. Its log ({self.log_file}), last "
            f"lines:\n{processes.log_tail(self.log_file, 15)}"
        )

    def _make_home(self) -> None:
        """The team folder, private: 0700; as root 0710 with the group ``postgres``, whose
        user runs PostgreSQL and must enter it to reach ``postgres/``."""
        self.home.parent.mkdir(parents=True, exist_ok=True)
        if self.postgres_user:
            self.home.mkdir(mode=0o700, exist_ok=True)
            shutil.chown(self.home, group=self.postgres_user)
        _private_dir(self.home, group_enters=bool(self.postgres_user))
        _private_dir(self.artifacts_dir)
        _private_dir(self.secrets_dir)
        if not os.access(self.home, os.W_OK):
            raise TeamServerError(f"The team folder {self.home} is not writable by this user.")

    @property
    def postgres_user(self) -> str | None:
        """The OS user PostgreSQL runs as, when it is not this user (``postgres`` as root)."""
        return PostgresCluster(self.home / "postgres", self.pg_port, "").service_user

    def _admin_exists(self) -> bool:
        """True once the server has created its admin account (in the auth database)."""
        connection = self.postgres.connect(AUTH_DB)
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT to_regclass('public.users') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return False
            cursor.execute("SELECT 1 FROM users WHERE username = %s", (ADMIN,))
            return cursor.fetchone() is not None
        finally:
            connection.close()

    def _server_env(self, db_password: str) -> dict[str, str]:
        """The server's environment: no client credentials; the admin's password only when
        MLflow still has to create the admin account (it reads it at start-up only then)."""
        env = dict(
            os.environ,
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            PGPASSFILE=str(self._pgpass(db_password)),
            MLFLOW_AUTH_CONFIG_PATH=str(self._auth_config()),
            MLFLOW_FLASK_SERVER_SECRET_KEY=secret(self.secrets_dir / "flask-secret-key"),
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # no background job runner: not used here
            # Database connections per store and worker: up to 20 for each of the tracking,
            # registry and auth stores in each worker, under PostgreSQL's max_connections=200.
            MLFLOW_SQLALCHEMYSTORE_POOL_SIZE="10",
            MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW="10",
        )
        for name in (
            "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_AUTH_ADMIN_PASSWORD",
        ):  # fmt: skip
            env.pop(name, None)
        if not self._admin_exists():
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password()
        return env

    def stop_server(self, timeout: float = 20.0) -> None:
        """Stop the MLflow server and its workers (SIGTERM, then SIGKILL after ``timeout``
        seconds), if the process recorded in ``server.json`` is still that server."""
        record = self._record()
        if record is not None:
            processes.stop(record, timeout=timeout)

    def stop(self) -> None:
        """Stop the MLflow server, then PostgreSQL; the data stays."""
        self.stop_server()
        self.postgres.stop()

    # -- users ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def admin_client(self) -> Iterator:
        """MLflow's auth client (``mlflow.server.get_app_client("basic-auth")``) as the admin,
        for the ``with`` block only::

            with server.admin_client() as admin:
                admin.create_user("carol", password)

        The client reads its credentials from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` at each
        call; they are set for the block and put back as they were after it, so no process
        started later inherits the admin's password.
        """
        from mlflow.server import get_app_client

        names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        saved = {name: os.environ.get(name) for name in names}
        try:
            os.environ.update(dict(zip(names, (ADMIN, self.admin_password()), strict=True)))
            # MLflow 3.17's auth app imports Starlette's deprecated WSGI middleware
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
                yield get_app_client("basic-auth", tracking_uri=self.url)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def add_user(self, username: str) -> Path:
        """Create a learner account through MLflow's auth API with a generated password, kept
        in :meth:`password_file` (mode 0600); return that file. Idempotent for an account this
        folder created.

        The account is created first; its password file is kept only once the server has
        created it, so a failed creation leaves nothing behind and can simply be tried again.

        Raises:
            ValueError: ``username`` is not a user name (:func:`check_username`).
            TeamServerError: the server is not running.
            mlflow.exceptions.MlflowException: the server refused (e.g. the name is taken by an
                account made elsewhere).
        """
        path = self.password_file(username)
        if path.is_file():
            return path
        if not self.healthy():
            raise TeamServerError(f"The team server on {self.url} is not running: make server")
        password = secrets.token_urlsafe(24)
        with self.admin_client() as admin:
            admin.create_user(username, password)
        _private_dir(path.parent)
        write_private(path, password)
        return path

    def client_env(self, username: str) -> dict[str, str]:
        """The environment a learner's notebooks need: tracking URI, user name and password,
        and MLflow's asynchronous logging, buffered: ``log_*`` calls return at once, and what
        arrives within a second goes to the server as one batch (without the buffering every
        call is its own request, and a class logging at once exhausts the server's database
        connections; MLflow's async logging drops a batch the server refuses). MLflow's own
        "View run" lines are switched off: against a server they link to the experiment's GenAI
        overview, and the notebooks print links to the training runs instead.

        Raises:
            FileNotFoundError: no such account in this folder (:meth:`add_user` makes it).
        """
        path = self.password_file(username)
        if not path.is_file():
            raise FileNotFoundError(
                f"no account {username!r} here: make server-user NAME={username}"
            )
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": path.read_text().strip(),
            "MLFLOW_ENABLE_ASYNC_LOGGING": "true",
            "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": "1",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        }
