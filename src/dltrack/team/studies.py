"""Optuna studies in the team PostgreSQL (notebook 06): a database ``optuna`` owned by a role
``optuna`` of its own, apart from MLflow's databases and role, so a sweep's workers never hold
the credentials of the tracking store.

The role's password is generated once into ``<team home>/secrets/optuna-db-password`` and
written to a libpq password file, ``secrets/optuna-pgpass`` (both mode 0600). The storage URL
names that file (``?passfile=...``), not the password, so it can be printed, logged as a param
and passed on a worker's command line::

    eval "$(python -m dltrack.team.studies env)"   # sets DLTRACK_OPTUNA_STORAGE

Run it on the machine of ``make server`` (it needs the team folder's superuser password to
create the role and the database the first time; later calls change nothing).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from dltrack.sweeps import STORAGE_ENV_VAR
from dltrack.team.postgres import PostgresError, write_private
from dltrack.team.server import TeamServer, TeamServerError, secret

__all__ = ["STUDY_DB", "STUDY_ROLE", "ensure_study_storage", "main"]

STUDY_DB = "optuna"
STUDY_ROLE = "optuna"


def ensure_study_storage(server: TeamServer) -> str:
    """Create the role and the database of the studies unless they exist (PostgreSQL must run:
    ``make server``); return the storage URL, e.g.
    ``postgresql+psycopg2://optuna@127.0.0.1:54329/optuna?passfile=<home>/secrets/optuna-pgpass``.

    Raises:
        TeamServerError: PostgreSQL is not running or refused; the message says what to do.
    """
    if not server.postgres.running:
        raise TeamServerError(
            f"The team PostgreSQL on 127.0.0.1:{server.pg_port} is not running: make server"
        )
    password = secret(server.secrets_dir / "optuna-db-password")
    try:
        server.postgres.ensure_database(STUDY_DB, STUDY_ROLE, password)
    except PostgresError as err:
        raise TeamServerError(str(err)) from None
    passfile = server.secrets_dir / "optuna-pgpass"
    line = f"127.0.0.1:{server.pg_port}:{STUDY_DB}:{STUDY_ROLE}:{password}\n"
    write_private(passfile, line, replace=True)
    return (
        f"postgresql+psycopg2://{STUDY_ROLE}@127.0.0.1:{server.pg_port}/{STUDY_DB}"
        f"?passfile={passfile}"
    )


def main(argv: list[str] | None = None) -> int:
    """``env``: print the shell line that sets ``$DLTRACK_OPTUNA_STORAGE`` to the team's study
    storage (creating it first); exit status 1 with a one-paragraph message on any failure
    (PostgreSQL not running, a refusal, a bad port), never a traceback."""
    parser = argparse.ArgumentParser(prog="python -m dltrack.team.studies", description=__doc__)
    parser.add_argument("command", choices=["env"])
    parser.parse_args(argv)
    from dltrack.team.__main__ import failure_message

    try:
        url = ensure_study_storage(TeamServer.from_env())
    except Exception as err:  # noqa: BLE001 - a command line answers in words, never a traceback
        print(f"error: {failure_message(err)}", file=sys.stderr)
        return 1
    print(f"export {STORAGE_ENV_VAR}={shlex.quote(url)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
