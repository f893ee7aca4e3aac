"""Team mode: one MLflow tracking server for a class or a team, on PostgreSQL, with proxied
artifacts and MLflow's built-in authentication (:mod:`.server`, :mod:`.postgres`; the command
line is ``python -m dltrack.team``, behind ``make server``)."""

from dltrack.team.postgres import PostgresCluster, PostgresError, server_binaries
from dltrack.team.server import TeamServer, TeamServerError, team_home

__all__ = [
    "PostgresCluster",
    "PostgresError",
    "TeamServer",
    "TeamServerError",
    "server_binaries",
    "team_home",
]
