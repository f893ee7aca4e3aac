"""Team mode against a real stack: PostgreSQL started with initdb/pg_ctl, ``mlflow server`` with
its basic-auth app and proxied artifacts, on free ports on 127.0.0.1 (dltrack.team.TeamServer),
started once per test session (the ``team`` fixture in conftest.py), the stack notebooks 05 and
06 run on. The test that kills both servers and starts them again is marked
``destroys_servers``: conftest.py orders it after every other test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
import requests
from mlflow import MlflowClient

from dltrack import serving, tracking
from dltrack.serving.process import free_port
from dltrack.team import PostgresError, TeamServer, TeamServerError, server_binaries
from executions import DDP, SWEEPS
from teamstack import postgres_or_skip, team_home

pytestmark = pytest.mark.team


@pytest.fixture(scope="module")
def accounts(team_accounts) -> dict[str, dict[str, str]]:
    """Two learners, alice and bob: their client environments (the session's accounts)."""
    return team_accounts


def _as(monkeypatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])


@pytest.fixture()
def restore_tracking():
    yield
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


def _auth(env: dict[str, str]) -> tuple[str, str]:
    return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


# -- credentials --------------------------------------------------------------------------------
def test_secrets_are_generated_private_and_never_logged(team, accounts):
    secrets = sorted(p for p in team.secrets_dir.rglob("*") if p.is_file())
    assert {p.name for p in secrets} >= {"admin-password", "flask-secret-key", "alice", "bob"}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets)
    assert team.secrets_dir.stat().st_mode & 0o777 == 0o700
    logs = team.log_file.read_text() + team.postgres.log_file.read_text()
    config = (team.home / "basic_auth.ini").read_text()
    command_lines = " ".join(  # a process that exits meanwhile, or a zombie, has no cmdline
        " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    )
    for path in secrets:
        value = path.read_text().strip()
        assert value not in logs and value not in config and value not in command_lines
    admin = ("admin", team.admin_password())
    url = f"{team.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, auth=admin, timeout=30).status_code == 200
    assert requests.get(url, auth=("admin", "password1234"), timeout=30).status_code == 401


def test_wrong_or_missing_password_is_401(team, accounts):
    url = f"{team.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, auth=("alice", "not-her-password"), timeout=30).status_code == 401
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, auth=_auth(accounts["alice"]), timeout=30).status_code == 200


# -- the notebooks, unchanged ---------------------------------------------------------------------
TEAM_NOTEBOOKS = {  # notebook: its experiment, run name and registered model
    DDP: ("fashion_images_prediction_ddp", "ddp-cnn", "fmnist-image-predictor-ddp"),
    SWEEPS: ("fashion_images_prediction_sweeps", "sweep", "fmnist-image-predictor-sweep"),
}


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", sorted(TEAM_NOTEBOOKS))
def test_team_mode_notebooks_track_as_alice_and_print_no_secret(notebook, notebooks, team, as_alice):
    """Notebooks 05 and 06 ran unchanged against the server as alice: both runs are hers and
    FINISHED, the executed copies hold no password, and they link the server's training view
    (MLflow's own GenAI overview link is off)."""
    experiment, run_name, model = TEAM_NOTEBOOKS[notebook]
    texts = [notebooks.execution(notebook, round_).executed.read_text() for round_ in (1, 2)]
    password = os.environ["MLFLOW_TRACKING_PASSWORD"]
    assert not [text for text in texts if password in text]
    client = as_alice
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"attributes.run_name = '{run_name}'",
                              order_by=["attributes.start_time DESC"])  # fmt: skip
    assert len(runs) == 2
    assert {(run.info.status, run.info.user_id) for run in runs} == {("FINISHED", "alice")}
    assert tracking.run_url(found.experiment_id, runs[0].info.run_id, team.url) in texts[1]
    assert "View experiment at" not in texts[1]
    assert client.get_model_version_by_alias(model, "champion").tags["promotion"]


