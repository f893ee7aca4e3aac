"""``python -m dltrack.team``: the team tracking server from the command line (the Makefile's
``server``, ``server-stop``, ``server-status``, ``server-user`` and ``server-env`` call it).

    python -m dltrack.team start           # PostgreSQL + mlflow server, or nothing if running
    python -m dltrack.team stop            # both stop; the data stays
    python -m dltrack.team status          # what runs where
    python -m dltrack.team add-user NAME   # an account with a generated password (in a 0600 file)
    python -m dltrack.team env NAME        # shell lines that point a client at the server as NAME

No command prints a password: ``env`` prints a line that reads it from its file.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import requests

from dltrack.team.postgres import PostgresError
from dltrack.team.server import TeamServer, TeamServerError, check_username


def _run(args: argparse.Namespace) -> None:
    server = TeamServer.from_env()
    if args.command == "start":
        server.start()
        print("\n".join(server.status()))
        print(f"\nUI and tracking URI: {server.url} (sign in as a user; see docs/team-mode.md)")
    elif args.command == "stop":
        server.stop()
        print("\n".join(server.status()))
    elif args.command == "status":
        print("\n".join(server.status()))
    elif args.command == "add-user":
        path = server.add_user(args.name)
        print(f"account {args.name!r} on {server.url}; its password is in {path}")
        print(f"use it:  eval \"$(make -s server-env NAME={shlex.quote(args.name)})\"")
    else:
        env = server.client_env(args.name)
        for key, value in env.items():
            if key == "MLFLOW_TRACKING_PASSWORD":
                value = f"$(cat {shlex.quote(str(server.password_file(args.name)))})"
                print(f'export {key}="{value}"')
            else:
                print(f"export {key}={shlex.quote(value)}")


def failure_message(err: BaseException) -> str:
    """One paragraph for a failure: what went wrong, in words, no traceback."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # imported only if it was used
    if mlflow_exceptions and isinstance(err, mlflow_exceptions.MlflowException):
        text = f"the MLflow server refused or could not be reached: {err.message}"
    elif isinstance(err, requests.RequestException):
        text = f"the MLflow server could not be reached: {err}"
    elif isinstance(err, (TeamServerError, PostgresError, ValueError, OSError)):
        text = str(err) or type(err).__name__
    else:  # psycopg2's errors, anything unforeseen: still one paragraph, with its kind
        text = f"{type(err).__name__}: {err}"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 1 with a one-paragraph message on any failure (a
    known one in words: a bad name or port, a stopped server, a refusal; any other with the
    name of its exception), never a traceback."""
    parser = argparse.ArgumentParser(prog="python -m dltrack.team", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status"):
        commands.add_parser(name)
    for name in ("add-user", "env"):
        commands.add_parser(name).add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command in ("add-user", "env"):
            check_username(args.name)
        _run(args)
    except Exception as err:  # noqa: BLE001 - a command line answers in words
        print(f"error: {failure_message(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
