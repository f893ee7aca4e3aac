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

from dltrack.team.server import TeamServer, TeamServerError


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 1 with a one-paragraph message on a known failure."""
    parser = argparse.ArgumentParser(prog="python -m dltrack.team", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status"):
        commands.add_parser(name)
    for name in ("add-user", "env"):
        commands.add_parser(name).add_argument("name")
    args = parser.parse_args(argv)
    server = TeamServer.from_env()
    try:
        if args.command == "start":
            server.start()
            print("\n".join(server.status()))
            print(f"\nUI and tracking URI: {server.url} (sign in as a user; see the README)")
        elif args.command == "stop":
            server.stop()
            print("\n".join(server.status()))
        elif args.command == "status":
            print("\n".join(server.status()))
        elif args.command == "add-user":
            path = server.add_user(args.name)
            print(f"account {args.name!r} on {server.url}; its password is in {path}")
            print(f'use it:  eval "$(make -s server-env NAME={args.name})"')
        else:
            env = server.client_env(args.name)
            for key, value in env.items():
                if key == "MLFLOW_TRACKING_PASSWORD":
                    value = f"$(cat {shlex.quote(str(server.password_file(args.name)))})"
                    print(f'export {key}="{value}"')
                else:
                    print(f"export {key}={shlex.quote(value)}")
    except (TeamServerError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
