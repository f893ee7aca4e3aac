"""Every notebook, executed twice against one store, each execution a test item of its own
(``tests/executions.py`` holds the plan: which store, what each notebook needs first).

A failing execution is reported here, once, with its notebook, round and failing cell; the
tests that read it are skipped with a pointer to this item, and so are the executions that
needed it. The items run first in the session (``tests/conftest.py`` orders them).
"""

from __future__ import annotations

import pytest

from executions import PLAN, ROUND_NAMES, ROUNDS

pytestmark = pytest.mark.notebook

EXECUTIONS = [(notebook, round_) for notebook in PLAN for round_ in ROUNDS]


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("notebook", "round_"), EXECUTIONS,
    ids=[f"{notebook.key}-{ROUND_NAMES[round_]}" for notebook, round_ in EXECUTIONS],
)  # fmt: skip
def test_notebook_executes(notebook, round_, notebook_runs, notebooks):
    execution = notebook_runs.ensure(notebook.name, round_, notebooks.store_env)
    if execution.blocked:
        pytest.skip(f"{execution.describe()}: {execution.blocked}")
    if execution.failure:
        pytest.fail(
            f"{execution.describe()} ({notebook.store} store) failed after "
            f"{execution.seconds:.0f} s; the executed copy, outputs included, is "
            f"{execution.executed}\n{execution.failure}",
            pytrace=False,
        )
    assert execution.executed.exists()
