"""Where the benchmarks write their figures: benchmarks/results/<name>.json (git-ignored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, results: Any) -> Path:
    """Write ``results`` as indented JSON to ``benchmarks/results/<name>.json``, print the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written {path}")
    return path
