"""Test session set-up: a throw-away MLflow store and Keras cache, small notebook parameters.

Set before any test module imports Keras or MLflow, and inherited by the notebook kernels the
``notebook_runs`` fixture starts (``tests/executions.py``), so ``make test`` never touches
``mlruns/`` or ``~/.keras``. Also here: the session's one team stack and one Chromium, and the
order of the tests (the notebooks' executions first, a test that destroys a server last).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ci_no_skips import pytest_sessionfinish  # noqa: F401 (under CI, a skip fails the run)

# One pytest process imports both frameworks. torchvision imported after TensorFlow crashes
# the interpreter (TF 2.21, torch 2.14.1); the other order is fine. The notebooks each run in
# their own kernel and are not affected.
try:
    import torchvision  # noqa: F401
except ImportError:
    pass

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="dltrack-tests-"))

# Small, fast notebook runs unless the caller asks for more (tests/executions.py: the first of
# a notebook's two executions may be cheaper still).
_DEFAULTS = {
    "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_DIR / 'mlruns' / 'mlflow.db'}",
    "KERAS_HOME": str(_SESSION_DIR / "keras"),
    "DLTRACK_EPOCHS": "2",
    "DLTRACK_SWEEP_TRIALS": "4",  # notebook 06: trials per run, over its 2 workers
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
(_SESSION_DIR / "mlruns").mkdir(exist_ok=True)
# A local sentiment model needs no Hub: keep huggingface_hub from trying it.
if os.environ.get("DLTRACK_SENTIMENT_MODEL"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _session_store_after_each_module():
    """Every test module starts and ends on the session store. ``mlflow.set_tracking_uri`` also
    sets ``$MLFLOW_TRACKING_URI``, so a module fixture that points MLflow at a store of its own
    would otherwise leave every later module, and the notebooks they execute, on that store."""
    import mlflow

    mlflow.set_tracking_uri(_DEFAULTS["MLFLOW_TRACKING_URI"])
    yield
    mlflow.set_tracking_uri(_DEFAULTS["MLFLOW_TRACKING_URI"])
    os.environ["MLFLOW_TRACKING_URI"] = _DEFAULTS["MLFLOW_TRACKING_URI"]


@pytest.fixture()
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store for one test; returns its URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(_DEFAULTS["MLFLOW_TRACKING_URI"])


@pytest.fixture()
def experiment(mlflow_store: str):
    """``experiment(name)`` makes ``name`` the active experiment of a fresh store, the way the
    notebooks do (artifacts beside the store); returns the experiment."""
    import mlflow

    from dltrack import tracking

    def use(name: str):
        tracking.prepare_experiment(name)
        return mlflow.set_experiment(name)

    return use


@pytest.fixture(scope="session")
def logged_cnn():
    """The course CNN (untrained, seeded) logged with ``mlflow.tensorflow.log_model`` and a
    signature, in the session store; returns (keras model, model URI)."""
    keras = pytest.importorskip("keras")
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from dltrack import tracking
    from dltrack.models.keras_cnn import build_course_cnn

    mlflow.set_tracking_uri(tracking.tracking_uri())
    tracking.prepare_experiment("tests-course-cnn")
    mlflow.set_experiment("tests-course-cnn")
    keras.utils.set_random_seed(0)
    model = build_course_cnn(lr_schedule="constant")
    example = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    with mlflow.start_run():
        info = mlflow.tensorflow.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example, verbose=0)),
        )
    return model, info.model_uri


@pytest.fixture(scope="session")
def notebook_runs(tmp_path_factory: pytest.TempPathFactory):
    """The session's notebook executions (``tests/executions.py``): each notebook twice against
    one store, in dependency order, results remembered. With ``DLTRACK_KEEP_EXECUTED`` set to a
    folder, each second execution is also written there (the first ones to ``first/`` in it), so
    ``make docs`` renders them without executing the notebooks again (CI)."""
    from dltrack.config import project_root
    from executions import NotebookRuns

    keep = os.environ.get("DLTRACK_KEEP_EXECUTED")
    return NotebookRuns(
        project_root() / "notebooks", tmp_path_factory.mktemp("executed"),
        Path(keep) if keep else None,
    )  # fmt: skip


@pytest.fixture(scope="session")
def notebooks(notebook_runs, request: pytest.FixtureRequest):
    """The session's executions, for any test or fixture: ``notebooks.second(name)`` is the executed
    copy of ``name``'s second execution (``first(name)`` the first); a failed execution skips the
    test, naming the item that reports the failure."""
    from executions import BoundRuns

    return BoundRuns(notebook_runs, request)


# -- team mode: one stack per test session ----------------------------------------------------------
@pytest.fixture(scope="session")
def team():
    """PostgreSQL and ``mlflow server`` with authentication and proxied artifacts, really
    started on free ports on 127.0.0.1, once per test session (``dltrack.team.TeamServer``)."""
    from dltrack.serving.process import free_port
    from dltrack.team import TeamServer
    from teamstack import postgres_or_skip, team_home

    postgres_or_skip()

    server = TeamServer(team_home(), port=free_port(), pg_port=free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture(scope="session")
def team_accounts(team) -> dict[str, dict[str, str]]:
    """Two learners, alice and bob: their client environments."""
    return {name: team.client_env(name) for name in ("alice", "bob") if team.add_user(name)}


@pytest.fixture(scope="session")
def team_notebook_env(team, team_accounts) -> dict[str, str]:
    """What the team-mode notebooks run with: alice's client environment and the team's Optuna
    study storage (``python -m dltrack.team.studies env``)."""
    from dltrack.sweeps import STORAGE_ENV_VAR
    from dltrack.team.studies import ensure_study_storage

    return {**team_accounts["alice"], STORAGE_ENV_VAR: ensure_study_storage(team)}


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Debian's Chromium (``make setup-browser``), or ``$DLTRACK_CHROMIUM``. Without it the
    browser tests skip, except in CI (``CI`` set), where they fail."""
    found = os.environ.get("DLTRACK_CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    reason = "no Chromium: run `make setup-browser` (or set DLTRACK_CHROMIUM)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


#: Chromium's flags for a machine with no display and no internet: no first-run or background
#: network traffic (refused here, and slow to time out).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="session")
def browser(chromium_executable):
    """Chromium driven by Playwright, launched once per test session; each
    ``browser.new_context()`` is a fresh, empty profile."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture()
def as_alice(team_notebook_env, monkeypatch: pytest.MonkeyPatch):
    """This test's MLflow client signs in to the team server as alice, the account the
    team-mode notebooks ran as; returns an ``MlflowClient``. The session store afterwards."""
    import mlflow
    from mlflow import MlflowClient

    for key, value in team_notebook_env.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(team_notebook_env["MLFLOW_TRACKING_URI"])
    yield MlflowClient()
    mlflow.set_tracking_uri(_DEFAULTS["MLFLOW_TRACKING_URI"])


# -- order and bounds ----------------------------------------------------------------------------
#: pytest-timeout's bound for a test that reads the notebooks' executions: run alone, or in a
#: shuffled order, it may have to execute them first.
NOTEBOOK_TEST_TIMEOUT = 3600


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The notebooks' executions first (their failures are reported there), the tests that add
    to what an execution left (``@pytest.mark.adds_to_executions``) after the tests that read
    it, the tests that destroy a shared server (``@pytest.mark.destroys_servers``) last,
    whatever the files' order or a shuffle; and a longer timeout for tests that read the
    executions."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("destroys_servers"):
            return 3
        if item.get_closest_marker("adds_to_executions"):
            return 2
        return 0 if item.nodeid.startswith("tests/test_executions.py::") else 1

    items.sort(key=rank)
    for item in items:
        if "notebooks" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "timeout"
        ):
            item.add_marker(pytest.mark.timeout(NOTEBOOK_TEST_TIMEOUT))
