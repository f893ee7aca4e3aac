"""The notebooks' executions of one test session: each notebook twice against one store, in
dependency order, and no more (``make test``).

:data:`PLAN` says which store each notebook runs on and what it needs first. The session-scoped
``notebook_runs`` fixture (``tests/conftest.py``) holds a :class:`NotebookRuns`; the test items
of ``tests/test_executions.py``, one per execution, ask it to execute, so a failure is reported
once, against its notebook and round, with the failing cell. Every other test reads the
executions (the executed copies and the store they wrote) through the ``notebooks`` fixture and
never executes a notebook itself: asked for an execution that has not happened yet (a test run
alone, or in a shuffled order), the fixture executes it and what it needs, in the same order,
exactly once; asked for one that failed, the test is skipped with the name of the failed item.

Rounds: the first execution may use cheaper parameters (:attr:`Notebook.first`), the second
keeps the test session's defaults. Tests read counts from the runs' params, not from this file.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOCAL, TEAM = "local", "team"
ROUNDS = (1, 2)
ROUND_NAMES = {1: "first", 2: "second"}

#: Seconds one cell may run before its execution fails (nbclient's timeout).
CELL_TIMEOUT = int(os.environ.get("DLTRACK_CELL_TIMEOUT", "1200"))


@dataclass(frozen=True)
class Notebook:
    """One notebook of the plan: its file, the store it runs on, the notebooks whose registered
    models it needs in that store, and the environment of its cheaper first execution."""

    name: str
    store: str
    needs: tuple[str, ...] = ()
    first: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The notebook's number: ``01``, ``01b``, ``02``..."""
        return self.name.split("_", 1)[0]


TF, AZURE, LIGHTNING, HF, SERVING, DDP, SWEEPS = (
    "01_tensorflow_fashion_mnist.ipynb",
    "01b_azure_ml_deployment.ipynb",
    "02_pytorch_lightning_fashion_mnist.ipynb",
    "03_transformers_sentiment.ipynb",
    "04_serving_at_speed.ipynb",
    "05_training_beyond_one_machine.ipynb",
    "06_hyperparameter_sweeps.ipynb",
)

#: The plan: the learner's default path (SQLite, ``make ui``) for the course's notebooks and the
#: ones that serve their champions; team mode (PostgreSQL, authentication, proxied artifacts)
#: for the scale-out notebooks, whose several processes log to one server.
PLAN: tuple[Notebook, ...] = (
    Notebook(TF, LOCAL),
    Notebook(AZURE, LOCAL, needs=(TF,)),
    Notebook(LIGHTNING, LOCAL),
    Notebook(HF, LOCAL),
    Notebook(SERVING, LOCAL, needs=(TF, LIGHTNING),
             first={"DLTRACK_N_SMALL_REQUESTS": "10", "DLTRACK_N_LARGE_REQUESTS": "3"}),
    Notebook(DDP, TEAM, first={"DLTRACK_EPOCHS": "1"}),
    Notebook(SWEEPS, TEAM, first={"DLTRACK_SWEEP_TRIALS": "2"}),
)  # fmt: skip
BY_NAME = {notebook.name: notebook for notebook in PLAN}


def item_id(name: str, round_: int) -> str:
    """The id of the test item that reports this execution."""
    return f"tests/test_executions.py::test_notebook_executes[{BY_NAME[name].key}-{ROUND_NAMES[round_]}]"


@dataclass
class Execution:
    """What one execution left: the executed copy (outputs included, also when it failed), the
    environment it ran with (its overrides only), and why it failed or was not run."""

    notebook: Notebook
    round: int
    overrides: dict[str, str]
    executed: Path | None = None
    failure: str | None = None  # the failing cell and the end of its traceback
    blocked: str | None = None  # not run: what it needed failed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and self.blocked is None

    def describe(self) -> str:
        return f"notebook {self.notebook.name}, {ROUND_NAMES[self.round]} execution"


