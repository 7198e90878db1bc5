"""The manual pages say what the code does: generated from the parsers and the keyword
table, and clean for groff.  ``tests/unit/test_docs.py`` keeps ``man/`` equal to what
:mod:`ldapdkim.cli.manpages` generates; regenerate with ``python -m ldapdkim.cli.manpages``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ldapdkim.cli import manpages
from ldapdkim.cli.main import COMMANDS, build_parser
from ldapdkim.config.keywords import keyword_reference, unsupported_keywords

MAN = Path(__file__).resolve().parents[2] / "man"


def test_every_subcommand_and_option_is_in_ldapdkim_8() -> None:
    page = manpages.ldapdkim_8()
    parser = build_parser()
    commands = manpages._commands(parser)
    assert len(commands) == len(COMMANDS)
    for name, _, sub in commands:
        assert f'.SS "{manpages.escape(name)}"' in page
        for action in sub._actions:
            for flag in action.option_strings:
                assert rf"\fB{manpages.escape(flag)}\fR" in page, (name, flag)


def test_every_keyword_and_every_refused_opendkim_keyword_is_in_ldapdkim_conf_5() -> None:
    page = manpages.ldapdkim_conf_5()
    for name, default, doc in keyword_reference():
        assert rf"\fB{manpages.escape(name)}\fR \fR(default: {manpages.escape(default)})" in page
        assert manpages.escape(doc) in page
    for name, _ in unsupported_keywords():
        assert ".TP\n" + rf"\fB{name}\fR" in page


@pytest.mark.parametrize("name", manpages.PAGES)
def test_groff_renders_the_page_without_a_warning(name: str) -> None:
    groff = shutil.which("groff")
    assert groff is not None, "groff is missing: tests/setup.sh installs groff-base"
    run = subprocess.run(
        [groff, "-man", "-ww", "-z", str(MAN / name)], capture_output=True, text=True, check=False
    )
    assert (run.returncode, run.stderr) == (0, "")


def test_roff_escaping_keeps_text_literal() -> None:
    assert manpages.escape("a-b\\c") == r"a\-b\ec"
    assert manpages.escape(".starts a request\n'so does this") == (
        "\\&.starts a request\n\\&'so does this"
    )
