"""Render executed notebooks to a static HTML site with an index (``make docs``).

    python tools/site_builder.py [--executed build/executed] [--out build/site]

Each executed notebook in ``--executed`` (``make demo`` writes them to ``build/executed/``)
becomes ``<out>/<name>.html`` through nbconvert's HTML exporter, outputs and figures included
(images are embedded, so a page is one file); ``<out>/index.html`` lists the lessons with their
titles. Nothing is executed: an instructor or a reader sees every output without running
anything. This is a project tool, not part of the installed ``dltrack`` package.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

from dltrack.config import project_root

__all__ = ["build_site", "lesson_title"]


def lesson_title(notebook) -> str:
    """The first markdown heading of ``notebook`` (an ``nbformat`` notebook), without the ``#``
    marks; the notebook's file name where it has none."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return notebook.metadata.get("name", "notebook")


def build_site(executed: Path, out: Path) -> list[Path]:
    """Write ``<out>/<stem>.html`` for every ``*.ipynb`` in ``executed`` and ``<out>/index.html``
    linking them in name order; return the lesson pages.

    Raises:
        FileNotFoundError: ``executed`` holds no notebook; the message says how to make them.
    """
    import nbformat
    from nbconvert import HTMLExporter

    notebooks = sorted(executed.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(
            f"No executed notebooks in {executed}: run `make demo` first (it writes them there)."
        )
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    pages, items = [], []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        title = lesson_title(notebook)
        body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title}})
        page = out / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
        items.append(f'<li><a href="{html.escape(page.name)}">{html.escape(title)}</a></li>')
    index = (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        "<title>dltrack lessons</title></head>\n<body>\n<h1>dltrack lessons</h1>\n"
        "<p>Each notebook as <code>make demo</code> executed it, with every output.</p>\n"
        f"<ul>\n{chr(10).join(items)}\n</ul>\n</body>\n</html>\n"
    )
    (out / "index.html").write_text(index, encoding="utf-8")
    return pages


def main(argv: list[str] | None = None) -> int:
    root = project_root()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, default=root / "build" / "executed")
    parser.add_argument("--out", type=Path, default=root / "build" / "site")
    args = parser.parse_args(argv)
    try:
        pages = build_site(args.executed, args.out)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{len(pages)} lessons -> {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
