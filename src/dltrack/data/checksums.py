"""One checksum rule for every shipped or pointed-at data file: sha256, checked on each load."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["DatasetError", "sha256_file", "verify_file"]


class DatasetError(OSError):
    """A data file is missing, unreadable or does not match a known checksum."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as 64 lowercase hex digits (read in 1 MiB blocks).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], expected: set[str] | str, how_to_fix: str) -> str:
    """Check that ``path`` exists and its sha256 is one of ``expected``; return the sha256.

    Args:
        path: the file.
        expected: one sha256, or the set of sha256 values that are accepted.
        how_to_fix: appended to the error message (how to restore or point at good files).

    Raises:
        DatasetError: the file is missing, or its sha256 is not expected. The message names the
            file, the sha256 found and ``how_to_fix``.
    """
    path = Path(path)
    accepted = {expected} if isinstance(expected, str) else set(expected)
    if not path.is_file():
        raise DatasetError(f"data file missing: {path}. {how_to_fix}")
    digest = sha256_file(path)
    if digest not in accepted:
        raise DatasetError(
            f"data file {path} is corrupted or unknown: sha256 {digest} matches no known "
            f"release. {how_to_fix}"
        )
    return digest
