"""Under ``CI``, a skipped test fails the run: a skip there means something CI must test was
not tested (a browser, PostgreSQL, a model, a package missing). The skips and their reasons are
listed at the end, and the exit status is 1. Outside CI a skip stays a skip (``-ra`` lists it).

Loaded by ``tests/conftest.py``; ``pytest -p ci_no_skips`` loads it elsewhere.
"""

from __future__ import annotations

import os

import pytest


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: why")
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when ``CI`` is set and any test or module was skipped."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    reporter.write_sep("=", f"CI: {len(skipped)} skipped, which fails the run", red=True)
    for report in skipped:
        reporter.write_line(f"SKIPPED IN CI {report.nodeid}: {_skip_reason(report)}")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