@pytest.mark.notebook
def test_the_team_champion_loads_and_serves_through_the_artifact_proxy(notebooks, as_alice):
    """Notebook 05's champion, by alias and by its logged model's URI, through the server's
    artifact proxy, and served by ``mlflow models serve`` signed in as alice: the same answers."""
    notebooks.second(DDP)
    model = TEAM_NOTEBOOKS[DDP][2]
    champion = as_alice.get_model_version_by_alias(model, "champion")
    images = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    by_alias = mlflow.pyfunc.load_model(f"models:/{model}@champion").predict(images)
    by_source = mlflow.pyfunc.load_model(champion.source).predict(images)
    np.testing.assert_allclose(by_alias, by_source, atol=1e-6)
    with serving.ModelServer(f"models:/{model}@champion") as server:
        served = serving.predict(server.url, images)
    np.testing.assert_allclose(served, by_alias, atol=1e-5)


@pytest.mark.browser
def test_the_servers_ui_shows_the_runs_and_the_registered_models(notebooks, team, as_alice, browser):
    """alice signs in to the server's UI and sees the team-mode notebooks' runs and registered
    models (the same page any team member opens)."""
    for notebook in TEAM_NOTEBOOKS:
        notebooks.second(notebook)
    password = os.environ["MLFLOW_TRACKING_PASSWORD"]
    context = browser.new_context(
        http_credentials={"username": "alice", "password": password},
        viewport={"width": 1440, "height": 900},
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    for experiment, run_name, _ in TEAM_NOTEBOOKS.values():
        found = as_alice.get_experiment_by_name(experiment)
        page.goto(tracking.experiment_url(found.experiment_id, base=team.url))
        page.get_by_role("link", name=run_name, exact=True).first.wait_for()
    page.goto(tracking.registry_url(base=team.url))
    for _, _, model in TEAM_NOTEBOOKS.values():
        page.get_by_role("link", name=model, exact=True).first.wait_for()
    context.close()


# -- concurrent logging ----------------------------------------------------------------------------
LOGGER = textwrap.dedent(
    """
    import sys, mlflow
    mlflow.set_experiment("team-concurrency")
    with mlflow.start_run(run_name=sys.argv[1]) as run:
        for step in range(int(sys.argv[2])):
            mlflow.log_metric("m", step / 7, step=step, synchronous=False)
    print(run.info.run_id)
    """
)


def test_four_processes_log_500_metrics_each_and_none_is_lost(team, accounts, monkeypatch):
    env = dict(os.environ, **accounts["bob"])
    requests.post(  # made once: MLflow grants its creator MANAGE only after creating it
        f"{team.url}/api/2.0/mlflow/experiments/create", json={"name": "team-concurrency"},
        auth=_auth(accounts["bob"]), timeout=30,
    ).raise_for_status()  # fmt: skip
    processes = [
        subprocess.Popen([sys.executable, "-c", LOGGER, f"logger-{i}", "500"], env=env,
                         stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]  # fmt: skip
    run_ids = []
    for process in processes:
        out, _ = process.communicate(timeout=600)
        assert process.returncode == 0
        run_ids.append(out.strip().splitlines()[-1])
    client = MlflowClient(team.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", accounts["bob"]["MLFLOW_TRACKING_PASSWORD"])
    for run_id in run_ids:
        history = client.get_metric_history(run_id, "m")
        assert sorted(m.step for m in history) == list(range(500))
        assert {m.step: m.value for m in history}[499] == pytest.approx(499 / 7)


# -- permissions ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alices_work(team, accounts):
    """An experiment, a run and a registered model created by alice."""
    auth = _auth(accounts["alice"])
    api = f"{team.url}/api/2.0/mlflow"
    experiment_id = requests.post(
        f"{api}/experiments/create", json={"name": "alice-private"}, auth=auth, timeout=30
    ).json()["experiment_id"]
    run_id = requests.post(
        f"{api}/runs/create", json={"experiment_id": experiment_id}, auth=auth, timeout=30
    ).json()["run"]["info"]["run_id"]
    requests.post(
        f"{api}/registered-models/create", json={"name": "alice-model"}, auth=auth, timeout=30
    ).raise_for_status()
    return {"experiment_id": experiment_id, "run_id": run_id, "model": "alice-model"}


def _bob_reads_and_writes(team, accounts, work) -> dict[str, int]:
    auth, api = _auth(accounts["bob"]), f"{team.url}/api/2.0/mlflow"
    calls = {
        "read experiment": ("GET", "experiments/get", {"experiment_id": work["experiment_id"]}),
        "read run": ("GET", "runs/get", {"run_id": work["run_id"]}),
        "read model": ("GET", "registered-models/get", {"name": work["model"]}),
        "write run": ("POST", "runs/log-metric", {"run_id": work["run_id"], "key": "x",
                                                  "value": 1.0, "timestamp": 0, "step": 0}),
        "write experiment": ("POST", "experiments/update", {"experiment_id": work["experiment_id"],
                                                            "new_name": "taken-by-bob"}),
        "write model": ("PATCH", "registered-models/update", {"name": work["model"],
                                                              "description": "bob was here"}),
    }  # fmt: skip
    codes = {}
    for what, (method, path, body) in calls.items():
        kwargs = {"params": body} if method == "GET" else {"json": body}
        codes[what] = requests.request(
            method, f"{api}/{path}", auth=auth, timeout=30, **kwargs
        ).status_code
    return codes


def test_a_new_user_sees_nothing_of_another_users_work(team, accounts, alices_work):
    assert _bob_reads_and_writes(team, accounts, alices_work) == dict.fromkeys(
        ["read experiment", "read run", "read model", "write run", "write experiment", "write model"],
        403,
    )  # fmt: skip
    found = requests.get(
        f"{team.url}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1000}, auth=_auth(accounts["bob"]), timeout=30,
    ).json().get("experiments", [])  # fmt: skip
    assert "alice-private" not in [e["name"] for e in found]


def test_read_permission_lets_bob_read_but_not_write(
    team, accounts, alices_work, monkeypatch, restore_tracking
):
    _as(monkeypatch, accounts["alice"])  # the owner has MANAGE and grants it herself
    from mlflow.server import get_app_client

    alice = get_app_client("basic-auth", tracking_uri=team.url)
    alice.grant_user_permission("bob", "experiment", alices_work["experiment_id"], "READ")
    alice.grant_user_permission("bob", "registered_model", alices_work["model"], "READ")
    codes = _bob_reads_and_writes(team, accounts, alices_work)
    assert codes == {
        "read experiment": 200, "read run": 200, "read model": 200,
        "write run": 403, "write experiment": 403, "write model": 403,
    }  # fmt: skip


# -- start-up and recovery -------------------------------------------------------------------------
def test_missing_postgresql_says_how_to_install_it(monkeypatch, tmp_path):
    from dltrack.team import postgres

    monkeypatch.delenv("DLTRACK_PG_BINDIR", raising=False)
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_ROOT", tmp_path)
    with pytest.raises(PostgresError, match=r"not found\. Install .*apt-get install postgresql"):
        server_binaries()
    monkeypatch.setenv("DLTRACK_PG_BINDIR", str(tmp_path))  # a folder without the binaries
    with pytest.raises(PostgresError, match="brew install postgresql"):
        server_binaries()


def test_starting_again_is_harmless(team):
    pid, postmaster = team.server_pid(), team.postgres.postmaster_pid()
    team.start()
    assert team.server_pid() == pid and team.postgres.postmaster_pid() == postmaster


def test_a_taken_port_is_named_before_anything_starts():
    postgres_or_skip()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for server, which in [
            (TeamServer(team_home(), port=port, pg_port=free_port()), "the MLflow server"),
            (TeamServer(team_home(), port=free_port(), pg_port=port), "PostgreSQL"),
        ]:
            with pytest.raises(
                TeamServerError,
                match=f"Port {port} on 127.0.0.1 is already in use, so {which} cannot listen",
            ):
                server.start()
            assert not server.postgres.running and server.server_pid() is None
            shutil.rmtree(server.home, ignore_errors=True)


def test_an_unwritable_folder_is_named(tmp_path):
    postgres_or_skip()
    if (
        os.geteuid() == 0
    ):  # as root, PostgreSQL runs as 'postgres', which cannot enter a 0700 folder
        parent = Path(tempfile.mkdtemp(prefix="dltrack-locked-"))  # mode 0700, owned by root
        home = parent / "team"
    else:
        home = tmp_path / "team"
        home.mkdir()
        home.chmod(0o555)
    server = TeamServer(home, port=free_port(), pg_port=free_port())
    try:
        with pytest.raises(TeamServerError, match="is not writable by"):
            server.start()
        assert server.server_pid() is None
    finally:
        if home.exists():
            home.chmod(0o755)
        shutil.rmtree(home.parent if os.geteuid() == 0 else home, ignore_errors=True)


# -- files, secrets, accounts and the command line -------------------------------------------------
def _cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, DLTRACK_TEAM_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "dltrack.team", *args], env=environment, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def _one_paragraph_error(out: subprocess.CompletedProcess, *expected: str) -> None:
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr and out.stderr.startswith("error: "), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for text in expected:
        assert text in out.stderr


@pytest.mark.parametrize(
    ("command", "name"),
    [("add-user", ".."), ("add-user", "a" * 300), ("add-user", "bob smith"), ("add-user", ""),
     ("env", "../admin-password"), ("env", ".."), ("env", "a" * 300)],
)  # fmt: skip
def test_every_command_refuses_a_bad_user_name_in_one_paragraph(command, name, tmp_path):
    out = _cli(command, name, home=tmp_path / "team")
    _one_paragraph_error(out, "is not a user name", "1 to 64 characters")
    assert not (tmp_path / "team").exists()  # nothing written, no file read


@pytest.mark.parametrize(
    ("command", "port"),
    [(["start"], "abc"), (["stop"], "abc"), (["status"], "abc"), (["add-user", "bob"], "abc"),
     (["env", "bob"], "abc"), (["status"], "0"), (["status"], "70000")],
)  # fmt: skip
def test_a_bad_port_is_named_in_one_paragraph(command, port, tmp_path):
    out = _cli(*command, home=tmp_path / "team", DLTRACK_TEAM_PORT=port)
    _one_paragraph_error(out, f"DLTRACK_TEAM_PORT='{port}' is not a TCP port")


def test_a_stopped_server_is_named_in_one_paragraph(tmp_path):
    _one_paragraph_error(
        _cli("add-user", "bob", home=tmp_path / "team", DLTRACK_TEAM_PORT=str(free_port())),
        "is not running: make server",
    )
    _one_paragraph_error(_cli("env", "bob", home=tmp_path / "team"), "no account 'bob'")


def test_make_passes_the_name_quoted(tmp_path):
    from dltrack.config import project_root

    marker = tmp_path / "pwned"
    out = subprocess.run(
        ["make", "-s", "-C", str(project_root()), f"PY={sys.executable}", "server-env",
         f"NAME=x; touch {marker}"],
        env=dict(os.environ, DLTRACK_TEAM_HOME=str(tmp_path / "team")), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert not marker.exists()
    assert "'x; touch" in out.stderr and "is not a user name" in out.stderr


class _RefusingAdmin:
    """Stands in for MLflow's auth client: the server refuses to create the account."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self):
        return self

    def create_user(self, username, password):
        from mlflow.exceptions import MlflowException

        raise MlflowException(f"refused {username}")


def test_a_failed_account_creation_keeps_no_password_file(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    server = TeamServer(tmp_path / "team", port=free_port(), pg_port=free_port())
    monkeypatch.setattr(TeamServer, "healthy", lambda self: True)
    monkeypatch.setattr(TeamServer, "admin_client", lambda self: _RefusingAdmin())
    with pytest.raises(MlflowException, match="refused carol"):
        server.add_user("carol")
    assert not server.password_file("carol").exists()  # the next add-user tries again


def test_the_initdb_password_file_is_0600_from_its_first_byte(tmp_path, monkeypatch):
    from dltrack.team.postgres import PostgresCluster

    seen = {}

    def initdb(self, program, *args, check=True):
        pwfile = Path(next(a for a in args if a.startswith("--pwfile=")).split("=", 1)[1])
        seen["mode"] = pwfile.stat().st_mode & 0o777

    monkeypatch.setattr(PostgresCluster, "_run", initdb)
    monkeypatch.setattr(PostgresCluster, "_check_writable", lambda self: None)
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)  # no narrowing afterwards
    monkeypatch.setattr(shutil, "chown", lambda *a, **k: None)
    old = os.umask(0o022)
    try:
        PostgresCluster(tmp_path / "pg", free_port(), "s3cret").init()
    finally:
        os.umask(old)
    assert seen["mode"] == 0o600


def test_the_team_folder_is_private_and_postgresql_still_enters(team, accounts):
    assert team.postgres.running  # it entered .team/ to reach .team/postgres
    assert team.home.stat().st_mode & 0o007 == 0 and team.home.stat().st_mode & 0o060 == 0
    for folder in (team.artifacts_dir, team.secrets_dir):
        assert folder.stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:  # another local account cannot list the artifacts from disk
        ls = ["runuser", "-u", "nobody", "--", "ls", str(team.artifacts_dir)]
        assert subprocess.run(ls, capture_output=True, check=False).returncode != 0


def test_the_admin_password_is_not_left_in_this_process(team, accounts, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    team.add_user("carol")
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ


def test_a_name_taken_on_the_server_is_one_paragraph(team, accounts):
    with team.admin_client() as admin:
        admin.create_user("dave", "made-elsewhere-1234")
    out = _cli("add-user", "dave", home=team.home)
    _one_paragraph_error(out, "refused", "dave")
    assert not team.password_file("dave").exists()


def test_stop_never_signals_a_pid_that_is_no_longer_the_server(tmp_path):
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        home = tmp_path / "team"
        home.mkdir()
        recorded = {"pid": bystander.pid, "create_time": 1.0, "command": ["mlflow", "server"]}
        (home / "server.json").write_text(json.dumps(
            {"port": free_port(), "pg_port": free_port(), "pid": bystander.pid, "process": recorded}
        ))  # fmt: skip
        server = TeamServer.from_env(home)
        assert server.server_pid() is None
        server.stop_server(timeout=2)
        assert bystander.poll() is None  # still running: the pid was someone else's
    finally:
        bystander.kill()
        bystander.wait()


# -- recovery: SIGKILL in the middle of logging (ordered last: it restarts both servers) ----------------
def _snapshot(team) -> dict:
    """Every run, metric history, artifact list and registered version alice can see."""
    client = MlflowClient(team.url)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], max_results=1000)
    return {
        "runs": sorted(r.info.run_id for r in runs),
        "metrics": {r.info.run_id: {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)]
                                    for k in r.data.metrics} for r in runs},
        "artifacts": {r.info.run_id: sorted(a.path for a in client.list_artifacts(r.info.run_id)) for r in runs},
        "versions": sorted((v.name, str(v.version), v.run_id) for v in client.search_model_versions()),
    }  # fmt: skip


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


#: Logs synchronously until the server fails it; after each acknowledged call, one line in the
#: file argv[2] (fsync'd): "metric <step>" or "version <n>" (registered, then aliased champion).
ACKNOWLEDGING_WRITER = textwrap.dedent(
    """
    import os, sys, mlflow
    from mlflow import MlflowClient
    kind, acks, model_uri = sys.argv[1], open(sys.argv[2], "a"), sys.argv[3]
    def ack(line):
        acks.write(line + "\\n"); acks.flush(); os.fsync(acks.fileno())
    mlflow.set_experiment("team-recovery")
    if kind == "metric":
        with mlflow.start_run():
            for step in range(100_000):
                mlflow.log_metric("acked", step / 3, step=step, synchronous=True)
                ack(f"metric {step}")
    else:
        for _ in range(10_000):
            version = mlflow.register_model(model_uri, "team-recovery-model").version
            MlflowClient().set_registered_model_alias("team-recovery-model", "champion", version)
            ack(f"version {version}")
    """
)


def _acks(path: Path, kind: str) -> list[int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(line.split()[1]) for line in lines if line.startswith(f"{kind} ")]


@pytest.mark.destroys_servers
def test_sigkill_in_the_middle_of_logging_loses_no_acknowledged_write(
    team, accounts, monkeypatch, restore_tracking, tmp_path
):
    """Both servers are SIGKILLed while one process logs metrics and another registers versions
    and moves the champion alias, each synchronously; after `python -m dltrack.team start`,
    every write the server acknowledged is there, and so is everything written before."""
    _as(monkeypatch, accounts["alice"])
    mlflow.set_experiment("team-recovery")
    with mlflow.start_run() as run:  # a run, metrics, an artifact and a logged model
        for step in range(20):
            mlflow.log_metric("loss", 1 / (step + 1), step=step)
        mlflow.log_text("kept", "notes/kept.txt")
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo())
    before = _snapshot(team)

    env = dict(os.environ, **accounts["alice"])
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="20",
               MLFLOW_ENABLE_ASYNC_LOGGING="false")  # fmt: skip
    acks = {kind: tmp_path / f"{kind}.acks" for kind in ("metric", "version")}
    writers = {
        kind: subprocess.Popen([sys.executable, "-c", ACKNOWLEDGING_WRITER, kind, str(path),
                                info.model_uri], env=env, stderr=subprocess.DEVNULL)
        for kind, path in acks.items()
    }  # fmt: skip
    deadline = time.monotonic() + 180
    while len(_acks(acks["metric"], "metric")) < 50 or len(_acks(acks["version"], "version")) < 3:
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers.values())
        time.sleep(0.1)

    postmaster = psutil.Process(team.postgres.postmaster_pid())
    os.killpg(team.server_pid(), signal.SIGKILL)  # while both writers are still writing
    for process in [postmaster, *postmaster.children()]:
        process.kill()
    for writer in writers.values():
        writer.wait(timeout=120)
        assert writer.returncode != 0  # it was stopped by the failure, not finished
    acked_steps, acked_versions = _acks(acks["metric"], "metric"), _acks(acks["version"], "version")

    out = subprocess.run([sys.executable, "-m", "dltrack.team", "start"], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, DLTRACK_TEAM_HOME=str(team.home)),
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert team.healthy() and team.postgres.running
    # the admin exists now: the restarted server was not given the admin's password
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in psutil.Process(team.server_pid()).environ()

    client = MlflowClient()
    (logged,) = client.search_runs(
        [client.get_experiment_by_name("team-recovery").experiment_id], "metrics.acked >= 0"
    )
    kept = {m.step: m.value for m in client.get_metric_history(logged.info.run_id, "acked")}
    assert set(acked_steps) <= set(kept) and all(kept[s] == pytest.approx(s / 3) for s in acked_steps)
    versions = {int(v.version) for v in client.search_model_versions("name='team-recovery-model'")}
    assert set(acked_versions) <= versions
    champion = int(client.get_model_version_by_alias("team-recovery-model", "champion").version)
    assert champion >= max(acked_versions)

    after = _snapshot(team)
    for key in ("metrics", "artifacts"):
        assert {r: after[key][r] for r in before["runs"]} == before[key]
    assert set(before["versions"]) <= set(after["versions"])
    path = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/notes/kept.txt")
    assert Path(path).read_text() == "kept"  # artifacts through the proxy, after the restart
    assert mlflow.pyfunc.load_model(f"models:/team-recovery-model/{champion}").predict([1, 2]) == [1, 2]
