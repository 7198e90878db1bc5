"""The README's configuration reference is generated from the keyword table and kept in step."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ldapdkim.config.settings import keyword_reference

README = Path(__file__).resolve().parents[2] / "README.md"
START = re.compile(r"<!-- keywords:start[^>]*-->\n")
END = "<!-- keywords:end -->"


def render_table() -> str:
    rows = ["| keyword | default | meaning |", "| --- | --- | --- |"]
    for keyword, default, doc in keyword_reference():
        cell = doc.replace("|", "\\|")
        rows.append(f"| `{keyword}` | {default.replace('|', chr(92) + '|')} | {cell} |")
    return "\n".join(rows) + "\n"


def test_readme_lists_every_keyword_as_the_code_declares_it() -> None:
    text = README.read_text()
    match = START.search(text)
    assert match, "README.md lacks the keywords:start marker"
    table = text[match.end() : text.index(END)]
    assert table == render_table(), "run: python tests/unit/test_readme.py --write"


if __name__ == "__main__" and "--write" in sys.argv:
    text = README.read_text()
    match = START.search(text)
    assert match
    README.write_text(text[: match.end()] + render_table() + text[text.index(END) :])
