"""README.md and docs/ say what the code does, and every link in them leads somewhere.

* The generated files (the manual pages in ``man/``, ``docs/reference/commands.md``,
  ``configuration.md`` and ``metrics.md``, the layout table of ``docs/design.md``) are
  what :mod:`ldapdkim.cli.manpages` writes from the code now.  Regenerate them, at the top
  of the source tree, with ``python -m ldapdkim.cli.manpages``.
* Every relative link ``[text](path#anchor)`` in README.md and ``docs/**/*.md`` names a
  file or directory that exists, and its anchor a heading of the target page, by
  GitHub's rules for heading anchors.
* README stays a front door: at most 200 lines, its Quick start as
  ``tests/fresh-machine.sh`` reads it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ldapdkim.cli import manpages

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
REGENERATE = "run: python -m ldapdkim.cli.manpages"

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`+[^`]*`+")


@pytest.mark.parametrize("name", sorted(manpages.render_tree(ROOT)))
def test_the_generated_file_is_what_the_code_generates(name: str) -> None:
    assert (ROOT / name).read_text() == manpages.render_tree(ROOT)[name], REGENERATE


def _prose(path: Path) -> list[str]:
    """The lines of a page outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered, lower-cased, punctuation but
    ``-`` and ``_`` dropped, each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a page; a repeated heading gets ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The targets of the links in a page's prose (code spans and blocks left out)."""
    return [target for line in _prose(path) for target in LINK.findall(CODE_SPAN.sub("", line))]


def test_slugs_follow_github() -> None:
    assert slug("Moving a site to sealed keys, with no unsigned mail") == (
        "moving-a-site-to-sealed-keys-with-no-unsigned-mail"
    )
    assert slug("389 Directory Server") == "389-directory-server"
    assert slug("`ldapdkim run`: the milter") == "ldapdkim-run-the-milter"
    assert slug("keys new-kek") == "keys-new-kek"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_leads_somewhere(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(ROOT)}")
        elif anchor and destination.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    assert broken == []


def test_every_page_under_docs_is_linked_from_readme_or_another_page() -> None:
    linked = {
        (page.parent / target.partition("#")[0]).resolve()
        for page in PAGES
        for target in links(page)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and target.partition("#")[0]
    }
    orphans = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert orphans == []


def test_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, "README.md is the front door: move the detail into docs/"
    section = lines[lines.index("## Quick start") + 1 :]
    section = section[: next(i for i, line in enumerate(section) if line.startswith("## "))]
    blocks = "\n".join(section).split("```sh\n")[1:3]
    assert len(blocks) == 2, "tests/fresh-machine.sh runs the first two sh blocks"
    assert "ldapdkim run -c conf/quickstart.conf" in blocks[0]
    assert "pytest" in blocks[1]
    assert "`.venv/bin/ldapdkim sign " in "\n".join(section)
