"""What the team-mode tests share: PostgreSQL's presence, and a folder it can enter."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def postgres_or_skip() -> None:
    """Skip without PostgreSQL's server binaries, except in CI, where that fails the test."""
    from dltrack.team import PostgresError, server_binaries

    try:
        server_binaries()
    except PostgresError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test team mode: {err}")
        pytest.skip(str(err))


def team_home() -> Path:
    """A fresh state folder the 'postgres' user can enter (pytest's tmp_path, 0700 under
    /tmp/pytest-of-root, is not)."""
    home = Path(tempfile.mkdtemp(prefix="dltrack-team-"))
    home.chmod(0o755)
    return home
