"""The README and the guides in ``docs/`` hold together: every relative link and image resolves
(a file that exists, and a heading that exists for ``page.md#anchor``), each guide links back to
the README and to a lesson, the README stays short, and ``make docs``'s site renders every guide
beside the lessons with links that resolve inside the site."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from dltrack.config import project_root

ROOT = project_root()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)|<img [^>]*src=\"(?P<src>[^\"]+)\"")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    from site_builder import heading_id  # tools/site_builder.py

    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {heading_id(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _relative_links(page: Path) -> list[str]:
    found = []
    for match in LINK.finditer(_prose(page.read_text(encoding="utf-8"))):
        target = match["target"] or match["src"]
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # not http:, mailto:...
            found.append(target)
    return found


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no {file}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_is_short_and_links_every_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    guides = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    linked = {Path(t.partition("#")[0]).name for t in _relative_links(ROOT / "README.md")}
    assert guides <= linked, f"guides the README does not link: {sorted(guides - linked)}"
    for heading in ("## Quick start", "## Notebooks", "## Tests", "## Layout"):
        assert heading in readme


@pytest.mark.parametrize("page", PAGES[1:], ids=[p.name for p in PAGES[1:]])
def test_each_guide_links_back_to_the_readme_and_a_lesson(page):
    links = _relative_links(page)
    assert "../README.md" in links
    assert any(t.startswith("../notebooks/") and t.endswith(".ipynb") for t in links), links


@pytest.mark.timeout(300)
def test_the_site_renders_every_guide_with_links_that_resolve(tmp_path):
    """``build_site`` on stand-in executed notebooks (one per lesson, no outputs): the index
    links every lesson and guide, and every relative link or image of every page resolves in
    the site; a guide's link to a lesson goes to the lesson's page."""
    from site_builder import build_site  # tools/site_builder.py

    executed = tmp_path / "executed"
    executed.mkdir()
    for lesson in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_markdown_cell(f"# {lesson.stem}")]
        nbformat.write(notebook, executed / lesson.name)
    out = tmp_path / "site"
    lessons = build_site(executed, out)
    guides = sorted(p.stem for p in (ROOT / "docs").glob("*.md") if p.name != "README.md")
    index = (out / "index.html").read_text(encoding="utf-8")
    for stem in [p.stem for p in lessons] + guides:
        assert f'href="{stem}.html"' in index, stem
    broken = []
    for html_page in out.glob("*.html"):
        text = html_page.read_text(encoding="utf-8")
        for target in re.findall(r'(?:href|src)="([^"]*)"', text):
            path, _, anchor = target.partition("#")
            if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path):
                continue
            resolved = out / path
            if not resolved.is_file():
                broken.append(f"{html_page.name}: {target}")
            elif anchor and f'id="{anchor}"' not in resolved.read_text(encoding="utf-8"):
                broken.append(f"{html_page.name}: {target} (no #{anchor})")
    assert not broken, broken
    serving = (out / "serving.html").read_text(encoding="utf-8")
    assert 'href="04_serving_at_speed.html"' in serving and 'href="index.html"' in serving
    assert "<table>" in serving  # the measurements stay tables
    assert (out / "ui-training-runs.png").is_file()  # the store guide's screenshot, copied
