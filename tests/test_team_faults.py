"""Team mode under concurrency, with a real PostgreSQL and MLflow server: two ``python -m
dltrack.team start`` at once on a fresh folder, secret files replaced while a process reads
them, role passwords that never reach the server, user names that differ by case, and notebook
06's storage URL with an inline password kept out of every command line and output.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from dltrack import sweeps
from dltrack.processes import free_port
from dltrack.team import TeamServer
from dltrack.team.postgres import write_private
from teamstack import postgres_or_skip

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_hyperparameter_sweeps.ipynb"


def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dltrack.team", *args], env=dict(os.environ, **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_user_name_with_capitals_is_refused_and_the_message_names_the_lower_case_one(tmp_path):
    process = _cli("add-user", "Alice", env={"DLTRACK_TEAM_HOME": str(tmp_path / "team")})
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert "'Alice' is not a user name" in err and "use 'alice'" in err
    assert not (tmp_path / "team").exists()


#: Reads argv[1] until argv[2] exists; prints each distinct text it read, as JSON.
READER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    path, stop, seen = Path(sys.argv[1]), Path(sys.argv[2]), set()
    while not stop.exists():
        try:
            seen.add(path.read_text())
        except FileNotFoundError:
            seen.add("<missing>")
    print(json.dumps(sorted(seen)))
    """
)


@pytest.mark.timeout(120)
def test_a_secret_file_is_replaced_whole_and_private_while_another_process_reads_it(tmp_path):
    """Before: the file was removed and written anew (or truncated), so a reader saw it missing,
    empty or half written."""
    path, stop = tmp_path / "pgpass", tmp_path / "stop"
    short, long = "a" * 10 + "\n", "b" * 200_000 + "\n"
    write_private(path, short)
    with pytest.raises(FileExistsError):
        write_private(path, long)  # without replace=True an existing secret is kept
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(stop)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(0.5)
    try:
        for i in range(300):
            write_private(path, long if i % 2 else short, replace=True)
    finally:
        stop.touch()
    seen = json.loads(reader.communicate(timeout=60)[0])
    assert set(seen) <= {short, long} and seen, [s[:20] for s in seen]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pgpass", "stop"]  # no temporary left


@pytest.fixture(scope="module")
def two_starts():
    """Two ``python -m dltrack.team start`` at once on a folder that does not exist yet."""
    postgres_or_skip()
    parent = Path(tempfile.mkdtemp(prefix="dltrack-team-"))
    parent.chmod(0o755)  # 'postgres' must enter it when we are root
    home = parent / "team"
    env = {"DLTRACK_TEAM_HOME": str(home), "DLTRACK_TEAM_PORT": str(free_port()),
           "DLTRACK_TEAM_PG_PORT": str(free_port())}  # fmt: skip
    starts = [_cli("start", env=env) for _ in range(2)]
    outputs = [start.communicate(timeout=600) for start in starts]
    server = TeamServer.from_env(home)
    yield server, starts, outputs
    server.stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.timeout(900)
def test_two_starts_at_once_make_one_server_and_both_report_it(two_starts):
    """Before: one start won, the other failed with initdb's "directory exists but is not
    empty" (or, on a folder started before, started a second server over ``server.json``)."""
    server, starts, outputs = two_starts
    assert [start.returncode for start in starts] == [0, 0], outputs
    assert all("initdb" not in err for _, err in outputs)
    assert server.healthy() and server.postgres.running
    pid = server.server_pid()
    for out, _ in outputs:
        assert f"mlflow server  {server.url} running (pid {pid}," in out
    mlflow_servers = [
        p for p in psutil.process_iter(["cmdline"])
        if (cmd := p.info["cmdline"] or []) and cmd[1:4] == ["-m", "mlflow", "server"]
        and str(server.port) in cmd
    ]  # fmt: skip
    assert [p.pid for p in mlflow_servers] == [pid]
    state = json.loads((server.home / "server.json").read_text())
    assert state["process"]["pid"] == pid
    assert stat.S_IMODE((server.home / "server.json").stat().st_mode) == 0o600


@pytest.mark.timeout(300)
def test_a_role_password_is_hashed_before_it_is_sent(two_starts):
    """A CREATE ROLE that fails is logged by PostgreSQL with its statement. Before: the
    statement held the password in clear, so the log did."""
    import psycopg2

    server = two_starts[0]
    password = "never-in-the-log-" + os.urandom(6).hex()
    connection = server.postgres.connect()
    try:
        server.postgres.create_login_role(connection, "mallory", password)
        with pytest.raises(psycopg2.errors.DuplicateObject):
            server.postgres.create_login_role(connection, "mallory", password)
    finally:
        connection.close()
    log = server.postgres.log_file.read_text()
    assert 'role "mallory" already exists' in log and "SCRAM-SHA-256$" in log
    assert password not in log
    as_mallory = psycopg2.connect(host="127.0.0.1", port=server.pg_port, user="mallory",
                                  password=password, dbname="postgres", connect_timeout=10)  # fmt: skip
    as_mallory.close()


@pytest.mark.timeout(600)
def test_a_storage_url_with_a_password_is_in_no_command_line_and_no_output(two_starts, tmp_path):
    """Notebook 06's cells up to the scale-out, with ``DLTRACK_OPTUNA_STORAGE`` holding the
    password inline (the form most guides show). The workers are a stand-in ``python`` that
    records its command line: the password is neither there, nor in ``ps`` while it runs, nor in
    anything the notebook printed. Before: the storage URL was a worker argument and printed."""
    import nbformat

    from dltrack.team.studies import STUDY_DB, STUDY_ROLE, ensure_study_storage

    server = two_starts[0]
    ensure_study_storage(server)
    password = (server.secrets_dir / "optuna-db-password").read_text().strip()
    url = f"postgresql+psycopg2://{STUDY_ROLE}:{password}@127.0.0.1:{server.pg_port}/{STUDY_DB}"
    argv_file = tmp_path / "argv.txt"
    stand_in = tmp_path / "python"
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {argv_file}\nsleep 2\nexit 0\n')
    stand_in.chmod(0o755)
    cells = []
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code":
            cells.append("\n".join(l for l in cell.source.splitlines() if not l.startswith("%")))  # noqa: E741
            if "subprocess.Popen(" in cell.source:
                break
    script = "\n\n".join(cells).replace(
        "import warnings\n", f"import warnings\nsys.executable = {str(stand_in)!r}\n", 1
    )
    notebook = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, env=dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}",
                               MPLBACKEND="Agg", DLTRACK_SWEEP_TRIALS="2",
                               **{sweeps.STORAGE_ENV_VAR: url}),
    )  # fmt: skip
    command_lines = set()
    while notebook.poll() is None:
        for process in psutil.process_iter(["cmdline"]):
            command_lines.add(" ".join(process.info["cmdline"] or []))
        time.sleep(0.2)
    out, err = notebook.communicate(timeout=60)
    assert notebook.returncode == 0, err[-3000:]
    for text in (out, err, argv_file.read_text(), "\n".join(command_lines)):
        assert password not in text
    assert argv_file.read_text().count("dltrack.sweeps") == 2  # both workers ran
    assert "join from another terminal" in out and "***" in out
