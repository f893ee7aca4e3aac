"""Render executed notebooks and the guides in ``docs/`` to a static HTML site with an index
(``make docs``).

    python tools/site_builder.py [--executed build/executed] [--docs docs] [--out build/site]

Each executed notebook in ``--executed`` (``make demo`` writes them to ``build/executed/``)
becomes ``<out>/<name>.html`` through nbconvert's HTML exporter, outputs and figures included
(images are embedded, so a page is one file). Each markdown guide in ``--docs`` becomes
``<out>/<name>.html`` through mistune, the markdown renderer nbconvert itself uses; its links
are rewritten for the site: a lesson (``../notebooks/<name>.ipynb``) to its rendered page, a
guide (``<name>.md``) to its page, the README and the guides' index to the site's index; the
images it shows are copied beside it. ``<out>/index.html`` lists the lessons and the guides with
their titles. Nothing is executed: an instructor or a reader sees every output without running
anything. This is a project tool, not part of the installed ``dltrack`` package.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
from pathlib import Path

from dltrack.config import project_root

__all__ = ["build_site", "heading_id", "lesson_title", "render_guides"]

#: A link or image target in rendered HTML.
_TARGET = re.compile(r'(?P<attr>href|src)="(?P<target>[^"#]*)(?P<fragment>#[^"]*)?"')


def lesson_title(notebook) -> str:
    """The first markdown heading of ``notebook`` (an ``nbformat`` notebook), without the ``#``
    marks; the notebook's file name where it has none."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return notebook.metadata.get("name", "notebook")


def heading_id(text: str) -> str:
    """The anchor GitHub gives a markdown heading, so ``page.md#anchor`` links work on GitHub and
    in the site alike: lower case, punctuation dropped, spaces to hyphens
    (``"Serving at speed (notebook 04)"`` -> ``"serving-at-speed-notebook-04"``)."""
    text = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _site_link(target: str, source: Path, lessons: set[str]) -> str:
    """Where a guide's link or image points in the site (``target`` without its fragment)."""
    if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):  # in-page, or http:, mailto:...
        return target
    path = Path(target)
    if path.suffix == ".ipynb":
        return f"{path.stem}.html" if path.stem in lessons else "index.html"
    if path.name == "README.md":  # the project's README or the guides' index
        return "index.html"
    if path.suffix == ".md" and (source.parent / path).resolve().parent == source.parent:
        return f"{path.stem}.html"
    return path.name  # an image beside the guide: copied into the site


def render_guides(docs: Path, out: Path, lessons: set[str]) -> list[tuple[Path, str]]:
    """Write ``<out>/<stem>.html`` for every guide ``docs/*.md`` (not ``docs/README.md``, whose
    list the index replaces) and copy the images they show; return ``(page, title)`` pairs.

    Args:
        docs: the folder of markdown guides.
        out: the site folder.
        lessons: stems of the lessons rendered into ``out``; a link to another lesson goes to
            the index.

    Raises:
        FileNotFoundError: an image a guide shows does not exist.
    """
    import mistune

    class Renderer(mistune.HTMLRenderer):
        def heading(self, text: str, level: int, **attrs) -> str:
            return f'<h{level} id="{heading_id(text)}">{text}</h{level}>\n'

    markdown = mistune.create_markdown(renderer=Renderer(escape=False), plugins=["table"])
    guides = []
    for path in sorted(docs.glob("*.md")):
        if path.name == "README.md":
            continue
        text = path.read_text(encoding="utf-8")
        headings = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
        title = headings[0] if headings else path.stem

        def rewrite(match: re.Match, source: Path = path) -> str:
            target = _site_link(match["target"], source, lessons)
            if match["attr"] == "src" and target and target == Path(match["target"]).name:
                image = source.parent / match["target"]
                if not image.is_file():
                    raise FileNotFoundError(f"{source} shows {match['target']}, which is missing")
                shutil.copyfile(image, out / target)
            return f'{match["attr"]}="{target}{match["fragment"] or ""}"'

        body = _TARGET.sub(rewrite, markdown(text))
        page = out / f"{path.stem}.html"
        page.write_text(
            '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title></head>\n<body>\n{body}</body>\n</html>\n",
            encoding="utf-8",
        )
        guides.append((page, title))
    return guides


def build_site(executed: Path, out: Path, docs: Path | None = None) -> list[Path]:
    """Write ``<out>/<stem>.html`` for every ``*.ipynb`` in ``executed``, the guides of ``docs``
    (default: the project's ``docs/``; see :func:`render_guides`) and ``<out>/index.html``
    linking the lessons and the guides in name order; return the lesson pages.

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
    guides = render_guides(docs or project_root() / "docs", out, {p.stem for p in pages})
    guide_items = [
        f'<li><a href="{html.escape(page.name)}">{html.escape(title)}</a></li>'
        for page, title in guides
    ]
    index = (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        "<title>dltrack lessons</title></head>\n<body>\n<h1>dltrack lessons</h1>\n"
        "<p>Each notebook as <code>make demo</code> executed it, with every output.</p>\n"
        f'<ul id="lessons">\n{chr(10).join(items)}\n</ul>\n'
        '<h2 id="guides">Guides</h2>\n<p>The deep material beside the lessons.</p>\n'
        f"<ul>\n{chr(10).join(guide_items)}\n</ul>\n</body>\n</html>\n"
    )
    (out / "index.html").write_text(index, encoding="utf-8")
    return pages


def main(argv: list[str] | None = None) -> int:
    root = project_root()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, default=root / "build" / "executed")
    parser.add_argument("--docs", type=Path, default=root / "docs")
    parser.add_argument("--out", type=Path, default=root / "build" / "site")
    args = parser.parse_args(argv)
    try:
        pages = build_site(args.executed, args.out, args.docs)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{len(pages)} lessons -> {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
