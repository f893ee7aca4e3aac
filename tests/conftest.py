"""Test session set-up: a throw-away MLflow store and Keras cache, small notebook parameters.

Set before any test module imports Keras or MLflow, and inherited by the notebook kernels that
nbmake and ``tests/test_notebooks.py`` start, so ``make test`` never touches ``mlruns/`` or
``~/.keras``.
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

# Small, fast notebook runs unless the caller asks for more.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip notebook 03 under nbmake where no sentiment model can be loaded (offline, no local
    model): the skip reason says how to point at one."""
    from dltrack.models import sentiment

    for item in items:
        if item.path.suffix == ".ipynb" and item.path.name.startswith("03_"):
            ok, why = sentiment.model_availability()
            if not ok:
                item.add_marker(pytest.mark.skip(reason=why))


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
def execute_notebook(tmp_path_factory: pytest.TempPathFactory):
    """``execute_notebook(name)`` runs ``notebooks/<name>`` once per test session, in its own
    kernel and in ``notebooks/`` as Jupyter does, against the session store; returns the executed
    copy (outputs included). Later calls return the same copy. With ``DLTRACK_KEEP_EXECUTED``
    set to a folder, each executed copy is also written there, so ``make docs`` can render them
    without executing the notebooks again (CI)."""
    from dltrack.config import project_root
    from notebooks import run_notebook  # tools/notebooks.py

    executed: dict[str, Path] = {}
    keep = os.environ.get("DLTRACK_KEEP_EXECUTED")

    def execute(name: str) -> Path:
        if name not in executed:
            folder = tmp_path_factory.mktemp("executed")
            executed[name] = run_notebook(project_root() / "notebooks" / name, folder)
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(executed[name], Path(keep) / name)
        return executed[name]

    return execute


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


@pytest.fixture(scope="module")
def browser(chromium_executable):
    """Chromium driven by Playwright; each ``browser.new_context()`` is a fresh, empty profile."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
