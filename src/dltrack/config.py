"""Project paths and notebook parameters.

Every path the notebooks use is resolved here, from the package, never from the current
directory: Jupyter and the tests run a notebook with ``notebooks/`` as working directory, the
Makefile runs from the project root, and both must see the same data and the same MLflow store.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", str, int, float, bool)

__all__ = ["PROFILES", "cache_dir", "data_dir", "env_param", "project_root"]

#: The values of ``DLTRACK_PROFILE``: "default", the better settings, and "course", every value
#: as the course recorded it. The notebooks' parameters cells pick each value by profile.
PROFILES = ("default", "course")


def _is_project_root(path: Path) -> bool:
    pyproject = path / "pyproject.toml"
    return pyproject.is_file() and 'name = "dltrack"' in pyproject.read_text(encoding="utf-8")


def project_root() -> Path:
    """Return the dltrack project folder (the one holding ``pyproject.toml``).

    Order: the ``DLTRACK_HOME`` environment variable; the folder above ``src/dltrack`` (the
    editable install that ``make setup`` makes); then the current directory and its parents.

    Raises:
        FileNotFoundError: when none of these is a dltrack checkout; set ``DLTRACK_HOME``.
    """
    env = os.environ.get("DLTRACK_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve()
    candidates = [*here.parents, Path.cwd().resolve(), *Path.cwd().resolve().parents]
    for candidate in candidates:
        if _is_project_root(candidate):
            return candidate
    raise FileNotFoundError(
        "Could not find the dltrack project folder (a pyproject.toml naming dltrack) above "
        f"{here} or the current directory. Set DLTRACK_HOME to the folder you cloned."
    )


def data_dir() -> Path:
    """Return ``<project>/data``, where the shipped data sets live."""
    return project_root() / "data"


def cache_dir() -> Path:
    """Return ``<project>/data/.cache`` (git-ignored), created if missing."""
    path = data_dir() / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_param(name: str, default: T, choices: Collection[T] | None = None) -> T:
    """Return a notebook parameter: the environment variable ``name`` if set, else ``default``.

    The value is converted to the type of ``default`` so CI can shrink a run without editing the
    notebook, e.g. ``DLTRACK_EPOCHS=2``. Booleans accept 1/0, true/false, yes/no, on/off.
    With ``choices``, the value (from the environment or ``default``) must be one of them.

    Raises:
        ValueError: when the variable is set but cannot be read as that type, or the value is
            not one of ``choices``; the message names the variable, the value and what was
            expected.
    """
    value = _env_value(name, default)
    if choices is not None and value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}.")
    return value


def _env_value(name: str, default: T) -> T:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True  # type: ignore[return-value]
            if lowered in {"0", "false", "no", "off"}:
                return False  # type: ignore[return-value]
            raise ValueError(raw)
        return type(default)(raw)  # type: ignore[return-value]
    except ValueError:
        raise ValueError(
            f"Environment variable {name}={raw!r} is not a valid {type(default).__name__} "
            f"(default {default!r})."
        ) from None