class NotebookRuns:
    """The session's executions, each made once, in dependency order, results remembered.

    ``store_env(store)`` returns the environment overrides of a store (``{}`` for the session's
    SQLite store; the tracking server's URI and an account for team mode); it is called only
    when a notebook of that store is about to run.
    """

    def __init__(self, notebooks_dir: Path, folder: Path, keep: Path | None) -> None:
        self.notebooks_dir = notebooks_dir
        self.folder = folder
        self.keep = keep
        self.done: dict[tuple[str, int], Execution] = {}
        # the session's environment, as conftest set it: a test that changes os.environ (an
        # account, another store) must not leak into an execution it happens to trigger
        self.base_env = dict(os.environ)

    def ensure(self, name: str, round_: int, store_env: Callable[[str], dict[str, str]]) -> Execution:
        """Execute ``name``'s round ``round_`` unless it was: first what it needs (its earlier
        round, both rounds of each notebook it needs), then itself. Returns the execution."""
        key = (name, round_)
        if key in self.done:
            return self.done[key]
        notebook = BY_NAME[name]
        before = [(name, r) for r in ROUNDS if r < round_]
        before += [(needed, r) for needed in notebook.needs for r in ROUNDS]
        failed = [self.ensure(n, r, store_env) for n, r in before]
        failed = [e for e in failed if not e.ok]
        overrides = dict(notebook.first) if round_ == 1 else {}
        execution = Execution(notebook, round_, overrides)
        if name == HF and not _sentiment_model()[0]:
            execution.blocked = _sentiment_model()[1]
        elif failed:
            execution.blocked = (
                f"not executed: the {failed[0].describe()} did not succeed "
                f"({item_id(failed[0].notebook.name, failed[0].round)})"
            )
        else:
            try:
                overrides.update(store_env(notebook.store))
            except Exception as err:  # noqa: BLE001 - reported by the execution's test item
                execution.failure = f"the {notebook.store} store could not be set up: {err!r}"
            else:
                self._execute(execution)
        self.done[key] = execution
        return execution

    def _execute(self, execution: Execution) -> None:
        from notebooks import run_notebook  # tools/notebooks.py

        target = self.folder / ROUND_NAMES[execution.round]
        env = {**self.base_env, **execution.overrides}
        started = time.perf_counter()
        try:
            execution.executed = run_notebook(
                self.notebooks_dir / execution.notebook.name, target, CELL_TIMEOUT, env=env
            )
        except Exception as err:  # noqa: BLE001 - remembered, reported once by its test item
            execution.failure = _cell_failure(err)
            execution.executed = target / execution.notebook.name
        execution.seconds = time.perf_counter() - started
        if self.keep is not None and execution.executed and execution.executed.exists():
            # the second round is what `make docs` renders; the first is kept beside it
            folder = self.keep if execution.round == 2 else self.keep / "first"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(execution.executed, folder / execution.notebook.name)


def _sentiment_model() -> tuple[bool, str]:
    """Whether notebook 03's model loads here (offline, no local model: it does not)."""
    from dltrack.models import sentiment

    return sentiment.model_availability()


def _cell_failure(err: BaseException) -> str:
    """The failing cell and the end of the traceback nbclient reports, in at most 4,000
    characters; any other error with its traceback."""
    text = str(err) if err.__class__.__name__ == "CellExecutionError" else "".join(
        traceback.format_exception(err)
    )
    return text if len(text) <= 4000 else text[:1500] + "\n[...]\n" + text[-2500:]


class BoundRuns:
    """The session's executions, for the tests: ``first(name)`` and ``second(name)`` return the
    executed copy, executing what is missing; a failed or blocked execution skips the test with
    the item that reports it. ``request`` is the session's: the team stack is started (the
    ``team_notebook_env`` fixture) only when a team-mode notebook is about to run."""

    def __init__(self, runs: NotebookRuns, request: pytest.FixtureRequest) -> None:
        self.runs = runs
        self.request = request

    def store_env(self, store: str) -> dict[str, str]:
        if store == LOCAL:
            return {}
        return dict(self.request.getfixturevalue("team_notebook_env"))

    def execution(self, name: str, round_: int = 2) -> Execution:
        execution = self.runs.ensure(name, round_, self.store_env)
        if execution.blocked:
            pytest.skip(f"{execution.describe()}: {execution.blocked}")
        if execution.failure:
            pytest.skip(f"the {execution.describe()} failed: see {item_id(name, round_)}")
        return execution

    def first(self, name: str) -> Path:
        return self.execution(name, 1).executed

    def second(self, name: str) -> Path:
        return self.execution(name, 2).executed
