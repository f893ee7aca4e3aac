"""Where the benchmarks write their figures: benchmarks/results/<name>.json (git-ignored)."""

from __future__ import annotations

import argparse
import json
import os
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


def parser_with_data(description: str | None) -> argparse.ArgumentParser:
    """The benchmarks' argument parser with ``--data``: the full Fashion-MNIST folder
    (``$DLTRACK_FASHION_MNIST_DIR``, else ``../shared/data/fashion-mnist``)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("DLTRACK_FASHION_MNIST_DIR", "../shared/data/fashion-mnist"),
    )
    return parser
