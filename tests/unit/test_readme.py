"""The documentation's generated parts stay in step: the keyword reference (from the keyword
table) and the layout of the package (from the tree and each module's docstring), each between
its markers in README.md or a page under docs/.

Regenerate both with ``python tests/unit/test_readme.py --write``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import ldapdkim
from ldapdkim.config.settings import keyword_reference

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
START = re.compile(r"<!-- keywords:start[^>]*-->\n")
END = "<!-- keywords:end -->"
LAYOUT_START = re.compile(r"<!-- layout:start[^>]*-->\n")
LAYOUT_END = "<!-- layout:end -->"
PACKAGE = Path(ldapdkim.__file__).parent


def render_table() -> str:
    rows = ["| keyword | default | meaning |", "| --- | --- | --- |"]
    for keyword, default, doc in keyword_reference():
        cell = doc.replace("|", "\\|")
        rows.append(f"| `{keyword}` | {default.replace('|', chr(92) + '|')} | {cell} |")
    return "\n".join(rows) + "\n"


def _summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n", 1)[0].split()).replace("|", "\\|")


def render_layout() -> str:
    """One row per package and module of ``ldapdkim/``, packages before their modules."""
    rows = ["| path | what |", "| --- | --- |"]
    for path in sorted(PACKAGE.rglob("*.py"), key=lambda p: p.relative_to(PACKAGE).parts):
        relative = path.relative_to(PACKAGE.parent)
        if path.name == "__init__.py":
            shown = f"{relative.parent}/"
        else:
            shown = str(relative)
        rows.append(f"| `{shown}` | {_summary(path)} |")
    return "\n".join(rows) + "\n"


def _page(start: re.Pattern[str]) -> Path:
    """The one page that holds the ``start`` marker."""
    holders = [page for page in PAGES if start.search(page.read_text())]
    assert len(holders) == 1, f"{start.pattern} is in {len(holders)} pages, not 1"
    return holders[0]


def _between(text: str, start: re.Pattern[str], end: str) -> tuple[int, int]:
    match = start.search(text)
    assert match, f"no {start.pattern} marker"
    return match.end(), text.index(end)


def test_readme_lists_every_keyword_as_the_code_declares_it() -> None:
    text = _page(START).read_text()
    begin, end = _between(text, START, END)
    assert text[begin:end] == render_table(), "run: python tests/unit/test_readme.py --write"


def test_readme_layout_is_the_tree_as_its_docstrings_describe_it() -> None:
    text = _page(LAYOUT_START).read_text()
    begin, end = _between(text, LAYOUT_START, LAYOUT_END)
    assert text[begin:end] == render_layout(), "run: python tests/unit/test_readme.py --write"


if __name__ == "__main__" and "--write" in sys.argv:
    for start, end, render in [
        (START, END, render_table),
        (LAYOUT_START, LAYOUT_END, render_layout),
    ]:
        page = _page(start)
        text = page.read_text()
        begin, stop = _between(text, start, end)
        page.write_text(text[:begin] + render() + text[stop:])
