"""Under ``CI`` a skipped test fails the run, with its reason printed (tests/ci_no_skips.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SKIPPING = """
import pytest

def test_passes():
    assert True

def test_needs_a_missing_package():
    pytest.importorskip("a_package_that_is_not_installed")
"""


MODULE_SKIP = """
import pytest

keras = pytest.importorskip("a_framework_that_is_not_installed")

def test_never_collected():
    assert False
"""


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent),
                                                 environment.get("PYTHONPATH", "")])  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "ci_no_skips", "-p", "no:cacheprovider",
         "-o", "addopts=", "-q", str(tmp_path)],
        cwd=tmp_path, env=environment | env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def test_a_skip_fails_the_run_under_ci_with_its_reason(tmp_path):
    out = _pytest(tmp_path, CI="true")
    assert out.returncode == 1, out.stdout
    assert "SKIPPED IN CI test_skipping.py::test_needs_a_missing_package" in out.stdout
    assert "a_package_that_is_not_installed" in out.stdout
    assert "SKIPPED IN CI test_module_skip.py" in out.stdout  # a module skipped at import
    assert "a_framework_that_is_not_installed" in out.stdout


def test_a_skip_is_only_a_skip_outside_ci(tmp_path):
    out = _pytest(tmp_path)
    assert out.returncode == 0, out.stdout
    assert "1 passed, 2 skipped" in out.stdout and "SKIPPED IN CI" not in out.stdout
